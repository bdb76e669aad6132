"""Translation: parallel text, the Transformer (task translation) or RNN (task rnn_translation)
encoder-decoder, dev loss and BLEU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from torch import nn

from transduce.config import ConfigError, RunConfig
from transduce.data.batching import Batch, iterate_batches, make_batches
from transduce.data.tokenizer import PAD
from transduce.models.rnn import RNNSeq2Seq, build_rnn
from transduce.models.transformer import TransformerSeq2Seq, build
from transduce.train.corpus import Corpus, Tokenizers, load_corpus
from transduce.train.distributed import DistContext
from transduce.train.evaluate import dev_bleu, dev_loss
from transduce.train.loss import CoverageSequenceLoss, SequenceLoss


class TranslationTask:
    data_keys: tuple[str, ...] = ("src_lang", "tgt_lang", "vocab_size", "tokenizer", "joint_vocab")

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.corpus: Corpus = load_corpus(cfg.data, run_dir, log)

    def build_model(self) -> TransformerSeq2Seq | RNNSeq2Seq:
        toks = self.corpus.tokenizers
        try:
            if self.cfg.task == "rnn_translation":
                return build_rnn(self.cfg.model, len(toks.src), len(toks.tgt), PAD)
            return build(self.cfg.model, len(toks.src), len(toks.tgt), PAD)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        """Label-smoothed cross-entropy, plus the coverage loss for RNN models that ask for it."""
        epsilon = self.cfg.train.label_smoothing
        if self.cfg.task == "rnn_translation" and self.cfg.model.coverage_loss_weight:
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

    def model_files(self) -> list[Path]:
        return list(dict.fromkeys(Tokenizers.files(self.run_dir, self.cfg.data.joint_vocab)))
