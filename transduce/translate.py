"""Python API: ``Translator.load(DIR).translate([...])``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from tqdm import tqdm

from transduce.config import DecodeConfig, RunConfig, from_dict
from transduce.data.tokenizer import PAD, Tokenizer
from transduce.decoding.corpus import search_corpus
from transduce.decoding.ensemble import Ensemble
from transduce.decoding.hypothesis import Hypothesis
from transduce.models import rnn
from transduce.models.transformer import TransformerSeq2Seq, build, tied_aliases
from transduce.train.corpus import Tokenizers


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, or a run folder holding one in ``model/``."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    if (path / "model" / "model.safetensors").is_file():
        return path / "model"
    raise FileNotFoundError(f"{path}: no model.safetensors here or in {path / 'model'}")


def load_model_dir(path: str | Path) -> tuple[TransformerSeq2Seq | rnn.RNNSeq2Seq, Tokenizers, RunConfig, dict]:
    folder = resolve_model_dir(path)
    cfg = from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
    toks = Tokenizers.load(folder, cfg.data.joint_vocab)
    model: TransformerSeq2Seq | rnn.RNNSeq2Seq
    if cfg.task == "rnn_translation":
        model, aliases = rnn.build_rnn(cfg.model, len(toks.src), len(toks.tgt), PAD), rnn.tied_aliases(cfg.model)
    else:
        model, aliases = build(cfg.model, len(toks.src), len(toks.tgt), PAD), tied_aliases(cfg.model)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or set(missing) - aliases:
        raise ValueError(f"{folder}: weights do not match config (missing {missing}, unexpected {unexpected})")
    card_path = folder / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return model.eval(), toks, cfg, card


def _config_members(folder: Path, names: Sequence[str]) -> list[Path]:
    """``decode.ensemble`` entries as model folders: relative to ``folder`` first, then as given."""
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
            raise ValueError(f"{folder / 'config.yaml'}: decode.ensemble: {name} is not a model folder "
                             f"(looked in {folder} and the working directory)")
    return members


def _pieces(tokenizer: Tokenizer) -> list[str]:
    return tokenizer.id_to_piece(list(range(len(tokenizer))))


class Translator:
    """A loaded translation model with its tokenizers and default search settings."""

    def __init__(self, model: TransformerSeq2Seq | rnn.RNNSeq2Seq | Ensemble, tokenizers: Tokenizers, config: RunConfig,
                 card: dict | None = None, device: str = "cpu") -> None:
        self.model, self.tokenizers, self.config = model.to(device), tokenizers, config
        self.card = card or {}
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", ensemble: Sequence[str | Path] | None = None) -> Translator:
        """The model in ``path``; with ``ensemble``, those models too, searched as one (their next-token
        probabilities averaged). ``None`` takes the members the model's ``decode.ensemble`` names (resolved in
        its folder), ``()`` loads the model alone. Every member must have the same tokenizers; search settings
        and card come from ``path``."""
        single, tokenizers, config, card = load_model_dir(path)
        if ensemble is None:
            ensemble = _config_members(resolve_model_dir(path), config.decode.ensemble)
        model: TransformerSeq2Seq | rnn.RNNSeq2Seq | Ensemble = single
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
        config = replace(config, decode=replace(config.decode, ensemble=tuple(str(p) for p in ensemble)))
        return cls(model, tokenizers, config, card, device=device)

    def search(self, sentences: list[str], **overrides: object) -> list[list[Hypothesis]]:
        """Hypotheses per sentence; ``overrides`` are DecodeConfig fields (beam=, nbest=, ...)."""
        cfg: DecodeConfig = replace(self.config.decode, **overrides)  # type: ignore[arg-type]
        ids = self.tokenizers.src.encode([s.strip() for s in sentences])
        # tqdm's disable=None: a bar on terminals only, never in pipes or logs
        with tqdm(total=len(ids), desc="translate", unit="sent", disable=None, leave=False) as bar:
            return search_corpus(self.model, ids, cfg, device=self.device, progress=bar.update)

    def translate(self, sentences: list[str], **overrides: object) -> list[str]:
        """Detokenized best translation per sentence, in input order; empty in, empty out."""
        hyps = self.search(sentences, **overrides)
        return self.tokenizers.tgt.decode([h[0].tokens for h in hyps])

    def translate_nbest(self, sentences: list[str], nbest: int, **overrides: object) -> list[list[tuple[str, float]]]:
        """The ``nbest`` best (translation, score) pairs per sentence."""
        beam = max(nbest, int(overrides.pop("beam", self.config.decode.beam)))  # type: ignore[call-overload]
        hyps = self.search(sentences, beam=beam, nbest=nbest, **overrides)
        return [[(self.tokenizers.tgt.decode([h.tokens])[0], h.score) for h in row] for row in hyps]
