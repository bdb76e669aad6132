"""Translation: parallel text into a Transformer (task ``translation``) or attentional RNN (task
``rnn_translation``) encoder-decoder; dev loss and BLEU in training; ``Translator`` for inference.

The two task names are two ``TranslationKind`` objects that differ in the model family they build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from transduce.config import SECTIONS, DecodeConfig, RunConfig
from transduce.data.batching import Batch, iterate_batches, make_batches
from transduce.data.tokenizer import PAD, Tokenizers
from transduce.errors import ConfigError
from transduce.models import rnn, transformer
from transduce.models.folder import ModelFolder
from transduce.train.corpus import Corpus, load_corpus
from transduce.train.distributed import DistContext
from transduce.train.evaluate import dev_bleu, dev_loss
from transduce.train.loss import CoverageSequenceLoss, SequenceLoss
from transduce.translate import Translator


def _transformer_summary(m: transformer.TransformerConfig, params: int) -> str:
    return (f"transformer {m.encoder_layers}+{m.decoder_layers} layers, d={m.dim}, ffn={m.ffn_dim}, "
            f"{m.heads} heads, {'pre' if m.pre_norm else 'post'}-LN, {params / 1e6:.2f}M parameters")


def _rnn_summary(m: rnn.RNNConfig, params: int) -> str:
    return (f"{m.cell} encoder-decoder {m.encoder_layers}+{m.decoder_layers} layers, hidden {m.hidden}, "
            f"{m.attention} attention, {params / 1e6:.2f}M parameters")


@dataclass(frozen=True)
class TranslationKind:
    """A translation task kind: its model family (config class, builder, tied weights, one-line summary)."""

    name: str
    model_config: type
    build: Callable[[Any, int, int, int], nn.Module]
    """(model config, source vocabulary, target vocabulary, pad id) -> model."""
    aliases: Callable[[Any], set[str]]
    summary: Callable[[Any, int], str]
    """(model config, parameter count) -> the ``transduce info`` line."""
    coverage_loss: bool = False
    """The model family can add the coverage loss (``model.coverage_loss_weight``) to its training loss."""
    description: str = "a translation model"
    inference: type = field(default=Translator)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "model": self.model_config}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return list(dict.fromkeys(Tokenizers.files(folder, cfg.data.joint_vocab)))

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return self.aliases(cfg.model)

    def build_model(self, cfg: RunConfig, folder: Path) -> nn.Module:
        """An untrained model for the tokenizers in ``folder``; a model section the builder rejects is a
        ConfigError."""
        return self._build(cfg, Tokenizers.load(folder, cfg.data.joint_vocab))

    def _build(self, cfg: RunConfig, toks: Tokenizers) -> nn.Module:
        try:
            return self.build(cfg.model, len(toks.src), len(toks.tgt), PAD)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> TranslationTask:
        return TranslationTask(self, cfg, run_dir, log)

    def load(self, folder: ModelFolder, device: str = "cpu") -> Translator:
        """The folder's Translator, with the ensemble members and rerankers its decode section names."""
        return Translator.load(folder.path, device=device)

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        """``transduce info`` lines."""
        toks = Tokenizers.load(folder.path, cfg.data.joint_vocab)
        model = folder.load_into(self._build(cfg, toks), self.tied_aliases(cfg))
        d: DecodeConfig = cfg.decode
        members = f", ensembled with {', '.join(d.ensemble)}" if d.ensemble else ""
        shares = f", shares {', '.join(map(str, d.rerank_weights))}" if d.rerank_weights else ""
        rerank = f", n-best reranked by {', '.join(d.rerank)} (weight {d.rerank_weight}{shares})" if d.rerank else ""
        return [self.summary(cfg.model, sum(p.numel() for p in model.parameters())),
                f"{cfg.data.src_lang}->{cfg.data.tgt_lang}, vocabulary {len(toks.src)}/{len(toks.tgt)} "
                f"({cfg.data.tokenizer}, {'joint' if cfg.data.joint_vocab else 'separate'})"
                f"{', right to left (data.reverse_target)' if cfg.data.reverse_target else ''}",
                f"decodes by default with beam {d.beam}, length penalty {d.len_penalty} ({d.len_penalty_style})"
                f"{members}{rerank}"]


TRANSLATION = TranslationKind("translation", transformer.TransformerConfig, transformer.build,
                              transformer.tied_aliases, _transformer_summary)
RNN_TRANSLATION = TranslationKind("rnn_translation", rnn.RNNConfig, rnn.build_rnn, rnn.tied_aliases, _rnn_summary,
                                  coverage_loss=True)


class TranslationTask:
    """A translation run's data (tokenized, filtered parallel text), loss and dev evaluation."""

    data_keys: tuple[str, ...] = ("src_lang", "tgt_lang", "vocab_size", "tokenizer", "joint_vocab")

    def __init__(self, kind: TranslationKind, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        self.kind, self.cfg, self.run_dir = kind, cfg, run_dir
        self.corpus: Corpus = load_corpus(cfg.data, run_dir, log)

    def build_model(self) -> nn.Module:
        return self.kind._build(self.cfg, self.corpus.tokenizers)

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        """Label-smoothed cross-entropy, plus the coverage loss for models that ask for it (RNN)."""
        epsilon = self.cfg.train.label_smoothing
        if self.kind.coverage_loss and self.cfg.model.coverage_loss_weight:
            return CoverageSequenceLoss(model, epsilon=epsilon, ignore_index=PAD, autocast=autocast,
                                        weight=self.cfg.model.coverage_loss_weight)
        return SequenceLoss(model, epsilon=epsilon, ignore_index=PAD, autocast=autocast)

    def batches(self, epoch: int) -> list[list[int]]:
        c, t = self.corpus, self.cfg.train
        return make_batches([len(s) for s in c.train_src], [len(t) for t in c.train_tgt],
                            max_tokens=t.max_tokens, seed=t.seed, epoch=epoch)

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[Batch]:
        c = self.corpus
        return iterate_batches(batches, c.train_src, c.train_tgt, start=start, num_workers=self.cfg.data.num_workers)

    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        t = self.cfg.train
        result: dict[str, Any] = dev_loss(model, self.corpus, t.max_tokens, t.label_smoothing,  # type: ignore[arg-type]
                                          autocast, dist=dist)
        if t.eval_bleu:
            result.update(dev_bleu(model, self.corpus, self.cfg.decode,  # type: ignore[arg-type]
                                   bf16=t.precision == "bf16", dist=dist))
        return result, result["bleu"] if t.eval_bleu else -result["nll"]
