"""Speech recognition with CTC: manifests, a character/subword tokenizer, global CMVN,
frame-budget batches with augmentation, the CTC loss, dev loss + WER/CER."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transduce.config import ConfigError, RunConfig, SpeechDataConfig
from transduce.data.audio import load_audio
from transduce.data.augment import AugmentConfig, SpecAugmentConfig
from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.features import Fbank, FbankConfig
from transduce.data.manifest import Utterance, read_manifest, read_manifests
from transduce.data.speech_batching import (
    SpeechBatch,
    SpeechCollator,
    iterate_speech,
    make_speech_batches,
    utterance_frames,
)
from transduce.data.text import DataError
from transduce.data.tokenizer import Tokenizer, train_sentencepiece
from transduce.decoding.ctc import ctc_greedy
from transduce.metrics.wer import cer, wer
from transduce.models.ctc import CTCModel, attention_loss, build_ctc, ctc_loss
from transduce.train.distributed import DistContext


def fbank_config(data: SpeechDataConfig) -> FbankConfig:
    return FbankConfig(sample_rate=data.sample_rate, num_mel_bins=data.num_mel_bins)


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


class CTCLoss(nn.Module):
    """A CTC (or hybrid CTC/attention) model and its loss as one module for DDP:
    (feats, feat_lens, targets, target_lens) -> (loss sum, nll sum detached), where a hybrid model's
    loss is ctc_weight * CTC + (1 - ctc_weight) * label-smoothed attention cross-entropy."""

    def __init__(self, model: CTCModel, autocast: AbstractContextManager, *, ctc_weight: float = 1.0,
                 reverse_weight: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model, self.autocast = model, autocast
        self.ctc_weight = ctc_weight if model.decoder is not None else 1.0
        self.reverse_weight, self.label_smoothing = reverse_weight, label_smoothing

    def forward(self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast:
            out, out_lens = self.model.encode(feats, feat_lens)
            log_probs = self.model.ctc_log_probs(out)
        ctc = ctc_loss(log_probs, out_lens, targets, target_lens)
        w = self.ctc_weight
        if w == 1.0:
            return ctc, ctc.detach()
        with self.autocast:
            att, att_nll = attention_loss(self.model, out, out_lens, targets, target_lens,
                                          self.label_smoothing, self.reverse_weight)
        return w * ctc + (1 - w) * att, (w * ctc + (1 - w) * att_nll).detach()


class CTCTask:
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
        path = self.run_dir / "spm.model"
        if path.is_file():
            return Tokenizer(path)
        d = self.cfg.data
        tok = train_sentencepiece(texts, path, vocab_size=d.vocab_size, model_type=d.tokenizer)
        self.log(f"trained {d.tokenizer} tokenizer: {len(tok)} pieces")
        return tok

    def _cmvn(self, train: list[Utterance]) -> CMVNStats:
        path = self.run_dir / "cmvn.json"
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
        keep = []
        for i, (u, t) in enumerate(zip(utts, targets, strict=True)):
            needed = len(t) + sum(a == b for a, b in zip(t, t[1:], strict=False))
            if u.duration <= self.cfg.data.max_duration and t and out_lens[i] >= needed:
                keep.append(i)
        if not keep:
            raise DataError(f"{Path(self.cfg.data.dir) / self.cfg.data.train}: no usable training utterances")
        dropped = len(utts) - len(keep)
        hours = sum(utts[i].duration for i in keep) / 3600
        self.log(f"train: {len(keep)} utterances ({hours:.2f} h), dropped {dropped} (too long, empty or too short)")
        return [utts[i] for i in keep], [targets[i] for i in keep]

    def build_model(self) -> CTCModel:
        try:
            model = build_ctc(self.cfg.model, len(self.tokenizer), GlobalCMVN(self.cfg.data.num_mel_bins))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        model.normalizer.load_state_dict(GlobalCMVN.from_stats(self.cmvn).state_dict())
        return model

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

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev CTC loss per token in bits (as the training loss) and greedy-decoding WER/CER (batches shared out
        over ranks)."""
        model.eval()
        device = next(model.parameters()).device
        collator = SpeechCollator(self.valid, self.valid_targets, fbank=self.fbank)
        batches = make_speech_batches(utterance_frames(self.valid, self.fbank), max_frames=self.cfg.train.max_tokens,
                                      seed=0, epoch=0, shuffle=False)
        mine = dist.shard(batches)
        loss_sum = att_sum = tokens = 0.0
        decoded: list[tuple[int, list[int]]] = []
        hybrid = getattr(model, "decoder", None) is not None
        for batch in iterate_speech(mine, collator, num_workers=self.cfg.data.num_workers):
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
        texts = self.tokenizer.decode([order[i] for i in range(len(self.valid))])
        refs = [u.text for u in self.valid]
        result = {"loss": round(loss_sum / tokens / math.log(2), 4), "wer": round(wer(texts, refs), 2),
                  "cer": round(cer(texts, refs), 2)}
        if hybrid:
            result["att_loss"] = round(att_sum / tokens / math.log(2), 4)
        return result, -result["wer"]

    def model_files(self) -> list[Path]:
        return [self.run_dir / "spm.model"]

