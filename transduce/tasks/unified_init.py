"""Component-wise initialization of a unified model from single-task model folders (the speech translation task's
copying, ``train.finetune.copy_component``, under the unified model's names):

- ``model.init_encoder_from: DIR`` (a speech model, task ctc): its convolutional subsampling starts the speech
  front end and its encoder blocks start the shared encoder (conformer blocks, or transformer layers and final
  norm); its CMVN and CTC head are not taken (the statistics are re-estimated, the vocabulary is this model's).
  The speech adapter then starts as the identity on the copied front end's output (``start_speech_adapter``), so
  the copied blocks first see what they saw in their own model.
- ``model.init_decoder_from: DIR`` (a translation model): its decoder starts the decoder (the tag rows of the
  embedding start fresh) and its tokenizer becomes this model's; its source embedding starts the text front end
  when the shapes agree.

A tensor missing on either side or of another shape is an error naming the field, the folder, the tensor and both
shapes; settings that change what the copied weights compute must agree too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from transduce.config import RunConfig
from transduce.errors import ConfigError
from transduce.models.adapters import BottleneckLayer
from transduce.models.unified import UnifiedModel
from transduce.nn.masks import padding_mask
from transduce.train.finetune import copy_component

ENCODER_NAMES = {"conformer": {"encoder.subsampling.": "modalities.speech.front.subsampling.",
                               "encoder.blocks.": "encoder.blocks."},
                 "transformer": {"encoder.subsampling.": "modalities.speech.front.subsampling.",
                                 "encoder.layers.": "encoder.blocks.", "encoder.final_norm.": "encoder.final_norm."}}
"""model.encoder -> {the speech model's name prefix: ours}."""
TEXT_EMBEDDING = ("encoder.embed.embedding.weight", "modalities.text.front.embedding.weight")
"""(a translation model's source embedding, the text front end's)."""


def given_tokenizer(cfg: RunConfig) -> tuple[str, str]:
    """(the SentencePiece file this run must use, the field that names it), or ("", "") to train one."""
    from transduce.tasks.speech_translation import source_tokenizer
    from transduce.translate import Translator

    if cfg.data.spm:
        return cfg.data.spm, "data.spm"
    if cfg.model.init_decoder_from:
        field = "model.init_decoder_from"
        return str(source_tokenizer(cfg.model.init_decoder_from, Translator, field)), field
    return "", ""


def _rename(state: dict[str, Tensor], names: dict[str, str]) -> dict[str, Tensor]:
    """The tensors of ``state`` under the prefixes of ``names``, renamed to ours."""
    return {ours + key[len(theirs):]: value for key, value in state.items()
            for theirs, ours in names.items() if key.startswith(theirs)}


def _agree(pairs: list[tuple[str, object, object]], field: str, path: str) -> None:
    """ConfigError for the first (setting, ours, the source's) that differ."""
    for name, ours, theirs in pairs:
        if ours != theirs:
            raise ConfigError(f"{name}: {ours!r} here, but {field} {path} has {theirs!r}")


def init_encoder(model: UnifiedModel, cfg: RunConfig, path: str) -> int:
    """The speech front end's subsampling and the shared encoder from the speech model folder ``path``."""
    from transduce.recognize import Recognizer
    from transduce.tasks.speech_translation import source_model

    field = "model.init_encoder_from"
    if "speech" not in model.modalities:
        raise ConfigError(f"{field}: this model has no speech input (model.inputs)")
    state, source = source_model(path, Recognizer, field)
    m, s = cfg.model, source.model
    _agree([("model.encoder", m.encoder, s.encoder), ("data.num_mel_bins", cfg.data.num_mel_bins,
                                                      source.data.num_mel_bins),
            ("data.sample_rate", cfg.data.sample_rate, source.data.sample_rate),
            ("model.utterance_norm", m.utterance_norm, s.utterance_norm), ("model.causal_conv", False, s.causal_conv)],
           field, path)
    names = ENCODER_NAMES[m.encoder]
    renamed = _rename(state, names)
    return sum(copy_component(model, renamed, prefix=ours, field=field, where=path) for ours in names.values())


def start_speech_adapter(model: UnifiedModel, feats: Tensor, feat_lens: Tensor) -> None:
    """The speech adapter as the identity on what the speech front end makes of ``feats`` (B, T, F) raw log-mel
    (training utterances): the projection = I, each bottleneck layer's up-projection = 0 (its residual passes x),
    and the Z-score's weight and bias = sqrt(D) x the std and mean of the front end's output over the real frames
    (its running statistics = those statistics), so normalizing and its affine cancel and the blocks get the
    front end's output scaled by sqrt(D), as in the speech models. Training moves it from there."""
    speech = model.modality("speech")
    proj, layers, norm = speech.adapter.proj, speech.adapter.layers, speech.adapter.norm
    if proj.in_features != proj.out_features:
        raise ConfigError(f"model.speech_dim: {proj.in_features} differs from model.dim {proj.out_features}; "
                          f"model.init_encoder_from needs them equal (leave speech_dim 0)")
    with torch.no_grad():
        proj.weight.copy_(torch.eye(proj.out_features))
        proj.bias.zero_()
        for layer in layers:
            assert isinstance(layer, BottleneckLayer)
            layer.up.weight.zero_()
            layer.up.bias.zero_()
        h, lens = speech.front(feats, feat_lens)  # (B, N, D)
        mean, var = norm.statistics(h, padding_mask(lens, h.size(1)))
        norm.mean.copy_(mean)
        norm.var.copy_(var)
        scale = math.sqrt(proj.out_features)  # the speech encoders scale their input by sqrt(D) (nn/conformer.py)
        norm.weight.copy_(torch.sqrt(var + norm.eps) * scale)
        norm.bias.copy_(mean * scale)


def init_decoder(model: UnifiedModel, cfg: RunConfig, path: str, log: Callable[[str], None]) -> int:
    """The decoder (and, when it fits, the text embedding) from the translation model folder ``path``."""
    from transduce.tasks.speech_translation import source_model
    from transduce.translate import Translator

    field = "model.init_decoder_from"
    state, source = source_model(path, Translator, field)
    _agree([("model.decoder_pre_norm", cfg.model.decoder_pre_norm, source.model.pre_norm),
            ("model.decoder_positions", cfg.model.decoder_positions, source.model.positions)], field, path)
    grown = {"decoder.embed.embedding.weight", "decoder.output.weight"}
    count = copy_component(model, state, prefix="decoder.", field=field, where=path, grown=grown)
    theirs, ours = TEXT_EMBEDDING
    own = model.state_dict().get(ours)
    if own is not None and theirs in state:
        if state[theirs].shape == own.shape:
            count += copy_component(model, {ours: state[theirs]}, prefix=ours, field=field, where=path)
        else:
            log(f"{field}: text embedding not taken ({theirs} is {tuple(state[theirs].shape)} in {path}, "
                f"{ours} {tuple(own.shape)} here)")
    return count


def init_components(model: UnifiedModel, cfg: RunConfig, log: Callable[[str], None]) -> None:
    """Both initializations the config asks for, each logged with its tensor count."""
    m = cfg.model
    if m.init_encoder_from:
        log(f"model.init_encoder_from: {init_encoder(model, cfg, m.init_encoder_from)} tensors from "
            f"{m.init_encoder_from}")
    if m.init_decoder_from:
        log(f"model.init_decoder_from: {init_decoder(model, cfg, m.init_decoder_from, log)} tensors from "
            f"{m.init_decoder_from}")
