"""Typed recipe sections of the speech tasks (task ``ctc`` and the tasks built on its data): where the speech
manifests live and how audio is featurized and augmented, and the CTC/hybrid search settings.

Parsed like every section by ``transduce.config.from_dict``; the task kinds name them (``tasks/speech.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from transduce.config import ManifestDataConfig
from transduce.data.features import FbankConfig


@dataclass(kw_only=True)
class SpeechDataConfig(ManifestDataConfig):
    """Where the speech manifests live, how transcripts are tokenized and audio is featurized
    and augmented (task: ctc)."""

    sample_rate: int = 16000
    """Model sample rate; audio is resampled to it."""
    num_mel_bins: int = 80
    """Log-mel filterbank channels."""
    max_duration: float = 30.0
    """Drop training utterances longer than this (seconds)."""
    cmvn_utterances: int = 2000
    """Training utterances used to estimate global mean/variance normalization."""
    speed_factors: tuple[float, ...] = ()
    """Speed perturbation factors drawn uniformly per utterance (empty = off), e.g. [0.9, 1.0, 1.1]."""
    noise_prob: float = 0.0
    """Probability of adding white noise to an utterance."""
    snr_range: tuple[float, float] = (10.0, 30.0)
    """SNR range (dB) of the added noise."""
    vtlp_warp: float = 0.0
    """Vocal tract length perturbation: filterbanks warped by a factor uniform in [1 - w, 1 + w] (0 = off)."""
    freq_masks: int = 2
    """SpecAugment frequency masks."""
    freq_width: int = 27
    """Widest frequency mask (bins)."""
    time_masks: int = 2
    """SpecAugment time masks."""
    time_width: int = 40
    """Widest time mask (frames); see also time_ratio."""
    time_ratio: float = 0.05
    """Widest time mask as a fraction of the utterance's frames (the smaller cap wins)."""
    time_warp: int = 0
    """SpecAugment time warp (frames; 0 = off)."""


@dataclass(kw_only=True)
class CTCDecodeConfig:
    """CTC search settings used by transcribe/evaluate (overridable on the command line)."""

    mode: str = "ctc"
    """ctc (greedy when beam is 1, else prefix beam), attention (decoder beam search), joint (attention
    beam search with CTC prefix scores) or rescore (CTC prefix beam n-best rescored by the decoder)."""
    beam: int = 1
    """Beam size (ctc: 1 = greedy best path)."""
    token_prune: int = 0
    """Tokens considered per frame in CTC beam search (0 = all)."""
    nbest: int = 1
    """Hypotheses returned per utterance."""
    batch_size: int = 16
    """Utterances encoded together."""
    ctc_weight: float = 0.5
    """joint: weight of CTC prefix scores; rescore: weight of the CTC score added to the decoder's."""
    reverse_weight: float = 0.0
    """rescore: share of the right-to-left decoder in the attention score."""
    len_penalty: float = 0.0
    """attention/joint: length penalty exponent alpha (fairseq score / len^alpha)."""
    chunk_size: int = 0
    """Encoder frames per attention chunk (0 = full context); streaming uses it too."""
    left_chunks: int = -1
    """Chunks of left context each chunk sees (-1 = all)."""
    window: int = 32
    """Inputs over ``window_after`` seconds: local attention in blocks of this many encoder frames (0 = off)."""
    window_left: int = 8
    """Blocks before its own that a block of the local attention sees."""
    window_right: int = 2
    """Blocks after its own that a block of the local attention sees."""
    window_after: float = 60.0
    """Seconds of audio above which ``window`` replaces full attention (0 = always)."""
    lm: str = ""
    """ctc/rescore with beam > 1: ARPA n-gram LM over the model's pieces for shallow fusion (``transduce lm``);
    a relative path is looked up in the working directory, then in the model folder. In rescore mode the
    n-best's CTC scores then include the LM terms."""
    lm_weight: float = 0.0
    """Shallow fusion: weight of the LM's natural-log probabilities (0 = LM off)."""
    insertion_bonus: float = 0.0
    """Shallow fusion: score added per emitted token (counters the LM's preference for short outputs)."""
    lexicon: str = ""
    """Shallow fusion: known words, one per line (``transduce lm --lexicon``); looked up like ``lm``."""
    oov_penalty: float = 10.0
    """Shallow fusion with a lexicon: score subtracted for each completed word not in it."""
    ensemble: tuple[str, ...] = ()
    """mode ctc: partner speech model folders (any units; a relative path is looked up in the working
    directory, then in this model's folder). Every model runs a CTC search with its own beam and LM and
    returns ``ensemble_nbest`` hypotheses; the pooled texts are ranked by the sum of all models' CTC
    log-likelihoods (``transduce/decoding/ctc_ensemble.py``)."""
    ensemble_nbest: int = 8
    """Hypotheses each ensemble member contributes to the pool."""

    def describe(self) -> str:
        """One line naming the search these settings run, e.g. 'CTC prefix beam 20 (8 tokens per frame)
        + n-gram LM lm.arpa.gz (weight 1.1, insertion bonus 1)'."""
        if self.mode == "ctc":
            text = "CTC greedy" if self.beam <= 1 else f"CTC prefix beam {self.beam}"
            if self.beam > 1 and self.token_prune:
                text += f" ({self.token_prune} tokens per frame)"
        else:
            text = {"attention": "attention beam", "joint": f"joint CTC/attention beam (ctc_weight {self.ctc_weight})",
                    "rescore": f"attention rescoring of the CTC n-best (ctc_weight {self.ctc_weight})"
                    }.get(self.mode, self.mode) + f", beam {self.beam}"
        if self.lm and self.lm_weight:
            text += (f" + n-gram LM {PurePath(self.lm).name} (weight {self.lm_weight:g}, "
                     f"insertion bonus {self.insertion_bonus:g})")
            if self.lexicon:
                text += f", lexicon (OOV penalty {self.oov_penalty:g})"
        if self.ensemble:
            text += f", ensemble with {', '.join(PurePath(p).name for p in self.ensemble)} (CTC rescoring of the " \
                    f"pooled {self.ensemble_nbest}-best)"
        if self.chunk_size:
            left = "all" if self.left_chunks < 0 else str(self.left_chunks)
            text += f", chunks of {self.chunk_size} frames ({left} left)"
        return text



def fbank_config(data: SpeechDataConfig) -> FbankConfig:
    """The log-mel front end a speech recipe's data section describes."""
    return FbankConfig(sample_rate=data.sample_rate, num_mel_bins=data.num_mel_bins)
