"""Speech recognition with a CTC (or hybrid CTC/attention) model (task ``ctc``): manifests, a character/subword
tokenizer, global CMVN, frame-budget batches with augmentation, the CTC loss, dev loss + WER/CER in training;
``Recognizer`` for inference."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transduce.config import SECTIONS, RunConfig
from transduce.data.audio import load_audio
from transduce.data.augment import AugmentConfig, SpecAugmentConfig
from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.features import Fbank
from transduce.data.manifest import Utterance, read_manifest, read_manifests
from transduce.data.speech_batching import (
    SpeechBatch,
    SpeechCollator,
    iterate_speech,
    make_speech_batches,
    utterance_frames,
)
from transduce.data.tokenizer import Tokenizer, train_sentencepiece
from transduce.decoding.ctc import ctc_greedy
from transduce.errors import ConfigError, DataError
from transduce.metrics.wer import cer, wer
from transduce.models.ctc import CTCModel, CTCModelConfig, attention_loss, build_ctc, ctc_loss, tied_aliases
from transduce.models.folder import ModelFolder
from transduce.recognize import Recognizer
from transduce.speech_config import CTCDecodeConfig, SpeechDataConfig, fbank_config
from transduce.train.distributed import DistContext
from transduce.train.loss import CTCLoss

TOKENIZER = "spm.model"
CMVN = "cmvn.json"


@dataclass(frozen=True)
class SpeechKind:
    """The ``ctc`` task kind: log-mel features into a CTC or hybrid CTC/attention model, read by ``Recognizer``."""

    name: str = "ctc"
    description: str = "a speech model"
    inference: type = field(default=Recognizer)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "data": SpeechDataConfig, "model": CTCModelConfig, "decode": CTCDecodeConfig}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return [folder / TOKENIZER]

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return tied_aliases(cfg.model)

    def build_model(self, cfg: RunConfig, folder: Path) -> CTCModel:
        """An untrained model for the tokenizer in ``folder`` (its normalizer's statistics come with the weights)."""
        return _build(cfg, len(Tokenizer(folder / TOKENIZER)), None)

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> CTCTask:
        return CTCTask(cfg, run_dir, log)

    def load(self, folder: ModelFolder, device: str = "cpu") -> Recognizer:
        return Recognizer.load(folder.path, device=device)

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """``transduce info`` lines."""
        vocab, m = len(Tokenizer(folder.path / TOKENIZER)), cfg.model
        model = folder.load_into(_build(cfg, vocab, None), self.tied_aliases(cfg))
        lines = [f"{m.encoder} CTC encoder: {m.layers} layers, d={m.dim}, ffn={m.ffn_dim}, {m.heads} heads, "
                 f"subsampling {m.subsampling}x, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters"]
        if m.decoder_layers:
            reverse = f" + {m.reverse_decoder_layers}-layer right-to-left" if m.reverse_decoder_layers else ""
            lines.append(f"hybrid CTC/attention: {m.decoder_layers}-layer attention decoder{reverse}, "
                         f"trained with ctc_weight {m.ctc_weight}")
        if m.causal_conv and not m.utterance_norm:
            chunks = f"dynamic chunks up to {m.max_chunk} frames" if m.dynamic_chunk else "full context"
            lines.append(f"streaming-capable (causal convolution, {chunks}); decode mode {cfg.decode.mode}")
        lines.append(f"{vocab} {cfg.data.tokenizer} tokens, {cfg.data.num_mel_bins} mel bins "
                     f"at {cfg.data.sample_rate} Hz")
        lines.append(f"decodes by default with {cfg.decode.describe()}")
        return lines


SPEECH = SpeechKind()


def _build(cfg: RunConfig, vocab: int, cmvn: CMVNStats | None) -> CTCModel:
    try:
        model = build_ctc(cfg.model, vocab, GlobalCMVN(cfg.data.num_mel_bins))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cmvn is not None:
        model.normalizer.load_state_dict(GlobalCMVN.from_stats(cmvn).state_dict())
    return model


def augment_config(data: SpeechDataConfig) -> AugmentConfig:
    spec = SpecAugmentConfig(freq_masks=data.freq_masks, freq_width=data.freq_width, time_masks=data.time_masks,
                             time_width=data.time_width, time_mask_ratio=data.time_ratio, time_warp=data.time_warp)
    return AugmentConfig(speed_factors=data.speed_factors, noise_prob=data.noise_prob, snr_range=data.snr_range,
                         vtlp_warp=data.vtlp_warp, spec=spec)


def estimate_cmvn(utts: list[Utterance], data: SpeechDataConfig, log: Callable[[str], None],
                  utterance_norm: bool = False) -> CMVNStats:
    """Global mean/variance over up to ``cmvn_utterances`` training utterances spread evenly
    over the manifest (deterministic), after per-utterance mean removal when the model does it."""
    count = min(len(utts), data.cmvn_utterances)
    step = len(utts) / count
    fbank = Fbank(fbank_config(data))
    stats = CMVNStats(data.num_mel_bins)
    with torch.no_grad():
        for k in range(count):
            feats = fbank(load_audio(utts[int(k * step)].audio, data.sample_rate))
            stats.add(feats - feats.mean(0) if utterance_norm else feats)
    log(f"CMVN estimated on {count} training utterances")
    return stats


class CTCTask:
    """A speech run's data (filtered manifests, tokenizer, CMVN statistics), loss and dev evaluation."""

    data_keys: tuple[str, ...] = ("tokenizer", "vocab_size", "sample_rate", "num_mel_bins")

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        data: SpeechDataConfig = cfg.data
        if not 0.0 <= data.vtlp_warp < 0.5:
            raise ConfigError(f"data.vtlp_warp: expected a value in [0, 0.5), got {data.vtlp_warp}")
        folder = Path(data.dir)
        train, self.valid = read_manifests(folder, data.train), read_manifest(folder / data.valid)
        self.tokenizer = self._tokenizer([u.text for u in train])
        self.cmvn = self._cmvn(train)
        self.fbank = fbank_config(data)
        self.train, self.train_targets = self._filter(train)
        self.valid_targets = self.tokenizer.encode([u.text for u in self.valid])

    def _tokenizer(self, texts: list[str]) -> Tokenizer:
        return transcript_tokenizer(self.run_dir / TOKENIZER, texts, self.cfg.data, self.log)

    def _cmvn(self, train: list[Utterance]) -> CMVNStats:
        path = self.run_dir / CMVN
        if path.is_file():
            return CMVNStats.from_dict(json.loads(path.read_text()))
        stats = estimate_cmvn(train, self.cfg.data, self.log, self.cfg.model.utterance_norm)
        path.write_text(json.dumps(stats.to_dict()))
        return stats

    def _filter(self, utts: list[Utterance]) -> tuple[list[Utterance], list[list[int]]]:
        """Drop utterances that are too long, have no transcript, or are too short for CTC to emit
        their transcript (fewer encoder frames than tokens plus repeats)."""
        targets = self.tokenizer.encode([u.text for u in utts])
        frames = torch.tensor(utterance_frames(utts, self.fbank))
        out_lens = self.build_model().encoder.subsampling.output_lengths(frames).tolist()
        emittable = ctc_emittable(targets, out_lens)
        keep = [i for i, u in enumerate(utts) if u.duration <= self.cfg.data.max_duration and emittable[i]]
        if not keep:
            raise DataError(f"{Path(self.cfg.data.dir) / self.cfg.data.train}: no usable training utterances")
        dropped = len(utts) - len(keep)
        hours = sum(utts[i].duration for i in keep) / 3600
        self.log(f"train: {len(keep)} utterances ({hours:.2f} h), dropped {dropped} (too long, empty or too short)")
        return [utts[i] for i in keep], [targets[i] for i in keep]

    def build_model(self) -> CTCModel:
        return _build(self.cfg, len(self.tokenizer), self.cmvn)

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        m = self.cfg.model
        return CTCLoss(model, autocast, ctc_weight=m.ctc_weight, reverse_weight=m.reverse_weight,  # type: ignore[arg-type]
                       label_smoothing=self.cfg.train.label_smoothing)

    def batches(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        return make_speech_batches(utterance_frames(self.train, self.fbank), max_frames=t.max_tokens,
                                   seed=t.seed, epoch=epoch)

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[SpeechBatch]:
        collator = SpeechCollator(self.train, self.train_targets, fbank=self.fbank,
                                  augment=augment_config(self.cfg.data), cmvn=self.cmvn,
                                  utterance_norm=self.cfg.model.utterance_norm, seed=self.cfg.train.seed, epoch=epoch)
        return iterate_speech(batches, collator, start=start, num_workers=self.cfg.data.num_workers)

    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev CTC loss per token in bits (as the training loss) and greedy-decoding WER/CER (batches shared out
        over ranks)."""
        collator = SpeechCollator(self.valid, self.valid_targets, fbank=self.fbank)
        batches = make_speech_batches(utterance_frames(self.valid, self.fbank), max_frames=self.cfg.train.max_tokens,
                                      seed=0, epoch=0, shuffle=False)
        dev = iterate_speech(dist.shard(batches), collator, num_workers=self.cfg.data.num_workers)
        return evaluate_ctc(model, dev, [u.text for u in self.valid], self.tokenizer, dist, autocast)


def transcript_tokenizer(path: Path, texts: list[str], data: Any, log: Callable[[str], None]) -> Tokenizer:
    """The run's tokenizer at ``path``, trained on ``texts`` (``data.tokenizer`` type, ``data.vocab_size``) the
    first time."""
    if path.is_file():
        return Tokenizer(path)
    tok = train_sentencepiece(texts, path, vocab_size=data.vocab_size, model_type=data.tokenizer)
    log(f"trained {data.tokenizer} tokenizer: {len(tok)} pieces")
    return tok


def ctc_emittable(targets: list[list[int]], out_lens: list[int]) -> list[bool]:
    """Whether CTC can emit each non-empty target in its encoder frames (tokens plus repeats, which need a blank
    between them)."""
    return [bool(t) and n >= len(t) + sum(a == b for a, b in zip(t, t[1:], strict=False))
            for t, n in zip(targets, out_lens, strict=True)]


@torch.no_grad()
def evaluate_ctc(model: nn.Module, batches: Iterator[SpeechBatch], refs: list[str], tokenizer: Tokenizer,
                 dist: DistContext, autocast: AbstractContextManager) -> tuple[dict[str, Any], float]:
    """Dev CTC loss per token in bits, [attention loss,] and greedy WER/CER of a CTC model over this rank's
    ``batches`` of the dev set (inputs as feature frames or image columns; ``refs`` in dev order)."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = att_sum = tokens = 0.0
    decoded: list[tuple[int, list[int]]] = []
    hybrid = getattr(model, "decoder", None) is not None
    for batch in batches:
        batch = batch.to(device)
        with autocast:
            out, out_lens = model.encode(batch.feats, batch.feat_lens)  # type: ignore[operator]
            log_probs = model.ctc_log_probs(out)  # type: ignore[operator]
            if hybrid:
                att_sum += float(attention_loss(model, out, out_lens, batch.targets,  # type: ignore[arg-type]
                                                batch.target_lens)[1])
        loss_sum += float(ctc_loss(log_probs.float(), out_lens, batch.targets, batch.target_lens))
        tokens += batch.num_tokens
        hyps = ctc_greedy(log_probs.float().cpu(), out_lens.cpu())
        decoded += [(int(i), h.tokens) for i, h in zip(batch.indices, hyps, strict=True)]
    loss_sum, att_sum, tokens = dist.sum([loss_sum, att_sum, tokens], device)
    pairs = [p for part in dist.gather(decoded) for p in part]  # every rank's (index, tokens)
    order = dict(pairs)
    texts = tokenizer.decode([order[i] for i in range(len(refs))])
    result = {"loss": round(loss_sum / tokens / math.log(2), 4), "wer": round(wer(texts, refs), 2),
              "cer": round(cer(texts, refs), 2)}
    if hybrid:
        result["att_loss"] = round(att_sum / tokens / math.log(2), 4)
    return result, -result["wer"]
