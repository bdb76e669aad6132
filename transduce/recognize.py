"""Python API for speech recognition: ``Recognizer.load(DIR).transcribe([...])``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor
from tqdm import tqdm

from transduce.config import CTCDecodeConfig, RunConfig, from_dict
from transduce.data.audio import load_audio
from transduce.data.cmvn import GlobalCMVN
from transduce.data.features import Fbank
from transduce.data.speech_batching import pad_features
from transduce.data.tokenizer import Tokenizer
from transduce.decoding.ctc import CTCHypothesis, ctc_beam_search, ctc_greedy
from transduce.models.ctc import CTCModel, build_ctc
from transduce.train.ctc_task import fbank_config
from transduce.translate import resolve_model_dir

Audio = str | Path | Tensor
"""A file path, or a 1-D float waveform already at the model's sample rate."""


@dataclass
class Transcript:
    """One hypothesis: text, log-probability score, and each token's start time in seconds."""

    text: str
    score: float
    tokens: list[str]
    times: list[float]


def load_ctc_dir(path: str | Path) -> tuple[CTCModel, Tokenizer, RunConfig, dict]:
    folder = resolve_model_dir(path)
    cfg = from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
    if cfg.task != "ctc":
        raise ValueError(f"{folder}: a {cfg.task} model, not a speech recognizer")
    tokenizer = Tokenizer(folder / "spm.model")
    model = build_ctc(cfg.model, len(tokenizer), GlobalCMVN(cfg.data.num_mel_bins))
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match config (missing {missing}, unexpected {unexpected})")
    card_path = folder / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return model.eval(), tokenizer, cfg, card


class Recognizer:
    """A loaded CTC model with its tokenizer, feature front end and default search settings."""

    def __init__(self, model: CTCModel, tokenizer: Tokenizer, config: RunConfig, card: dict | None = None,
                 device: str = "cpu") -> None:
        self.model, self.tokenizer, self.config = model.to(device).eval(), tokenizer, config
        self.card, self.device = card or {}, device
        self.fbank = Fbank(fbank_config(config.data))
        self.sample_rate = config.data.sample_rate
        frame_shift = self.fbank.cfg.frame_shift / self.sample_rate
        self.seconds_per_output = frame_shift * config.model.subsampling

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recognizer:
        return cls(*load_ctc_dir(path), device=device)

    def features(self, audio: Audio) -> Tensor:
        """(T, F) log-mel filterbank of a file or waveform."""
        wave = audio if isinstance(audio, Tensor) else load_audio(audio, self.sample_rate)
        with torch.no_grad():
            return self.fbank(wave.float())

    @torch.no_grad()
    def log_probs(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """B feature matrices -> CTC log-probs (B, T', V) and lengths (B,), on the CPU."""
        x, lens = pad_features(feats)
        out, out_lens = self.model(x.to(self.device), lens.to(self.device))
        return out.cpu(), out_lens.cpu()

    def search(self, audio: Sequence[Audio], **overrides: object) -> list[list[Transcript]]:
        """N-best transcripts per input, in input order; ``overrides`` are CTCDecodeConfig fields."""
        cfg: CTCDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        feats = [self.features(a) for a in audio]
        order = sorted(range(len(feats)), key=lambda i: feats[i].size(0))  # similar lengths together
        results: list[list[Transcript]] = [[] for _ in feats]
        with tqdm(total=len(feats), desc="transcribe", unit="utt", disable=None, leave=False) as bar:
            for start in range(0, len(order), cfg.batch_size):
                chunk = order[start : start + cfg.batch_size]
                log_probs, lens = self.log_probs([feats[i] for i in chunk])
                for i, nbest in zip(chunk, self._decode(log_probs, lens, cfg), strict=True):
                    results[i] = [self._transcript(h) for h in nbest]
                bar.update(len(chunk))
        return results

    def _decode(self, log_probs: Tensor, lens: Tensor, cfg: CTCDecodeConfig) -> list[list[CTCHypothesis]]:
        if cfg.beam <= 1 and cfg.nbest <= 1:
            return [[h] for h in ctc_greedy(log_probs, lens)]
        return ctc_beam_search(log_probs, lens, beam=max(cfg.beam, cfg.nbest), token_prune=cfg.token_prune,
                               nbest=cfg.nbest)

    def _transcript(self, hyp: CTCHypothesis) -> Transcript:
        return Transcript(text=self.tokenizer.decode([hyp.tokens])[0], score=hyp.score,
                          tokens=self.tokenizer.id_to_piece(hyp.tokens),
                          times=[round(t * self.seconds_per_output, 3) for t in hyp.timestamps])

    def transcribe(self, audio: Sequence[Audio], **overrides: object) -> list[str]:
        """Best transcript per input, in input order."""
        return [row[0].text if row else "" for row in self.search(audio, **overrides)]
