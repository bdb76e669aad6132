"""Python API: ``Translator.load(DIR).translate([...])``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from transduce.config import DecodeConfig, RunConfig
from transduce.data.tokenizer import Tokenizer, Tokenizers
from transduce.decoding.corpus import search_corpus
from transduce.decoding.ensemble import Ensemble
from transduce.decoding.hypothesis import Hypothesis
from transduce.decoding.rerank import rerank_nbest, rerank_shares, sequence_log_probs
from transduce.models.folder import resolve as resolve_model_dir
from transduce.models.rnn import RNNSeq2Seq
from transduce.models.transformer import TransformerSeq2Seq

__all__ = ["Reranker", "Translator", "load_model_dir", "resolve_model_dir"]


def load_model_dir(path: str | Path) -> tuple[TransformerSeq2Seq | RNNSeq2Seq, Tokenizers, RunConfig, dict]:
    """A translation model folder (or run folder): model in eval mode, tokenizers, config, card. Any other
    kind of model is a UsageError naming the folder."""
    from transduce.tasks import build_loaded  # the task registry sits above this module: looked up when called

    model, cfg, folder = build_loaded(path, Translator, "translate needs a translation model")
    return model, Tokenizers.load(folder.path, cfg.data.joint_vocab), cfg, folder.card  # type: ignore[return-value]


def _config_members(folder: Path, names: Sequence[str], field: str = "decode.ensemble") -> list[Path]:
    """``decode.ensemble`` (or ``field``) entries as model folders: relative to ``folder`` first, then as given."""
    members = []
    for name in names:
        for candidate in (folder / name, Path(name)):
            try:
                resolve_model_dir(candidate)
            except FileNotFoundError:
                continue
            members.append(candidate)
            break
        else:
            raise ValueError(f"{folder / 'config.yaml'}: {field}: {name} is not a model folder "
                             f"(looked in {folder} and the working directory)")
    return members


def _pieces(tokenizer: Tokenizer) -> list[str]:
    return tokenizer.id_to_piece(list(range(len(tokenizer))))


@dataclass
class Reranker:
    """A translation model that scores other models' outputs (``decode.rerank``) with its own tokenizers.
    ``reverse``: it was trained right to left (``data.reverse_target``); ``channel``: it translates the
    other way (target to source) and scores each source given the output."""

    model: torch.nn.Module
    tokenizers: Tokenizers
    reverse: bool
    channel: bool = False

    @classmethod
    def load(cls, path: str | Path, direction: tuple[str, str] | None = None) -> Reranker:
        """``direction``: the searcher's (source, target) languages; a reranker for (target, source) is a
        channel model, any other pair than those two is an error."""
        model, tokenizers, config, _ = load_model_dir(path)
        langs = (config.data.src_lang, config.data.tgt_lang)
        channel = direction is not None and langs == direction[::-1] and langs != direction
        if direction is not None and langs not in (direction, direction[::-1]):
            raise ValueError(f"{path}: translates {langs[0]}->{langs[1]}; a reranker of {direction[0]}->"
                             f"{direction[1]} output must translate that way or the reverse way")
        return cls(model, tokenizers, config.data.reverse_target, channel)

    def score(self, sources: list[str], outputs: list[list[str]], *, batch_size: int, device: str
              ) -> tuple[list[list[float]], list[list[int]]]:
        """Summed log-probabilities of each output given its source (a channel model: of the source given
        the output), and the lengths in tokens of what was scored."""
        flat_outputs = [text for row in outputs for text in row]
        flat_sources = [sources[i] for i, row in enumerate(outputs) for _ in row]  # one per output
        given, scored = (flat_outputs, flat_sources) if self.channel else (flat_sources, flat_outputs)
        flat_src, flat_tgt = self.tokenizers.src.encode(given), self.tokenizers.tgt.encode(scored)
        if self.reverse:
            flat_tgt = [ids[::-1] for ids in flat_tgt]
        flat = sequence_log_probs(self.model, flat_src, flat_tgt, batch_size=batch_size, device=device)
        scores, lengths, at = [], [], 0
        for row in outputs:
            scores.append(flat[at : at + len(row)])
            lengths.append([len(ids) for ids in flat_tgt[at : at + len(row)]])
            at += len(row)
        return scores, lengths


class ExportedSearch(Protocol):
    """A search that runs outside PyTorch (an exported model, ``transduce.export``): token ids in, hypotheses out."""

    runtime: str
    """What runs it, for messages: "ctranslate2"."""

    def search_ids(self, src_ids: list[list[int]], cfg: DecodeConfig,
                   progress: Callable[[int], object] | None = None) -> list[list[Hypothesis]]: ...


def quantize_int8(model: torch.nn.Module, path: str | Path) -> TransformerSeq2Seq:
    """``model`` with its Linear layers dynamically quantized to int8 (``torch.ao.quantization.quantize_dynamic``:
    int8 weights, activations quantized per batch; CPU only). Transformer models only: the RNN's cells stay fp32
    under dynamic Linear quantization, so it would gain nothing."""
    if not isinstance(model, TransformerSeq2Seq):
        raise ValueError(f"{path}: --quantize int8 is for Transformer translation models")
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao (not a dependency)
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.ao.quantization")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*quantize_per_tensor")
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    assert isinstance(quantized, TransformerSeq2Seq)  # a copy of the model, its Linear layers replaced
    return quantized


class Translator:
    """A loaded translation model with its tokenizers and default search settings. ``model`` is a PyTorch model
    searched by ``decoding``, or an ``ExportedSearch`` (an exported folder: ``transduce.export``)."""

    def __init__(self, model: TransformerSeq2Seq | RNNSeq2Seq | Ensemble | ExportedSearch, tokenizers: Tokenizers,
                 config: RunConfig, card: dict | None = None, device: str = "cpu",
                 rerankers: Sequence[Reranker] = ()) -> None:
        self.model = model.to(device) if isinstance(model, torch.nn.Module) else model
        self.tokenizers, self.config = tokenizers, config
        self.card = card or {}
        self.device = device
        self.rerankers = list(rerankers)
        for reranker in self.rerankers:
            reranker.model.to(device)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", ensemble: Sequence[str | Path] | None = None,
             rerank: Sequence[str | Path] | None = None, quantize: str | None = None) -> Translator:
        """The model in ``path``; with ``ensemble``, those models too, searched as one (their next-token
        probabilities averaged). ``None`` takes the members the model's ``decode.ensemble`` names (resolved in
        its folder), ``()`` loads the model alone. Every member must have the same tokenizers; search settings
        and card come from ``path``. ``rerank`` likewise names the models that rerank the n-best
        (``decode.rerank``; any tokenizers, each scores alone). ``quantize="int8"``: see ``quantize_int8``.
        An exported folder (``export.yaml``) loads through its runtime and decodes alone."""
        from transduce.export import load_exported  # the export layer sits above this module

        exported = load_exported(path, device)
        if exported is not None:
            if not isinstance(exported, Translator):
                raise ValueError(f"{path}: an exported model that does not translate")
            if ensemble or rerank or quantize:
                raise ValueError(f"{path}: an exported model decodes alone (no ensemble, reranking or --quantize: "
                                 "its quantization was chosen at export)")
            return exported
        if quantize not in (None, "int8"):
            raise ValueError(f"--quantize {quantize}: PyTorch models take int8")
        single, tokenizers, config, card = load_model_dir(path)
        folder = resolve_model_dir(path)
        if ensemble is None:
            ensemble = _config_members(folder, config.decode.ensemble)
        shares = config.decode.rerank_weights
        if rerank is None:
            rerank = _config_members(folder, config.decode.rerank, "decode.rerank")
            if shares:
                try:
                    rerank_shares(len(rerank), shares)
                except ValueError as err:
                    raise ValueError(f"{folder / 'config.yaml'}: {err}") from None
        else:
            shares = ()  # the config's shares belong to the config's own rerankers
        rerankers = [Reranker.load(p, (config.data.src_lang, config.data.tgt_lang)) for p in rerank]
        model: TransformerSeq2Seq | RNNSeq2Seq | Ensemble = single
        if ensemble:
            members: list[torch.nn.Module] = [single]
            for other in ensemble:
                member, other_toks, other_cfg, _ = load_model_dir(other)
                if other_cfg.decode.ensemble:
                    raise ValueError(f"{other}: names an ensemble of its own (decode.ensemble); members decode alone")
                for side in ("src", "tgt"):
                    if _pieces(getattr(other_toks, side)) != _pieces(getattr(tokenizers, side)):
                        raise ValueError(f"{other}: its {side} vocabulary differs from {path}'s; "
                                         "ensembled models must share their tokenizers")
                members.append(member)
            model = Ensemble(members).eval()
        if quantize == "int8":
            if device != "cpu":
                raise ValueError(f"--quantize int8 runs on the CPU, not {device}")
            model = quantize_int8(model, path)
        config = replace(config, decode=replace(config.decode, ensemble=tuple(str(p) for p in ensemble),
                                                rerank=tuple(str(p) for p in rerank), rerank_weights=shares))
        return cls(model, tokenizers, config, card, device=device, rerankers=rerankers)

    def search(self, sentences: list[str], **overrides: object) -> list[list[Hypothesis]]:
        """Hypotheses per sentence, tokens in reading order; ``overrides`` are DecodeConfig fields (beam=,
        nbest=, rerank_weight=, rerank_weights=, ...). With rerankers and a weight > 0 the beam's whole
        n-best is reranked."""
        cfg: DecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        if not 0.0 <= cfg.rerank_weight <= 1.0:
            raise ValueError(f"decode.rerank_weight must be in [0, 1], got {cfg.rerank_weight}")
        reranking = bool(self.rerankers) and cfg.rerank_weight > 0 and cfg.beam > 1
        if reranking:
            rerank_shares(len(self.rerankers), cfg.rerank_weights)  # a clear error before the search
        sources = [s.strip() for s in sentences]
        ids = self.tokenizers.src.encode(sources)
        wide = replace(cfg, nbest=max(cfg.nbest, cfg.beam)) if reranking else cfg
        # tqdm's disable=None: a bar on terminals only, never in pipes or logs
        with tqdm(total=len(ids), desc="translate", unit="sent", disable=None, leave=False) as bar:
            if isinstance(self.model, torch.nn.Module):
                hyps = search_corpus(self.model, ids, wide, device=self.device, progress=bar.update)
            else:
                hyps = self.model.search_ids(ids, wide, progress=bar.update)
        if self.config.data.reverse_target:  # a right-to-left model: back to reading order
            hyps = [[replace(h, tokens=h.tokens[::-1]) for h in row] for row in hyps]
        if not reranking:
            return hyps
        scores, lengths = self.reranker_scores(sources, hyps, batch_size=cfg.batch_size)
        return rerank_nbest(hyps, scores, lengths, weight=cfg.rerank_weight, len_penalty=cfg.len_penalty,
                            len_penalty_style=cfg.len_penalty_style, keep=cfg.nbest, shares=cfg.rerank_weights)

    def reranker_scores(self, sources: list[str], hyps: list[list[Hypothesis]], *, batch_size: int
                        ) -> tuple[list[list[list[float]]], list[list[list[int]]]]:
        """Every reranker's summed log-probabilities of the hypotheses (as text) and their lengths in its
        tokens, indexed [reranker][sentence][hypothesis]: the inputs of ``rerank_nbest``."""
        outputs = [self.tokenizers.tgt.decode([h.tokens for h in row]) for row in hyps]
        scored = [r.score(sources, outputs, batch_size=batch_size, device=self.device) for r in self.rerankers]
        return [s for s, _ in scored], [n for _, n in scored]

    def translate(self, sentences: list[str], **overrides: object) -> list[str]:
        """Detokenized best translation per sentence, in input order; empty in, empty out."""
        hyps = self.search(sentences, **overrides)
        return self.tokenizers.tgt.decode([h[0].tokens for h in hyps])

    def translate_nbest(self, sentences: list[str], nbest: int, **overrides: object) -> list[list[tuple[str, float]]]:
        """The ``nbest`` best (translation, score) pairs per sentence."""
        beam = max(nbest, int(overrides.pop("beam", self.config.decode.beam)))  # type: ignore[call-overload]
        hyps = self.search(sentences, beam=beam, nbest=nbest, **overrides)
        return [[(self.tokenizers.tgt.decode([h.tokens])[0], h.score) for h in row] for row in hyps]
