"""Python API for speech recognition: ``Recognizer.load(DIR).transcribe([...])``, with the decoding modes
of a CTC or hybrid CTC/attention model (``CTCDecodeConfig.mode``), and ``Recognizer.stream()`` for
chunk-by-chunk recognition of live audio (``transduce/streaming/stream.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from transduce.config import RunConfig
from transduce.data.audio import audio_blocks, audio_duration, load_audio
from transduce.data.features import Fbank, FbankConfig, StreamingFbank
from transduce.data.speech_batching import pad_features
from transduce.data.text import read_lines
from transduce.data.tokenizer import Tokenizer
from transduce.decoding.ctc import CTCHypothesis, ctc_beam_search, ctc_greedy
from transduce.decoding.ctc_ensemble import ctc_log_likelihoods, rank_candidates
from transduce.decoding.joint import attention_rescore, joint_beam_search
from transduce.decoding.lm_fusion import Lexicon, LMFusion
from transduce.errors import ConfigError
from transduce.models.ctc import CTCModel
from transduce.models.folder import resolve as resolve_model_dir
from transduce.models.ngram import NgramLM
from transduce.nn.conformer import ConformerEncoder
from transduce.nn.local_attention import LocalWindow
from transduce.speech_config import CTCDecodeConfig, fbank_config

if TYPE_CHECKING:
    from transduce.streaming.endpoint import EndpointConfig
    from transduce.streaming.session import StreamSession
    from transduce.streaming.vad import SileroVAD

MODES = ("ctc", "attention", "joint", "rescore")
SHAPE_STEP = 64
"""Feature frames (0.64 s) that batch lengths are rounded up to (masked padding)."""
BLOCKWISE_SECONDS = 60.0
"""Files longer than this are turned into features block by block."""

Audio = str | Path | Tensor
"""A file path, or a 1-D float waveform already at the model's sample rate."""


@dataclass
class Transcript:
    """One hypothesis: text, log-probability score, and each token's start time in seconds."""

    text: str
    score: float
    tokens: list[str]
    times: list[float]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a speech model folder (or run folder)."""
    return Tokenizer(resolve_model_dir(path) / "spm.model")


def load_ctc_dir(path: str | Path) -> tuple[CTCModel, Tokenizer, RunConfig, dict]:
    """A speech model folder (or run folder): model in eval mode, tokenizer, config, card. Any other kind of
    model is a UsageError naming the folder."""
    from transduce.tasks import build_loaded  # the task registry sits above this module: looked up when called

    model, cfg, folder = build_loaded(path, Recognizer, "transcribe needs a speech model")
    return model, Tokenizer(folder.file("spm.model")), cfg, folder.card  # type: ignore[return-value]


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
        self._vad: SileroVAD | None = None  # loaded on the first stream that asks for it, then shared
        self.folder: Path | None = None  # the model folder, where relative decode.lm paths are also looked up
        self._lms: dict[Path, NgramLM] = {}  # loaded language models by file
        self._lexicons: dict[Path, frozenset[str]] = {}
        self._fusions: dict[tuple, LMFusion] = {}  # with their caches, by files and weights
        self._partners: dict[Path, Recognizer] = {}  # decode.ensemble members, loaded on first use

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recognizer:
        from transduce.export import load_exported  # the export layer sits above this module

        exported = load_exported(path, device)  # an exported folder (export.yaml) loads through its runtime
        if exported is not None:
            if not isinstance(exported, Recognizer):
                raise ConfigError(f"{path}: an exported model that does not transcribe")
            return exported
        from transduce.tasks import get_task  # the task registry sits above this module

        model, tokenizer, config, card = load_ctc_dir(path)
        inference = get_task(config.task).inference  # e.g. an OCR model's ImageRecognizer
        recognizer = (inference if issubclass(inference, cls) else cls)(model, tokenizer, config, card, device=device)
        folder = recognizer.folder = resolve_model_dir(path)
        # files named in the model's own decode section belong to the model: resolve them in its folder, so a
        # same-named file in the working directory is never picked up instead
        decode = recognizer.config.decode
        own: dict[str, object] = {
            field: str(folder / name) for field in ("lm", "lexicon")
            if (name := getattr(decode, field)) and not Path(name).is_absolute() and (folder / name).is_file()}
        ensemble = tuple(os.path.normpath(folder / name) if not Path(name).is_absolute() and (folder / name).is_dir()
                         else name for name in decode.ensemble)
        if ensemble != decode.ensemble:
            own["ensemble"] = ensemble
        if own:
            recognizer.config = replace(recognizer.config, decode=replace(decode, **own))  # type: ignore[arg-type]
        return recognizer

    def partner(self, name: str) -> Recognizer:
        """The ensemble member at ``name`` (a model folder, found like ``decode.lm``), loaded once."""
        path = self._find(name, "decode.ensemble", model_folder=True)
        if path not in self._partners:
            member = Recognizer.load(path, device=self.device)
            if member.config.decode.ensemble:
                raise ConfigError(f"decode.ensemble: {name} names an ensemble of its own; members decode alone")
            self._partners[path] = member
        return self._partners[path]

    def fusion(self, cfg: CTCDecodeConfig) -> LMFusion | None:
        """The shallow-fusion scorer for ``cfg.lm`` (and ``cfg.lexicon``), None when no LM or weight 0; each
        file is read once."""
        if not cfg.lm or cfg.lm_weight == 0.0:
            return None
        lm_path = self._find(cfg.lm, "decode.lm")
        if lm_path not in self._lms:
            self._lms[lm_path] = NgramLM.load_arpa(lm_path)
        words_path = self._find(cfg.lexicon, "decode.lexicon") if cfg.lexicon else None
        if words_path is not None and words_path not in self._lexicons:
            self._lexicons[words_path] = frozenset(read_lines(words_path))
        key = (lm_path, cfg.lm_weight, cfg.insertion_bonus, words_path, cfg.oov_penalty)
        if key not in self._fusions:
            pieces = self.tokenizer.id_to_piece(list(range(len(self.tokenizer))))
            lexicon = Lexicon(self._lexicons[words_path], pieces, cfg.oov_penalty) if words_path else None
            self._fusions[key] = LMFusion(self._lms[lm_path], pieces, cfg.lm_weight, cfg.insertion_bonus, lexicon)
        return self._fusions[key]

    def _find(self, name: str, field: str, model_folder: bool = False) -> Path:
        """A decode file (or with ``model_folder`` a model or run folder): as given (relative to the working
        directory), else inside the model folder. (Names in the model's config were already resolved in its
        folder by ``load``.)"""
        def found(path: Path) -> bool:
            if model_folder:
                return (path / "config.yaml").is_file() or (path / "model" / "config.yaml").is_file()
            return path.is_file()

        path = Path(name)
        if not found(path) and not path.is_absolute() and self.folder is not None:
            path = self.folder / name
        if not found(path):
            also = f" (also looked in {self.folder})" if self.folder else ""
            raise ConfigError(f"{field}: {name}: {'not a model folder' if model_folder else 'no such file'}{also}")
        return path

    def features(self, audio: Audio) -> Tensor:
        """(T, F) log-mel filterbank of a file or waveform. A file over ``BLOCKWISE_SECONDS`` is read, resampled and
        framed block by block (the same frames): the whole-signal transform holds several copies of the signal
        in frames and spectra, gigabytes for an hour, where the features themselves are ~2 MB a minute."""
        if not isinstance(audio, Tensor) and audio_duration(audio) > BLOCKWISE_SECONDS:
            features = StreamingFbank(self.fbank)
            with torch.no_grad():
                return torch.cat([features.accept(block.float()) for block in audio_blocks(audio, self.sample_rate)])
        wave = audio if isinstance(audio, Tensor) else load_audio(audio, self.sample_rate)
        with torch.no_grad():
            return self.fbank(wave.float())

    def _check_mode(self, cfg: CTCDecodeConfig) -> None:
        if cfg.mode not in MODES:
            raise ConfigError(f"decode.mode: unknown mode {cfg.mode!r} (known: {', '.join(MODES)})")
        for name in ("window", "window_left", "window_right"):
            if getattr(cfg, name) < 0:
                raise ConfigError(f"decode.{name} must be >= 0, got {getattr(cfg, name)}")
        if cfg.ensemble and cfg.mode != "ctc":
            raise ConfigError(f"decode.ensemble: ensembles decode in mode ctc, not {cfg.mode}")
        if cfg.mode != "ctc" and self.model.decoder is None:
            raise ConfigError(f"decode.mode {cfg.mode} needs an attention decoder; this model is CTC only")
        if cfg.lm and cfg.lm_weight != 0.0 and cfg.mode not in ("ctc", "rescore"):
            raise ConfigError(f"decode.lm: shallow fusion works in modes ctc and rescore, not {cfg.mode}")
        if cfg.lm and cfg.lm_weight != 0.0 and cfg.beam <= 1:
            raise ConfigError("decode.lm: shallow fusion needs a beam (decode.beam > 1); for greedy search "
                              "without the LM pass --lm-weight 0")

    def local_window(self, frames: int, cfg: CTCDecodeConfig) -> LocalWindow | None:
        """The blockwise local attention for an input of ``frames`` feature frames, or None for full attention:
        streaming-equivalent chunks with limited left context (the same band, computed blockwise), else
        ``cfg.window`` for inputs over ``cfg.window_after`` seconds. Conformer encoders only."""
        if not isinstance(self.model.encoder, ConformerEncoder):
            return None
        if cfg.chunk_size > 0:
            return LocalWindow(block=cfg.chunk_size, left=cfg.left_chunks) if cfg.left_chunks >= 0 else None
        seconds = frames * self.fbank.cfg.frame_shift / self.sample_rate
        if cfg.window > 0 and seconds > cfg.window_after:
            return LocalWindow(block=cfg.window, left=cfg.window_left, right=cfg.window_right)
        return None

    @torch.no_grad()
    def encode(self, feats: list[Tensor], cfg: CTCDecodeConfig) -> tuple[Tensor, Tensor]:
        """B feature matrices -> encoder output (B, T', D) and lengths (B,), on the model's device. The batch is
        padded to a multiple of ``SHAPE_STEP`` frames: oneDNN keeps compiled kernels per input shape, so a long
        recording cut into pieces of every length would otherwise grow memory piece after piece."""
        x, lens = pad_features(feats)
        x = F.pad(x, (0, 0, 0, -x.size(1) % SHAPE_STEP))  # (B, T, F), T a multiple of SHAPE_STEP
        window = self.local_window(x.size(1), cfg)
        if window is not None:
            return self.model.encode(x.to(self.device), lens.to(self.device), window=window)
        return self.model.encode(x.to(self.device), lens.to(self.device), chunk_size=cfg.chunk_size,
                                 left_chunks=cfg.left_chunks)

    @torch.no_grad()
    def log_probs(self, feats: list[Tensor], **overrides: object) -> tuple[Tensor, Tensor]:
        """B feature matrices -> CTC log-probs (B, T', V) and lengths (B,), on the CPU."""
        cfg: CTCDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        out, lens = self.encode(feats, cfg)
        return self.model.ctc_log_probs(out).cpu(), lens.cpu()

    def search(self, audio: Sequence[Audio], **overrides: object) -> list[list[Transcript]]:
        """N-best transcripts per input, in input order; ``overrides`` are CTCDecodeConfig fields."""
        cfg: CTCDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        self._check_mode(cfg)
        if cfg.ensemble:
            return self._ensemble_search(audio, cfg)
        return [nbest for nbest, _ in self._search([self.features(a) for a in audio], cfg)]

    @torch.no_grad()
    def _search(self, feats: list[Tensor], cfg: CTCDecodeConfig,
                keep_log_probs: bool = False) -> list[tuple[list[Transcript], Tensor | None]]:
        """Per feature matrix (T, F), in input order: n-best transcripts and (with ``keep_log_probs``) CTC
        log-probs (T', V)."""
        order = sorted(range(len(feats)), key=lambda i: feats[i].size(0))  # similar lengths together
        results: list[tuple[list[Transcript], Tensor | None]] = [([], None) for _ in feats]
        with tqdm(total=len(feats), desc="transcribe", unit="utt", disable=None, leave=False) as bar:
            for start in range(0, len(order), cfg.batch_size):
                chunk = order[start : start + cfg.batch_size]
                out, lens = self.encode([feats[i] for i in chunk], cfg)
                log_probs = self.model.ctc_log_probs(out).cpu() if keep_log_probs else None
                for row, (i, nbest) in enumerate(zip(chunk, self.decode(out, lens, cfg), strict=True)):
                    results[i] = (nbest, None if log_probs is None else log_probs[row, : int(lens[row])])
                bar.update(len(chunk))
        return results

    @torch.no_grad()
    def _ensemble_search(self, audio: Sequence[Audio], cfg: CTCDecodeConfig) -> list[list[Transcript]]:
        """This model and the ``cfg.ensemble`` partners each run a CTC search with their own settings (beam,
        LM; a hybrid partner's attention decoder is not used); their ``ensemble_nbest`` lists are pooled per
        input and ranked by the sum of every model's CTC log-likelihood (a transcript keeps the tokens and
        times of the first model that found it)."""
        members = [(self, replace(cfg, ensemble=(), nbest=cfg.ensemble_nbest))]
        members += [(p, replace(p.config.decode, mode="ctc", nbest=cfg.ensemble_nbest))
                    for p in map(self.partner, cfg.ensemble)]
        computed: list[tuple[FbankConfig, list[Tensor]]] = []  # features once per front end
        pools: list[dict[str, Transcript]] = [{} for _ in audio]
        per_member: list[list[Tensor]] = []
        for member, member_cfg in members:
            feats = next((f for front, f in computed if front == member.fbank.cfg), None)
            if feats is None:
                feats = [member.features(a) for a in audio]
                computed.append((member.fbank.cfg, feats))
            found = member._search(feats, member_cfg, keep_log_probs=True)
            for pool, (nbest, _) in zip(pools, found, strict=True):
                for hyp in nbest:
                    pool.setdefault(hyp.text, hyp)
            per_member.append([lp for _, lp in found if lp is not None])
        results = []
        for index, pool in enumerate(pools):
            texts = list(pool)
            scores = [ctc_log_likelihoods(log_probs[index], member.tokenizer.encode(texts))
                      for (member, _), log_probs in zip(members, per_member, strict=True)]
            results.append([replace(pool[text], score=score) for text, score in rank_candidates(texts, scores)][
                : cfg.nbest])
        return results

    @torch.no_grad()
    def decode(self, out: Tensor, lens: Tensor, cfg: CTCDecodeConfig) -> list[list[Transcript]]:
        """Encoder output (B, T', D), lengths (B,) -> n-best transcripts per row, by ``cfg.mode``."""
        log_probs = self.model.ctc_log_probs(out)
        if cfg.mode == "ctc":
            return [[self._transcript(h) for h in nbest] for nbest in self._ctc(log_probs.cpu(), lens.cpu(), cfg)]
        if cfg.mode == "rescore":
            return self._rescore(out, lens, log_probs, cfg)
        weight = cfg.ctc_weight if cfg.mode == "joint" else 0.0
        found = joint_beam_search(self.model, out, lens, log_probs, lens, beam=cfg.beam, ctc_weight=weight,
                                  len_penalty=cfg.len_penalty, nbest=cfg.nbest)
        return [[self._transcript(CTCHypothesis(h.tokens, h.score, [])) for h in nbest] for nbest in found]

    def _ctc(self, log_probs: Tensor, lens: Tensor, cfg: CTCDecodeConfig, nbest: int = 0) -> list[list[CTCHypothesis]]:
        nbest = nbest or cfg.nbest
        if cfg.beam <= 1 and nbest <= 1:
            return [[h] for h in ctc_greedy(log_probs, lens)]
        return ctc_beam_search(log_probs, lens, beam=max(cfg.beam, nbest), token_prune=cfg.token_prune, nbest=nbest,
                               fusion=self.fusion(cfg))

    def _rescore(self, out: Tensor, lens: Tensor, log_probs: Tensor, cfg: CTCDecodeConfig) -> list[list[Transcript]]:
        """WeNet attention rescoring: the CTC prefix beam's n-best (``beam`` of them), ranked by decoder score +
        ctc_weight * CTC score; the best goes first (keeping its CTC timestamps)."""
        candidates = self._ctc(log_probs.cpu(), lens.cpu(), cfg, nbest=max(cfg.beam, cfg.nbest))
        best = attention_rescore(self.model.attention_decoder(), out, lens, [[h.tokens for h in c] for c in candidates],
                                 [[h.score for h in c] for c in candidates], ctc_weight=cfg.ctc_weight,
                                 reverse_decoder=self.model.reverse_decoder, reverse_weight=cfg.reverse_weight)
        results = []
        for hyps, (index, score) in zip(candidates, best, strict=True):
            ranked = [replace(hyps[index], score=score)] + [h for i, h in enumerate(hyps) if i != index]
            results.append([self._transcript(h) for h in ranked[: cfg.nbest]])
        return results

    def _transcript(self, hyp: CTCHypothesis) -> Transcript:
        return Transcript(text=self.tokenizer.decode([hyp.tokens])[0], score=hyp.score,
                          tokens=self.tokenizer.id_to_piece(hyp.tokens),
                          times=[round(t * self.seconds_per_output, 3) for t in hyp.timestamps])

    def chunk_frames(self, chunk_ms: float) -> int:
        """Milliseconds of audio -> encoder frames per chunk (at least 1)."""
        return max(1, round(chunk_ms / 1000 / self.seconds_per_output))

    def voice_detector(self) -> SileroVAD:
        """silero-vad at the model's sample rate, loaded on first use and shared by every stream."""
        from transduce.streaming.vad import SileroVAD

        if self._vad is None:
            self._vad = SileroVAD(self.sample_rate)
        return self._vad

    def stream(self, chunk_ms: float | None = None, *, endpoint: EndpointConfig | None = None,
               vad: bool = False, **overrides: object) -> StreamSession:
        """A live stream: ``accept(pcm)``, ``partial()``, ``finalize()`` (``transduce/streaming/stream.py``).
        ``chunk_ms`` sets the chunk (else ``decode.chunk_size`` frames, else 640 ms); ``endpoint`` the
        segmentation rules (None = one segment until ``finalize``); ``overrides`` are CTCDecodeConfig fields
        (beam, ctc_weight and reverse_weight for the rescoring at each endpoint, left_chunks, mode: ctc turns
        rescoring off). ``vad``: silero-vad decides speech and silence for the endpoint rules (else the
        recognizer's blank frames do)."""
        from transduce.streaming.session import StreamSession, StreamSettings, unstreamable

        cfg: CTCDecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        self._check_mode(cfg)
        why = unstreamable(self.model)
        where = f"{self.folder / 'config.yaml'}: " if self.folder is not None else ""
        if cfg.ensemble:
            raise ConfigError("decode.ensemble: a stream decodes one model; turn the ensemble off (ensemble=() in "
                              "Python, --ensemble none on the command line)" + (f"; also {where}{why}" if why else ""))
        if why is not None:
            raise ConfigError(f"{where}{why}")
        chunk = self.chunk_frames(chunk_ms) if chunk_ms else cfg.chunk_size or self.chunk_frames(640)
        detector = self.voice_detector() if vad else None
        settings = StreamSettings(chunk_size=chunk, left_chunks=cfg.left_chunks, beam=max(cfg.beam, 1),
                                  token_prune=cfg.token_prune,
                                  rescore=cfg.mode != "ctc", ctc_weight=cfg.ctc_weight,
                                  reverse_weight=cfg.reverse_weight, endpoint=endpoint, vad=detector,
                                  fusion=self.fusion(cfg))
        return StreamSession(self.model, self.tokenizer, self.fbank, settings)

    def transcribe(self, audio: Sequence[Audio], **overrides: object) -> list[str]:
        """Best transcript per input, in input order."""
        return [row[0].text if row else "" for row in self.search(audio, **overrides)]
