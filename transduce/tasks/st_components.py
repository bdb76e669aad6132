"""Component-wise starts of speech (and image) translation runs: the encoder and CTC head from a recognizer's model
folder (``model.init_encoder_from``), the decoder from a translation model's (``model.init_decoder_from``), their
tokenizers, and the settings both sides must share."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from transduce.config import RunConfig
from transduce.data.tokenizer import Tokenizer, train_sentencepiece
from transduce.errors import ConfigError
from transduce.models.st import STModelConfig
from transduce.train.finetune import copy_component


def source_model(path: str, needs: type, field: str) -> tuple[dict[str, Tensor], RunConfig]:
    """The full state dict (tied aliases included) and the config of the model folder ``path``, whose kind's
    inference object must be a ``needs``; errors name ``field``."""
    from transduce.tasks import require

    try:
        kind, cfg, folder = require(path, needs, f"{field} needs {NEEDS[field]}")
        model = folder.load_into(kind.build_model(cfg, folder.path), kind.tied_aliases(cfg))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{field}: {err}") from None
    return model.state_dict(), cfg


def source_tokenizer(path: str, needs: type, field: str) -> Path:
    """The last tokenizer file of the model folder ``path`` (a speech model's transcript pieces, a translation
    model's target pieces); errors name ``field``."""
    from transduce.tasks import require

    try:
        kind, cfg, folder = require(path, needs, f"{field} needs {NEEDS[field]}")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{field}: {err}") from None
    return kind.folder_files(cfg, folder.path)[-1]


NEEDS = {"model.init_encoder_from": "a speech model", "model.init_decoder_from": "a translation model"}
SAME = {"model.init_encoder_from": tuple((k, k) for k in ("data.sample_rate", "data.num_mel_bins", "model.encoder",
                                                         "model.causal_conv", "model.utterance_norm")),
        "model.init_decoder_from": (("model.decoder_pre_norm", "model.pre_norm"),
                                    ("model.decoder_positions", "model.positions"))}
"""Settings that hold no weights but change what the copied weights compute: (ours, the source's) must agree."""


def check_settings(cfg: RunConfig, source: RunConfig, field: str, path: str) -> None:
    """A ConfigError naming the first of ``SAME[field]`` where this run and the source model differ."""
    def get(config: RunConfig, dotted: str) -> object:
        section, key = dotted.split(".")
        return getattr(getattr(config, section), key, None)

    for ours, theirs in SAME[field]:
        if get(cfg, ours) != get(source, theirs):
            raise ConfigError(f"{ours}: {get(cfg, ours)!r} here, but {field} {path} has {theirs} "
                              f"{get(source, theirs)!r}")


def _sources(m: STModelConfig) -> dict[str, tuple[type, str]]:
    """{config field: (inference class its folder must have, path)} of the components this run starts from."""
    from transduce.recognize import Recognizer
    from transduce.translate import Translator

    return {name: (cls, path) for name, cls, path in (("model.init_encoder_from", Recognizer, m.init_encoder_from),
                                                      ("model.init_decoder_from", Translator, m.init_decoder_from))
            if path}


def init_st_components(model: nn.Module, cfg: RunConfig, log: Callable[[str], None]) -> None:
    """model.init_encoder_from: encoder and CTC head; model.init_decoder_from: decoder (tag rows fresh)."""
    parts = {"model.init_encoder_from": ("encoder.", "head."), "model.init_decoder_from": ("decoder.",)}
    grown = {"decoder.embed.embedding.weight", "decoder.output.weight"}
    for name, (needs, path) in _sources(cfg.model).items():
        state, source = source_model(path, needs, name)
        check_settings(cfg, source, name, path)
        count = sum(copy_component(model, state, prefix=prefix, field=name, where=path, grown=grown)
                    for prefix in parts[name])
        log(f"{name}: {count} tensors from {path}")


def st_tokenizer(path: Path, m: STModelConfig, field: str, kind: str, size: int, texts: list[str], given: str,
                 log: Callable[[str], None]) -> Tokenizer:
    """The run folder's tokenizer at ``path``; the first time, the component source's (``field``'s folder in
    ``m``), or ``given`` (data.tgt_spm), or one trained on ``texts`` (``kind``, ``size``)."""
    source = _sources(m).get(field)
    if given:
        field = "data.tgt_spm"
        if not Path(given).is_file():
            raise ConfigError(f"data.tgt_spm: {given}: no such SentencePiece model")
    elif source is not None:
        given = str(source_tokenizer(source[1], source[0], field))
    if given:
        if path.is_file() and path.read_bytes() != Path(given).read_bytes():
            raise ConfigError(f"{field}: {path} differs from {given}: start a new run folder")
        if not path.is_file():
            shutil.copy(given, path)
            log(f"{path.name}: taken from {given}")
        return Tokenizer(path)
    if path.is_file():
        return Tokenizer(path)
    tok = train_sentencepiece(texts, path, vocab_size=size, model_type=kind)
    log(f"trained {kind} tokenizer {path.name}: {len(tok)} pieces")
    return tok
