"""End-to-end speech translation (task ``speech_translation``): speech translation manifests (English audio, its
transcript and its translations), a transcript tokenizer for the CTC head and a target tokenizer for the decoder,
global CMVN, frame-budget batches with the speech task's augmentation, the CTC + cross-entropy loss, dev loss and
BLEU per language in training, component-wise initialization from a speech and a translation model;
``SpeechTranslator`` for inference.

One example is one (utterance, target language) pair: a manifest line with de, fr and cs translations trains a
multilingual model three times, each with its language tag (``models/st.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transduce.config import SECTIONS, RunConfig
from transduce.data.cmvn import CMVNStats, GlobalCMVN
from transduce.data.manifest import Utterance
from transduce.data.speech_batching import SpeechCollator, iterate_speech, make_speech_batches, utterance_frames
from transduce.data.speech_translation import STUtterance, read_st_manifest
from transduce.data.st_batching import STBatch, STCollator
from transduce.data.tokenizer import PAD, Tokenizer
from transduce.errors import ConfigError, DataError
from transduce.metrics.bleu import sacre_scores
from transduce.models.ctc import ctc_loss
from transduce.models.folder import ModelFolder
from transduce.models.st import SpeechTranslationModel, STModelConfig, build_st, tag_ids, tied_aliases
from transduce.speech_config import SpeechDataConfig, fbank_config
from transduce.speech_translate import TARGET_TOKENIZER, TRANSCRIPT_TOKENIZER, SpeechTranslator, STDecodeConfig
from transduce.tasks.speech import augment_config, estimate_cmvn
from transduce.tasks.st_components import init_st_components, st_tokenizer
from transduce.tasks.st_components import source_model as source_model  # re-exported: its home was here
from transduce.tasks.st_components import source_tokenizer as source_tokenizer  # re-exported: its home was here
from transduce.train.distributed import DistContext
from transduce.train.loss import projected_label_smoothed_nll

CMVN = "cmvn.json"


@dataclass(frozen=True)
class Example:
    """One training or dev pair: an utterance into one target language."""

    utt: Utterance
    transcript: list[int]
    """English transcript pieces (CTC targets)."""
    tag: int
    """The language tag's token id."""
    target: list[int]
    """Target pieces (without tag and EOS)."""
    lang: str
    text: str
    """The target sentence (the dev reference; a teacher's translation for a distilled example)."""
    reference: str
    """The manifest's translation of the utterance into ``lang``."""


@dataclass(kw_only=True)
class STDataConfig(SpeechDataConfig):
    """Speech translation manifests (``transduce data speech-translation``): the speech fields (features,
    augmentation, ``tokenizer``/``vocab_size`` of the English transcript pieces for CTC) plus the targets."""

    tgt_langs: tuple[str, ...] = ("de",)
    """Target languages, each a key of the manifests' "translation"; the first is the default at inference."""
    tgt_tokenizer: str = "bpe"
    """SentencePiece model type of the target pieces (one model over all target languages)."""
    tgt_vocab_size: int = 8000
    """Target SentencePiece vocabulary size."""
    tgt_spm: str = ""
    """An existing SentencePiece model to use as the target tokenizer (else model.init_decoder_from's, else one
    is trained on the training translations)."""
    kd: bool = False
    """Sequence-level knowledge distillation: also train on the training manifests' teacher translations
    ("translation_kd", written by ``transduce data st-kd``), one extra example per line and language whose teacher
    translation differs from the reference."""


@dataclass(frozen=True)
class STKind:
    """The ``speech_translation`` task kind, read by ``SpeechTranslator``."""

    name: str = "speech_translation"
    description: str = "a speech translation model"
    inference: type = field(default=SpeechTranslator)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "data": STDataConfig, "model": STModelConfig, "decode": STDecodeConfig}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return [folder / TRANSCRIPT_TOKENIZER, folder / TARGET_TOKENIZER]

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return tied_aliases(cfg.model)

    def build_model(self, cfg: RunConfig, folder: Path) -> SpeechTranslationModel:
        """An untrained model for the tokenizers in ``folder`` (the CMVN statistics come with the weights)."""
        return _build(cfg, Tokenizer(folder / TRANSCRIPT_TOKENIZER), Tokenizer(folder / TARGET_TOKENIZER), None)

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> STTask:
        return STTask(cfg, run_dir, log)

    def load(self, folder: ModelFolder, device: str = "cpu") -> SpeechTranslator:
        return SpeechTranslator.load(folder.path, device=device)

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """``transduce info`` lines."""
        m, d = cfg.model, cfg.data
        model = folder.load_into(self.build_model(cfg, folder.path), self.tied_aliases(cfg))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        targets = len(Tokenizer(folder.path / TARGET_TOKENIZER))
        ctc = f"block {m.ctc_layer}" if m.ctc_layer else "the final output"
        return [f"speech translation: {m.encoder} encoder {m.layers} layers d={m.dim}, {m.decoder_layers}-layer "
                f"decoder d={m.decoder_dim or m.dim}, {params:.2f}M parameters",
                f"en -> {', '.join(d.tgt_langs)} (default {d.tgt_langs[0]}; language tags <2xx> first), "
                f"{targets} target pieces; CTC on the transcript from {ctc}, trained with ctc_weight {m.ctc_weight}",
                f"decodes by default with beam {cfg.decode.beam}, length penalty {cfg.decode.len_penalty}"]


SPEECH_TRANSLATION = STKind()


def _build(cfg: RunConfig, transcripts: Tokenizer, targets: Tokenizer, cmvn: CMVNStats | None
           ) -> SpeechTranslationModel:
    try:
        model = build_st(cfg.model, len(transcripts), len(targets), len(cfg.data.tgt_langs),
                         GlobalCMVN(cfg.data.num_mel_bins))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cmvn is not None:
        model.normalizer.load_state_dict(GlobalCMVN.from_stats(cmvn).state_dict())
    return model


class STLoss(nn.Module):
    """A speech translation model and its loss as one module for DDP: (feats, feat_lens, transcripts,
    transcript_lens, tgt_in, tgt_out) -> (ctc_weight * CTC sum + (1 - ctc_weight) * label-smoothed cross-entropy
    sum, cross-entropy nll sum detached)."""

    def __init__(self, model: SpeechTranslationModel, autocast: AbstractContextManager, *, ctc_weight: float,
                 label_smoothing: float) -> None:
        super().__init__()
        self.model, self.autocast, self.ctc_weight, self.label_smoothing = model, autocast, ctc_weight, label_smoothing

    def forward(self, feats: Tensor, feat_lens: Tensor, transcripts: Tensor, transcript_lens: Tensor, tgt_in: Tensor,
                tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        with self.autocast:
            memory, hidden, out_lens = self.model.encode_for_loss(feats, feat_lens)
            features, _ = self.model.decoder.features(tgt_in, memory, out_lens)  # (B, Y, E)
        ce, nll = projected_label_smoothed_nll(features, self.model.decoder.output.weight, tgt_out,
                                               epsilon=self.label_smoothing, ignore_index=PAD)
        w = self.ctc_weight
        if w == 0.0:
            return ce, nll.detach()
        with self.autocast:  # the head's weights are fp32; under bf16/fp16 autocast ``hidden`` is not
            log_probs = self.model.ctc_log_probs(hidden)
        ctc = ctc_loss(log_probs.float(), out_lens, transcripts, transcript_lens)
        return w * ctc + (1 - w) * ce, nll.detach()


class STTask:
    """A speech translation run's data (examples, tokenizers, CMVN statistics), loss and dev evaluation."""

    data_keys: tuple[str, ...] = ("tokenizer", "vocab_size", "sample_rate", "num_mel_bins", "tgt_langs",
                                  "tgt_tokenizer", "tgt_vocab_size")

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        data: STDataConfig = cfg.data
        self.langs = tuple(data.tgt_langs)
        if not self.langs or len(set(self.langs)) != len(self.langs):
            raise ConfigError(f"data.tgt_langs: name each target language once, got {list(self.langs)}")
        folder = Path(data.dir)
        train = [u for name in data.train.split(",") for u in read_st_manifest(folder / name.strip(), self.langs)]
        valid = read_st_manifest(folder / data.valid, self.langs)
        self.transcripts = self._tokenizer(TRANSCRIPT_TOKENIZER, "model.init_encoder_from", data.tokenizer,
                                           data.vocab_size, [u.utt.text for u in train], "")
        self.targets = self._tokenizer(TARGET_TOKENIZER, "model.init_decoder_from", data.tgt_tokenizer,
                                       data.tgt_vocab_size, [t for u in train for t in u.translation.values()],
                                       data.tgt_spm)
        self.tags = tag_ids(len(self.targets), len(self.langs)).tolist()
        self.cmvn = self._cmvn(train)
        self.fbank = fbank_config(data)
        self.train, self.valid = self._examples(train, data.max_duration, data.kd), self._examples(valid, math.inf)
        hours = sum(e.utt.duration for e in self.train) / 3600
        teacher = sum(e.text != e.reference for e in self.train)
        distilled = f", {teacher} of them teacher translations" if data.kd else ""
        self.log(f"train: {len(self.train)} examples ({hours:.2f} h of audio, {len(self.langs)} target "
                 f"language{'s' if len(self.langs) > 1 else ''}{distilled})")

    def _tokenizer(self, name: str, field: str, kind: str, size: int, texts: list[str], given: str) -> Tokenizer:
        return st_tokenizer(self.run_dir / name, self.cfg.model, field, kind, size, texts, given, self.log)

    def _cmvn(self, train: list[STUtterance]) -> CMVNStats:
        path = self.run_dir / CMVN
        if path.is_file():
            return CMVNStats.from_dict(json.loads(path.read_text()))
        stats = estimate_cmvn([u.utt for u in train], self.cfg.data, self.log, self.cfg.model.utterance_norm)
        path.write_text(json.dumps(stats.to_dict()))
        return stats

    def _examples(self, utts: list[STUtterance], max_duration: float, kd: bool = False) -> list[Example]:
        """One example per (utterance, language), grouped by language in tgt_langs order, and with ``kd`` one more
        per teacher translation that differs from the reference; utterances longer than ``max_duration`` and
        targets too long for the decoder's positions are left out."""
        transcripts = self.transcripts.encode([u.utt.text for u in utts])
        limit = self.cfg.model.max_positions - 1
        out = []
        for tag, lang in zip(self.tags, self.langs, strict=True):
            pairs = [(i, u.translation[lang]) for i, u in enumerate(utts)]
            if kd:
                pairs += [(i, u.translation_kd[lang]) for i, u in enumerate(utts)
                          if u.translation_kd.get(lang, u.translation[lang]) != u.translation[lang]]
            pieces = self.targets.encode([text for _, text in pairs])
            for (i, text), target in zip(pairs, pieces, strict=True):
                if utts[i].utt.duration <= max_duration and 0 < len(target) <= limit:
                    out.append(Example(utts[i].utt, transcripts[i], tag, target, lang, text, utts[i].translation[lang]))
        if not out:
            raise DataError(f"{Path(self.cfg.data.dir) / self.cfg.data.train}: no usable examples")
        return out

    def build_model(self) -> SpeechTranslationModel:
        return _build(self.cfg, self.transcripts, self.targets, self.cmvn)

    def init_components(self, model: nn.Module) -> None:
        init_st_components(model, self.cfg, self.log)

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        return STLoss(model, autocast, ctc_weight=self.cfg.model.ctc_weight,  # type: ignore[arg-type]
                      label_smoothing=self.cfg.train.label_smoothing)

    def batches(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        return make_speech_batches(utterance_frames([e.utt for e in self.train], self.fbank), max_frames=t.max_tokens,
                                   seed=t.seed, epoch=epoch)

    def collator(self, train: bool, epoch: int = 0) -> STCollator:
        """Training batches (augmented) or dev batches (plain) of examples."""
        examples = self.train if train else self.valid
        utts, transcripts = [e.utt for e in examples], [e.transcript for e in examples]
        speech = SpeechCollator(utts, transcripts, fbank=self.fbank)
        if train:
            speech = SpeechCollator(utts, transcripts, fbank=self.fbank, augment=augment_config(self.cfg.data),
                                    cmvn=self.cmvn, utterance_norm=self.cfg.model.utterance_norm,
                                    seed=self.cfg.train.seed, epoch=epoch)
        return STCollator(speech, [(e.tag, e.target) for e in examples])

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[STBatch]:
        return iterate_speech(batches, self.collator(True, epoch), start=start, num_workers=self.cfg.data.num_workers)

    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        """Dev translation loss per target token in bits and, with train.eval_bleu, greedy BLEU per language
        (batches shared out over ranks); the score is the mean BLEU (else minus the loss)."""
        batches = make_speech_batches(utterance_frames([e.utt for e in self.valid], self.fbank),
                                      max_frames=self.cfg.train.max_tokens, seed=0, epoch=0, shuffle=False)
        dev = iterate_speech(dist.shard(batches), self.collator(False), num_workers=self.cfg.data.num_workers)
        return evaluate_st(model, dev, [(e.lang, e.text) for e in self.valid], self.targets, self.tags, self.cfg,
                           dist, autocast)


@torch.no_grad()
def evaluate_st(model: nn.Module, batches: Iterator[STBatch], valid: list[tuple[str, str]], targets: Tokenizer,
                tags: list[int], cfg: RunConfig, dist: DistContext, autocast: AbstractContextManager
                ) -> tuple[dict[str, Any], float]:
    """Dev loss per target token in bits and, with train.eval_bleu, greedy BLEU per language of a speech (or
    image) translation model over this rank's ``batches`` of the dev examples ``valid`` ((language, reference)
    in dev order); the score is the mean BLEU (else minus the loss)."""
    assert isinstance(model, SpeechTranslationModel)
    model.eval()
    device = next(model.parameters()).device
    nll_sum = tokens = 0.0
    decoded: list[tuple[int, list[int]]] = []
    for batch in batches:
        batch = batch.to(device)
        with autocast:
            memory, lens = model.encode(batch.feats, batch.feat_lens)
            features, _ = model.decoder.features(batch.tgt_in, memory, lens)  # (B, Y, E)
        nll_sum += float(projected_label_smoothed_nll(features.float(), model.decoder.output.weight.float(),
                                                      batch.tgt_out, epsilon=0.0, ignore_index=PAD)[1])
        tokens += batch.num_tokens
        if cfg.train.eval_bleu:
            decoded += _greedy(model, memory.float(), lens, batch, tags, cfg.decode)
    nll_sum, tokens = dist.sum([nll_sum, tokens], device)
    result: dict[str, Any] = {"loss": round(nll_sum / tokens / math.log(2), 4)}
    if not cfg.train.eval_bleu:
        return result, -result["loss"]
    order = dict(p for part in dist.gather(decoded) for p in part)  # every rank's (example, tokens)
    texts = targets.decode([order[i] for i in range(len(valid))])
    langs = list(dict.fromkeys(lang for lang, _ in valid))
    for lang in langs:
        mine = [i for i, (x, _) in enumerate(valid) if x == lang]
        result[f"bleu_{lang}"] = sacre_scores([texts[i] for i in mine], [valid[i][1] for i in mine])["bleu"]
    result["bleu"] = round(sum(result[f"bleu_{lang}"] for lang in langs) / len(langs), 2)
    return result, result["bleu"]


def _greedy(model: SpeechTranslationModel, memory: Tensor, lens: Tensor, batch: STBatch, tags: list[int],
            d: STDecodeConfig) -> list[tuple[int, list[int]]]:
    """(example index, greedy output pieces) of a dev batch, each started with its example's tag."""
    from transduce.decoding.hypothesis import max_lengths
    from transduce.decoding.tagged import tagged_beam_search

    forbidden = torch.tensor(tags, device=memory.device)
    found = tagged_beam_search(model, memory, lens, batch.tgt_in[:, 0], forbidden,
                               max_lengths(lens, d.max_len_a, d.max_len_b), beam=1)
    return [(int(i), h[0].tokens if h else []) for i, h in zip(batch.indices, found, strict=True)]
