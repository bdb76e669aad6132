"""CTranslate2 export of Transformer translation models: our weights into a ``ctranslate2.specs.TransformerSpec``.

How our Transformer maps onto CTranslate2's (as its own fairseq converter maps fairseq's):
- self-attention: ``q_proj`` and the fused ``kv_proj`` ((2D, D): keys then values) -> one fused (3D, D) QKV
  projection; cross-attention: ``q_proj`` -> linear[0], ``kv_proj`` as it is -> linear[1] (fused KV);
  ``out_proj`` -> linear[2];
- layer norms: each residual's norm is the sublayer's ``layer_norm`` (applied before the sublayer when pre-LN,
  after the residual sum when post-LN); pre-LN models add the stacks' final norms (epsilon 1e-5, PyTorch's);
- embeddings scaled by sqrt(D); positions (sinusoidal or learned) written as the table our model adds, from
  position 0 (CTranslate2 numbers positions from 0 too); shared embeddings and the tied output projection are
  the same array (CTranslate2 stores aliased variables once);
- vocabularies: the SentencePiece pieces in id order, so CTranslate2's token ids are ours; pad/unk/bos/eos are
  our ids 0/1/2/3; the source gets EOS appended (``add_source_eos``) and the decoder starts from BOS.

The exported folder: ``ctranslate2/`` (model.bin, config.json, vocabularies), ``config.yaml`` and the tokenizer
copied from the source folder, ``export.yaml`` and a README.md card. ``load`` returns a ``Translator`` whose
search runs in CTranslate2 (``ct2_translator.CT2Search``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transduce.data.tokenizer import BOS, EOS, PAD, UNK, Tokenizer
from transduce.errors import ConfigError
from transduce.export import copy_model_files, require_files, write_export_info
from transduce.export.ct2_translator import MODEL_DIR, choose_compute_type, load_translator

if TYPE_CHECKING:
    from torch import Tensor

    from transduce.models.transformer import Embedder, TransformerConfig, TransformerSeq2Seq

TASKS: tuple[str, ...] = ("translation",)
"""Recipe tasks this format exports (Transformer encoder-decoders)."""
QUANTIZE: tuple[str, ...] = ("int8", "int8_float32", "int16", "float16")
"""Weight types CTranslate2 can store (``None``: float32)."""
LAYER_NORM_EPSILON = 1e-5  # nn.LayerNorm's default, which every norm of our Transformer uses

__all__ = ["QUANTIZE", "TASKS", "export", "load"]


def _np(tensor: Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _linear(spec: Any, weight: Tensor, bias: Tensor | None) -> None:
    spec.weight = _np(weight)
    if bias is not None:
        spec.bias = _np(bias)


def _norm(spec: Any, norm: Any) -> None:
    spec.gamma, spec.beta = _np(norm.weight), _np(norm.bias)


def _attention(spec: Any, attn: Any, *, fused_qkv: bool) -> None:
    """Self-attention: one (3D, D) QKV projection; cross-attention: Q (D, D) and the fused KV (2D, D)."""
    if fused_qkv:
        import torch

        _linear(spec.linear[0], torch.cat([attn.q_proj.weight, attn.kv_proj.weight]),  # (3D, D)
                torch.cat([attn.q_proj.bias, attn.kv_proj.bias]))  # (3D,)
    else:
        _linear(spec.linear[0], attn.q_proj.weight, attn.q_proj.bias)
        _linear(spec.linear[1], attn.kv_proj.weight, attn.kv_proj.bias)  # (2D, D): keys then values
    _linear(spec.linear[-1], attn.out_proj.weight, attn.out_proj.bias)


def _ffn(spec: Any, layer: Any) -> None:
    first, _, _, second = layer.ffn.net  # Linear, activation, Dropout, Linear
    _linear(spec.linear_0, first.weight, first.bias)
    _linear(spec.linear_1, second.weight, second.bias)
    _norm(spec.layer_norm, layer.ffn_res.norm)


def _inputs(spec: Any, embed: Embedder, max_positions: int) -> None:
    """Token embeddings (scaled by sqrt(D), as ours) and the position table our model adds (L, D); zeros where
    positions live in self-attention but the spec still adds a table (a rotary encoder)."""
    table = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    table.weight = _np(embed.embedding.weight)
    spec.scale_embeddings = True
    if embed.positions is not None:
        spec.position_encodings.encodings = _np(embed.positions(max_positions, 0))  # (L, D) from position 0
    elif hasattr(spec, "position_encodings"):
        spec.position_encodings.encodings = np.zeros((max_positions, table.weight.shape[1]), dtype=np.float32)


def _stacks(cfg: TransformerConfig, activation: Any) -> Any:
    """An empty ``TransformerSpec`` of ``cfg``'s shape. shaw: CTranslate2's Shaw et al. relative positions in
    self-attention (``relative_position``); rope: rotary on every head dimension, interleaved pairs as ours."""
    from ctranslate2.specs import transformer_spec

    layers = (cfg.encoder_layers, cfg.decoder_layers)
    if cfg.positions not in ("shaw", "rope"):
        return transformer_spec.TransformerSpec.from_config(layers, cfg.heads, pre_norm=cfg.pre_norm,
                                                            activation=activation)
    inside = {"relative_position": True} if cfg.positions == "shaw" else {"rotary_dim": 0, "rotary_interleave": True}
    return transformer_spec.TransformerSpec(
        transformer_spec.TransformerEncoderSpec(layers[0], cfg.heads, pre_norm=cfg.pre_norm, activation=activation,
                                                **inside),
        transformer_spec.TransformerDecoderSpec(layers[1], cfg.heads, pre_norm=cfg.pre_norm, activation=activation,
                                                **inside))


def _self_positions(spec: Any, attn: Any) -> None:
    """Shaw tables: our key table (2K + 1, E); the value term, which we do not have, as zeros."""
    if hasattr(attn.positions, "keys"):
        spec.relative_position_keys = _np(attn.positions.keys)
        spec.relative_position_values = np.zeros_like(spec.relative_position_keys)


def fill_spec(model: TransformerSeq2Seq, cfg: TransformerConfig) -> Any:
    """A ``TransformerSpec`` holding ``model``'s weights (vocabularies not yet registered)."""
    from ctranslate2.specs import common_spec
    from torch import nn

    encoder, decoder = model.encoder, model.decoder
    enc_layers: list[Any] = list(encoder.layers)
    dec_layers: list[Any] = list(decoder.layers)
    activation = type(enc_layers[0].ffn.net[1])
    activations = {nn.ReLU: common_spec.Activation.RELU, nn.GELU: common_spec.Activation.GELU,
                   nn.SiLU: common_spec.Activation.SWISH}
    spec = _stacks(cfg, activations[activation])
    _inputs(spec.encoder, encoder.embed, cfg.max_positions)
    for layer_spec, layer in zip(spec.encoder.layer, enc_layers, strict=True):
        _attention(layer_spec.self_attention, layer.attn, fused_qkv=True)
        _self_positions(layer_spec.self_attention, layer.attn)
        _norm(layer_spec.self_attention.layer_norm, layer.attn_res.norm)
        _ffn(layer_spec.ffn, layer)
    _inputs(spec.decoder, decoder.embed, cfg.max_positions)
    for layer_spec, layer in zip(spec.decoder.layer, dec_layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attn, fused_qkv=True)
        _self_positions(layer_spec.self_attention, layer.self_attn)
        _norm(layer_spec.self_attention.layer_norm, layer.self_res.norm)
        _attention(layer_spec.attention, layer.cross_attn, fused_qkv=False)
        _norm(layer_spec.attention.layer_norm, layer.cross_res.norm)
        _ffn(layer_spec.ffn, layer)
    _linear(spec.decoder.projection, decoder.output.weight, decoder.output.bias)  # tied: the embedding array
    if cfg.pre_norm:  # post-LN stacks have no final norm (nn.Identity), nor has CTranslate2's
        _norm(spec.encoder.layer_norm, encoder.final_norm)
        _norm(spec.decoder.layer_norm, decoder.final_norm)
    return spec


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's pieces in id order: CTranslate2's token ids are then ours. Pieces must be unique."""
    pieces = tokenizer.id_to_piece(list(range(len(tokenizer))))
    if len(set(pieces)) != len(pieces):
        raise ConfigError(f"{tokenizer.path}: repeated pieces; CTranslate2 needs one piece per id")
    return pieces


def register_vocabularies(spec: Any, src: Tokenizer, tgt: Tokenizer) -> None:
    """Source/target pieces and our special tokens: EOS appended to the source, BOS starts the decoder."""
    spec.register_source_vocabulary(vocabulary(src))
    target = vocabulary(tgt)
    spec.register_target_vocabulary(target)
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = target[UNK], target[BOS], target[EOS]
    spec.config.decoder_start_token = target[BOS]
    spec.config.add_source_bos, spec.config.add_source_eos = False, True
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    assert PAD == 0  # CTranslate2 pads internally by length; id 0 is never fed as a token


def _spec_of(src: Path) -> Any:
    from ctranslate2.converters.converter import Converter

    from transduce.translate import load_model_dir

    model, tokenizers, cfg, _ = load_model_dir(src)

    class _Converter(Converter):  # CTranslate2's converter base: validate, quantize, save
        def _load(self) -> Any:
            spec = fill_spec(model, cfg.model)  # type: ignore[arg-type]
            register_vocabularies(spec, tokenizers.src, tokenizers.tgt)
            return spec

    return _Converter()


def parity(src: Path, out: Path, *, sentences: int = 16, seed: int = 0) -> dict[str, Any]:
    """The export against its source on ``sentences`` random token sequences (any model, no data needed): the
    largest difference of a teacher-forced token log-probability (CTranslate2 ``score_batch`` vs our forward),
    and how many greedy outputs are the same tokens."""
    import torch

    from transduce.translate import Translator

    ours, theirs = Translator.load(src, ensemble=(), rerank=()), load(out)
    model: Any = ours.model
    search: Any = theirs.model
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 16, (sentences, 2), generator=generator).tolist()
    low, high = EOS + 1, min(len(ours.tokenizers.src), len(ours.tokenizers.tgt))
    pairs = [(torch.randint(low, high, (s,), generator=generator).tolist(),
              torch.randint(low, high, (t,), generator=generator).tolist()) for s, t in lengths]
    scored = search.translator.score_batch([[search.src_pieces[i] for i in s] for s, _ in pairs],
                                           [[search.tgt_pieces[i] for i in t] for _, t in pairs])
    worst = 0.0
    with torch.inference_mode():
        for (s, t), result in zip(pairs, scored, strict=True):
            src_t, tgt_in = torch.tensor([s + [EOS]]), torch.tensor([[BOS, *t]])
            log_probs = model(src_t, torch.tensor([len(s) + 1]), tgt_in)[0].log_softmax(-1)  # (T, V)
            expected = log_probs.gather(1, torch.tensor([*t, EOS])[:, None])[:, 0]  # (T,)
            worst = max(worst, float((expected - torch.tensor(result.log_probs)).abs().max()))
    greedy = {"beam": 1, "nbest": 1}
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(
        search_corpus_of(ours, [s for s, _ in pairs], greedy), search_corpus_of(theirs, [s for s, _ in pairs], greedy),
        strict=True))
    return {"sentences": sentences, "max_token_log_prob_diff": worst, "greedy_identical": same}


def search_corpus_of(translator: Any, src_ids: list[list[int]], overrides: dict[str, int]) -> list:
    """``translator``'s hypotheses for token-id sentences (no text round trip)."""
    from dataclasses import replace

    from torch import nn

    from transduce.decoding.corpus import search_corpus

    cfg = replace(translator.config.decode, **overrides)
    model: Any = translator.model
    if isinstance(translator.model, nn.Module):  # narrows translator.model; ``model`` stays Any for search_corpus
        return search_corpus(model, src_ids, cfg)
    return model.search_ids(src_ids, cfg)


def export(src: Path, out: Path, quantize: str | None) -> None:
    """Write the exported folder ``out`` from the translation model folder ``src``; ``quantize``: the stored
    weight type (None: float32). The card records the parity measured against ``src``."""
    from transduce.tasks import open_folder

    _, cfg, _ = open_folder(src)
    converter = _spec_of(src)  # a model that is not a translation model: UsageError naming the folder
    copied = copy_model_files(src, out)
    converter.convert(str(out / MODEL_DIR), quantization=quantize, force=True)
    compute_type = choose_compute_type(quantize, "cpu")
    info = {"format": "ctranslate2", "quantize": quantize, "compute_type": compute_type, "source": str(src),
            "files": [*copied, MODEL_DIR]}
    write_export_info(out, info)
    (out / "README.md").write_text("(being written)\n")  # load() checks the card is there
    measured = parity(src, out)
    write_export_info(out, {**info, "parity": measured})
    (out / "README.md").write_text(card(src, out, quantize, compute_type, cfg, measured))


def card(src: Path, out: Path, quantize: str | None, compute_type: str, cfg: Any, measured: dict[str, Any]) -> str:
    """The exported folder's README.md."""
    import ctranslate2

    m, d = cfg.model, cfg.decode
    return f"""# {out.name}: CTranslate2 export of {src.name}

The {cfg.data.src_lang}->{cfg.data.tgt_lang} Transformer translation model `{src}` ({m.encoder_layers}+\
{m.decoder_layers} layers, d={m.dim}, {m.heads} heads, {'pre' if m.pre_norm else 'post'}-LN, {m.positions} \
positions) converted for CTranslate2 {ctranslate2.__version__} by `transduce export`. Tokenization and
detokenization stay ours (the SentencePiece model copied here); CTranslate2 runs the search.

- format: ctranslate2 (`{MODEL_DIR}/`), weights stored as {quantize or 'float32'}
- compute type: {compute_type} on the CPU that exported it; chosen again at load from what the machine supports
  (`ctranslate2.get_supported_compute_types`)
- search: beam {d.beam}, length penalty {d.len_penalty} ({d.len_penalty_style}), max length {d.max_len_a} x
  source + {d.max_len_b} (config.yaml `decode`, overridable as for the PyTorch model)

## Run it

    transduce translate --model {out} "A man is riding a bicycle."
    transduce evaluate --model {out} --src test.{cfg.data.src_lang} --ref test.{cfg.data.tgt_lang}

or in Python: `Translator.load("{out}").translate([...])` (`from transduce.translate import Translator`).

## Parity with {src.name}, measured at export

On {measured['sentences']} random token sequences: teacher-forced token log-probabilities differ by at most
{measured['max_token_log_prob_diff']:.2e}; greedy outputs are the same tokens for {measured['greedy_identical']} of
{measured['sentences']}.

## Limits

It decodes alone: no ensembles, reranking, coverage penalty or GNMT length penalty (decode `{src}` for those).
At the length limit our search forces EOS while CTranslate2 ends on its best token (the hypothesis keeps the
limit's tokens).
"""


def load(path: Path, device: str = "cpu") -> Any:
    """The ``Translator`` of an exported folder, searching with ``ctranslate2.Translator``."""
    require_files(path, ["config.yaml", "README.md", f"{MODEL_DIR}/model.bin", f"{MODEL_DIR}/config.json"])
    return load_translator(path, device)
