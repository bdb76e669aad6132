"""The CTranslate2 runtime of an exported translation model: ``CT2Search`` searches token ids with
``ctranslate2.Translator``; tokenization, detokenization, n-best handling and the API stay ``Translator``'s.

Our decode settings map onto CTranslate2's options:
- ``beam`` -> ``beam_size`` (1 with nbest 1: its greedy search, as ours), ``nbest`` -> ``num_hypotheses``;
- ``len_penalty`` (fairseq style) -> ``length_penalty``: both divide the summed log-probability by
  length^alpha, EOS counted (``return_end_token``, so that CTranslate2 counts it as we do);
- ``max_len_a``/``max_len_b``: our limit a * (source pieces + EOS) + b holds per sentence, CTranslate2's per
  call, so sentences are searched in groups of one limit L with ``max_decoding_length`` L + 1 (L tokens and
  EOS). At the limit our search forces EOS where CTranslate2 ends with its best token: such a hypothesis (it
  did not finish by itself) keeps its first L tokens, and its score is CTranslate2's;
- PAD and BOS: ours forbids them after the softmax (``decoding.hypothesis.mask_specials``: the other tokens keep
  their log-probabilities); CTranslate2 can only forbid them before it (``suppress_sequences``), which would
  renormalize every score, so they are left allowed: a trained model never ranks them first;
- ``min_decoding_length`` 0: ours may end at once (an empty output), CTranslate2 by default may not;
- ``batch_size`` -> ``max_batch_size``; GNMT length penalty and the coverage penalty are ours only: asking for
  them is an error rather than a different search. With ``len_penalty`` 0 CTranslate2 stops a sentence when its
  best beam ends (ours waits for K finished hypotheses): same best hypothesis in practice, n-best may differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from transduce.config import DecodeConfig
from transduce.data.tokenizer import EOS, Tokenizers
from transduce.decoding.hypothesis import Hypothesis
from transduce.errors import ConfigError, UsageError

MODEL_DIR = "ctranslate2"
"""The exported folder's subfolder holding CTranslate2's model.bin, config.json and vocabularies."""

PREFERENCES: dict[str | None, tuple[str, ...]] = {
    None: ("float32",),
    "int8": ("int8", "int8_float32", "float32"),
    "int8_float32": ("int8_float32", "int8", "float32"),
    "int16": ("int16", "float32"),
    "float16": ("float16", "float32"),
}
"""Stored weight type -> compute types to run it with, best first; the first the device supports is used
(an AVX2-only CPU has no int16, CPUs have no float16: CTranslate2 converts the weights on load)."""


def choose_compute_type(quantize: str | None, device: str) -> str:
    """The compute type for weights stored as ``quantize`` on ``device`` ("cpu", "cuda")."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    return next(t for t in PREFERENCES[quantize] if t in supported or t == "float32")


def limits(src_ids: list[list[int]], cfg: DecodeConfig) -> list[int]:
    """Each sentence's output limit, EOS not counted: ``decoding.hypothesis.max_lengths`` of source + EOS."""
    import torch

    from transduce.decoding.hypothesis import max_lengths

    lengths = torch.tensor([len(ids) + 1 for ids in src_ids])
    return max_lengths(lengths, cfg.max_len_a, cfg.max_len_b).tolist()


def check_settings(cfg: DecodeConfig) -> None:
    """A UsageError (one line on the command line) for decode settings CTranslate2 cannot follow."""
    if cfg.len_penalty_style != "fairseq":
        raise UsageError(f"decode.len_penalty_style {cfg.len_penalty_style}: CTranslate2 exports use the fairseq "
                         "style (score / length^alpha); decode the PyTorch model folder for gnmt")
    if cfg.coverage_penalty:
        raise UsageError("decode.coverage_penalty: CTranslate2 exports search without the coverage penalty; decode "
                         "the PyTorch model folder for it")
    if cfg.beam < 1 or cfg.nbest > cfg.beam:
        raise UsageError(f"beam {cfg.beam} cannot return nbest {cfg.nbest} hypotheses")


class CT2Search:
    """Searches token-id sentences (no specials) with a ``ctranslate2.Translator``; the pieces of our
    tokenizers are its vocabulary, in id order."""

    runtime = "ctranslate2"

    def __init__(self, translator: Any, tokenizers: Tokenizers, *, compute_type: str, folder: Path) -> None:
        self.translator, self.compute_type, self.folder = translator, compute_type, folder
        self.src_pieces = tokenizers.src.id_to_piece(list(range(len(tokenizers.src))))
        self.tgt_pieces = tokenizers.tgt.id_to_piece(list(range(len(tokenizers.tgt))))
        self.tgt_ids = {piece: i for i, piece in enumerate(self.tgt_pieces)}

    def __getattr__(self, name: str) -> Any:
        """PyTorch-only uses (attention plots, alignment) get a one-line error instead of an AttributeError."""
        if name.startswith("_"):
            raise AttributeError(name)
        raise UsageError(f"{self.folder}: a CTranslate2 export has no PyTorch model ({name}); use the model folder "
                         "it was exported from")

    def search_ids(self, src_ids: list[list[int]], cfg: DecodeConfig,
                   progress: Callable[[int], object] | None = None) -> list[list[Hypothesis]]:
        """Hypotheses (best first, ``cfg.nbest`` of them) per sentence, in input order; empty sentences give an
        empty hypothesis without running the model, as ``decoding.corpus.search_corpus``."""
        check_settings(cfg)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in src_ids]
        groups: dict[int, list[int]] = {}
        for i, limit in enumerate(limits(src_ids, cfg)):
            if src_ids[i]:
                groups.setdefault(limit, []).append(i)
        for limit in sorted(groups):
            chosen = groups[limit]
            for i, hyps in zip(chosen, self._search([src_ids[i] for i in chosen], cfg, limit), strict=True):
                results[i] = hyps
            if progress is not None:
                progress(len(chosen))
        return results

    def _search(self, src_ids: list[list[int]], cfg: DecodeConfig, limit: int) -> list[list[Hypothesis]]:
        greedy = cfg.beam == 1 and cfg.nbest == 1
        out = self.translator.translate_batch(
            [[self.src_pieces[t] for t in ids] for ids in src_ids], max_batch_size=cfg.batch_size,
            beam_size=cfg.beam, num_hypotheses=cfg.nbest, length_penalty=1.0 if greedy else cfg.len_penalty,
            max_decoding_length=limit + 1, min_decoding_length=0, max_input_length=0, return_end_token=True,
            return_scores=True)
        alpha = 1.0 if greedy else cfg.len_penalty
        return [[self._hypothesis(tokens, score, limit, alpha) for tokens, score in zip(r.hypotheses, r.scores,
                                                                                          strict=True)]
                for r in out]

    def _hypothesis(self, pieces: list[str], score: float, limit: int, alpha: float) -> Hypothesis:
        """CTranslate2's output (EOS included when it ended) -> ours: tokens without EOS, at most ``limit``;
        ``log_prob`` undoes the length normalization (length with EOS, as CTranslate2 counted it)."""
        ids = [self.tgt_ids[p] for p in pieces]
        log_prob = score * len(ids) ** alpha
        tokens = ids[:-1] if ids and ids[-1] == EOS else ids[:limit]
        return Hypothesis(tokens, score, log_prob)


def load_translator(path: Path, device: str = "cpu") -> Any:
    """The ``Translator`` of the exported folder ``path``: its config and tokenizers, searching in CTranslate2
    with the compute type this machine runs best for the stored weights (``export.yaml`` quantize). It decodes
    alone: the source config's ensemble and rerank members are not part of the export."""
    import ctranslate2
    import torch

    from transduce.export import read_export_info
    from transduce.models.folder import CONFIG, parse_yaml
    from transduce.tasks import parse_config
    from transduce.translate import Translator

    info = read_export_info(path) or {}
    file = path / CONFIG
    try:
        cfg = parse_config(parse_yaml(file.read_bytes(), file, "config"))
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from None
    cfg = replace(cfg, decode=replace(cfg.decode, ensemble=(), rerank=(), rerank_weights=()))
    tokenizers = Tokenizers.load(path, cfg.data.joint_vocab)
    compute_type = choose_compute_type(info.get("quantize"), device)
    translator = ctranslate2.Translator(str(path / MODEL_DIR), device=device, compute_type=compute_type,
                                       intra_threads=torch.get_num_threads())  # as many threads as PyTorch
    search = CT2Search(translator, tokenizers, compute_type=compute_type, folder=path)
    card = {"export": info, "compute_type": compute_type}
    return Translator(search, tokenizers, cfg, card, device=device)
