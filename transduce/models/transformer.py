"""Transformer encoder-decoder for sequence-to-sequence tasks (Vaswani et al. 2017).

Dimension letters: B batch (x beams), S source length, T target length, D model size, V vocab.
Contract: ``encode(src, src_lens) -> (memory, memory_lens)``;
``step(tokens, memory, state) -> (log_probs, state)`` with ``init_state(memory, memory_lens)``;
cross-attention weights from ``features_with_attention`` (teacher forced, a chosen layer and head)
and ``step_with_attention`` (the last layer's, averaged over heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from transduce.errors import ConfigError
from transduce.nn.attention import MultiHeadAttention
from transduce.nn.ffn import FeedForward
from transduce.nn.masks import attention_mask, padding_mask
from transduce.nn.positions import ADDED_POSITIONS, ATTENTION_POSITIONS, build_attention_positions, build_positions
from transduce.nn.state import DecoderLayerState, DecoderState
from transduce.nn.transformer import DecoderLayer, EncoderLayer
from transduce.nn.tying import shared_tensor_names


@dataclass(kw_only=True)
class TransformerConfig:
    """Sizes and regularization of a Transformer encoder-decoder."""

    dim: int = 256
    """Model (embedding) size D."""
    heads: int = 4
    """Attention heads; must divide dim."""
    ffn_dim: int = 1024
    """Hidden size of the feed-forward blocks."""
    encoder_layers: int = 3
    """Number of encoder layers."""
    decoder_layers: int = 3
    """Number of decoder layers."""
    dropout: float = 0.1
    """Dropout on embeddings and residual branches."""
    attention_dropout: float = 0.0
    """Dropout on attention weights."""
    activation_dropout: float = 0.0
    """Dropout after the feed-forward activation."""
    pre_norm: bool = True
    """Layer norm before each sublayer (pre-LN) instead of after (post-LN)."""
    positions: str = "sinusoidal"
    """Positions: sinusoidal or learned (added to the embeddings), shaw (clipped relative keys in self-attention,
    Shaw et al. 2018) or rope (rotary queries and keys in self-attention, Su et al. 2021)."""
    max_positions: int = 512
    """Longest sequence the position table covers (sinusoidal, learned)."""
    max_relative: int = 16
    """Clipping distance K of shaw positions: distances beyond +-K share one embedding."""
    share_embeddings: bool = True
    """One embedding table for source and target (needs a joint vocabulary)."""
    tie_output: bool = True
    """Use the target embedding as the output projection."""
    init: str = "fairseq"
    """Initialization of the layers: fairseq (as fairseq's Transformer) or xavier (the one before: Xavier-uniform
    on every matrix, fused key/value projection included, zero biases). Only matters for training from scratch."""

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"model.init: unknown initialization {self.init!r} (known: {', '.join(INITS)})")
        known = ADDED_POSITIONS + ATTENTION_POSITIONS
        if self.positions not in known:
            raise ConfigError(f"model.positions: unknown {self.positions!r} (known: {', '.join(known)})")
        if self.positions == "shaw" and self.max_relative < 1:
            raise ConfigError(f"model.max_relative: must be >= 1 for shaw positions, got {self.max_relative}")
        if self.positions == "rope" and self.heads > 0 and (self.dim // self.heads) % 2:
            raise ConfigError(f"model.positions: rope needs an even head size, got dim {self.dim} / heads "
                              f"{self.heads} = {self.dim // self.heads}")


class Embedder(nn.Module):
    """Token embedding x sqrt(D) + positions (None: they live in self-attention), then dropout. (B, T) -> (B, T, D)."""

    def __init__(self, embedding: nn.Embedding, positions: nn.Module | None, dropout: float) -> None:
        super().__init__()
        self.embedding = embedding
        self.positions = positions
        self.scale = math.sqrt(embedding.embedding_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        x = self.embedding(tokens) * self.scale
        if self.positions is not None:
            x = x + self.positions(tokens.size(1), offset)
        return self.dropout(x)


class TransformerEncoder(nn.Module):
    def __init__(self, embed: Embedder, layers: list[EncoderLayer], final_norm: nn.Module) -> None:
        super().__init__()
        self.embed = embed
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) token ids, src_lens (B,) -> memory (B, S, D), memory_lens (B,)."""
        mask = attention_mask(padding_mask(src_lens, src.size(1)))  # (B, 1, 1, S)
        x = self.embed(src)
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x), src_lens


class TransformerDecoder(nn.Module):
    def __init__(
        self, embed: Embedder, layers: list[DecoderLayer], final_norm: nn.Module, output: nn.Linear
    ) -> None:
        super().__init__()
        self.embed = embed
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.output = output

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> DecoderState:
        """Empty caches for decoding against ``memory`` (B, S, D)."""
        mask = padding_mask(memory_lens, memory.size(1))  # (B, S)
        return DecoderState([DecoderLayerState(None, None) for _ in self.layers], mask, 0)

    def features(
        self, tgt_in: Tensor, memory: Tensor, memory_lens: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Teacher forcing: tgt_in (B, T) -> final hidden states (B, T, D) and per-layer
        cross-attention weights (B, H, T, S) when ``need_weights``."""
        mask = attention_mask(padding_mask(memory_lens, memory.size(1)))  # (B, 1, 1, S)
        x = self.embed(tgt_in)
        weights = []
        for layer in self.layers:
            x, _, w = layer(x, memory, mask, None, need_weights)
            if w is not None:
                weights.append(w)
        return self.final_norm(x), weights

    def forward(self, tgt_in: Tensor, memory: Tensor, memory_lens: Tensor) -> Tensor:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V)."""
        return self.output(self.features(tgt_in, memory, memory_lens)[0])

    def step(self, tokens: Tensor, memory: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One step: tokens (B,) -> log-probs (B, V) of the next token, and the new state."""
        log_probs, state, _ = self._step(tokens, memory, state, need_weights=False)
        return log_probs, state

    def step_with_attention(self, tokens: Tensor, memory: Tensor, state: DecoderState
                            ) -> tuple[Tensor, DecoderState, Tensor]:
        """``step`` plus the last layer's cross-attention weights averaged over heads (B, S)."""
        log_probs, state, weights = self._step(tokens, memory, state, need_weights=True)
        assert weights is not None
        return log_probs, state, weights[:, :, 0].mean(dim=1)  # (B, H, 1, S) -> (B, S)

    def _step(self, tokens: Tensor, memory: Tensor, state: DecoderState, *, need_weights: bool
              ) -> tuple[Tensor, DecoderState, Tensor | None]:
        x = self.embed(tokens[:, None], offset=state.steps)  # (B, 1, D)
        mask = state.memory_mask[:, None, None, :]  # (B, 1, 1, S)
        layers = []
        weights = None
        for i, (layer, layer_state) in enumerate(zip(self.layers, state.layers, strict=True)):
            x, new_state, weights = layer(x, memory, mask, layer_state, need_weights and i == len(self.layers) - 1)
            layers.append(new_state)
        logits = self.output(self.final_norm(x[:, 0]))  # (B, V)
        return logits.float().log_softmax(-1), DecoderState(layers, state.memory_mask, state.steps + 1), weights


class TransformerSeq2Seq(nn.Module):
    """Encoder + decoder. ``forward`` returns teacher-forced logits; the loss lives in train/."""

    def __init__(self, encoder: TransformerEncoder, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder.encode(src, src_lens)

    def forward(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), src_lens (B,), tgt_in (B, T) -> logits (B, T, V)."""
        memory, memory_lens = self.encode(src, src_lens)
        return self.decoder(tgt_in, memory, memory_lens)

    def features(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> Tensor:
        """Decoder hidden states (B, T, D) before the output projection (for fused losses)."""
        memory, memory_lens = self.encode(src, src_lens)
        return self.decoder.features(tgt_in, memory, memory_lens)[0]

    def features_with_attention(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor, *, layer: int = -1,
                                head: int | None = None) -> tuple[Tensor, Tensor]:
        """Teacher forcing: hidden states (B, T, D) and the cross-attention weights (B, T, S) of
        decoder layer ``layer`` (negative counts from the end), of one ``head`` or averaged over heads."""
        if not -len(self.decoder.layers) <= layer < len(self.decoder.layers):
            raise ValueError(f"attention layer {layer} out of range: the decoder has {len(self.decoder.layers)}")
        heads = int(self.decoder.layers[0].cross_attn.heads)  # type: ignore[union-attr, arg-type]
        if head is not None and not 0 <= head < heads:
            raise ValueError(f"attention head {head} out of range: layers have {heads} heads")
        memory, memory_lens = self.encode(src, src_lens)
        hidden, weights = self.decoder.features(tgt_in, memory, memory_lens, need_weights=True)
        chosen = weights[layer]  # (B, H, T, S)
        return hidden, chosen.mean(dim=1) if head is None else chosen[:, head]

    def step_with_attention(self, tokens: Tensor, memory: Tensor, state: DecoderState
                            ) -> tuple[Tensor, DecoderState, Tensor]:
        return self.decoder.step_with_attention(tokens, memory, state)

    @property
    def output_weight(self) -> Tensor:
        """(V, D) output projection."""
        return self.decoder.output.weight

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> DecoderState:
        return self.decoder.init_state(memory, memory_lens)

    def step(self, tokens: Tensor, memory: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        return self.decoder.step(tokens, memory, state)

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP shards and gathers one at a time: every encoder and decoder layer. The embeddings
        (shared between source and target, tied to the output projection, whose weight the loss reads
        directly) and the final norms stay in the root unit."""
        return [*self.encoder.layers, *self.decoder.layers]

    def tp_plan(self) -> dict[str, str]:
        """What tensor parallelism (train/tensor_parallel.py) splits over ranks: ``layer_tp_plan``. Embeddings
        (tied to the output projection), norms and positions stay whole on every rank."""
        return layer_tp_plan(self)


def layer_tp_plan(model: nn.Module) -> dict[str, str]:
    """The tensor-parallel splits of the Transformer attention and feed-forward blocks in ``model``, by module path.
    Every attention: q_proj colwise (output features split: each rank computes whole heads), the fused kv_proj
    colwise_fused (each of its key and value halves split so), out_proj rowwise (input features split, outputs
    summed); every feed-forward block: first Linear colwise, second rowwise. A position table the heads of an
    attention share (shaw) is ``heads_shared``: whole on every rank, its gradient summed over them."""
    plan: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, MultiHeadAttention):
            plan |= {f"{name}.q_proj": "colwise", f"{name}.kv_proj": "colwise_fused", f"{name}.out_proj": "rowwise"}
            if isinstance(module.positions, nn.Module):
                plan |= {f"{name}.positions.{p}": "heads_shared" for p, _ in module.positions.named_parameters()}
        elif isinstance(module, FeedForward):
            plan |= {f"{name}.net.0": "colwise", f"{name}.net.3": "rowwise"}
    return plan


def _embedding(cfg: TransformerConfig, size: int, pad_id: int) -> nn.Embedding:
    emb = nn.Embedding(size, cfg.dim, padding_idx=pad_id)
    nn.init.normal_(emb.weight, std=cfg.dim**-0.5)
    with torch.no_grad():
        emb.weight[pad_id].zero_()
    return emb


def _final_norm(cfg: TransformerConfig) -> nn.Module:
    return nn.LayerNorm(cfg.dim) if cfg.pre_norm else nn.Identity()


def _layer_args(cfg: TransformerConfig) -> dict:
    """Keyword arguments of one encoder/decoder layer; each call builds that layer's own attention positions."""
    return dict(dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                activation_dropout=cfg.activation_dropout, pre_norm=cfg.pre_norm,
                positions=build_attention_positions(cfg.positions, cfg.dim // cfg.heads, cfg.max_relative))


def _added_positions(cfg: TransformerConfig) -> nn.Module | None:
    """The encodings the embedder adds, or None where positions live in self-attention."""
    if cfg.positions in ATTENTION_POSITIONS:
        return None
    return build_positions(cfg.positions, cfg.dim, cfg.max_positions)


def _xavier(layers: list) -> None:
    """The earlier initialization: Xavier-uniform on every matrix (the fused (2D, D) key/value projection as one
    matrix), zero biases; LayerNorm weights keep 1."""
    for layer in layers:
        for name, p in layer.named_parameters():
            if ".positions." in name:  # relative position tables keep their own initialization
                continue
            if p.dim() == 2:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)


def _fairseq_attention(attn: MultiHeadAttention) -> None:
    """fairseq's ``MultiheadAttention.reset_parameters`` with q/k/v of one size: q, k and v each Xavier-uniform
    with gain 1/sqrt(2) as (D, D) matrices (k and v are the two halves of our fused kv_proj), their biases keep
    PyTorch's default; out_proj Xavier-uniform with a zero bias."""
    gain = 1 / math.sqrt(2)
    nn.init.xavier_uniform_(attn.q_proj.weight, gain=gain)
    with torch.no_grad():
        for half in attn.kv_proj.weight.chunk(2, dim=0):  # (2D, D) -> k (D, D), v (D, D), views
            nn.init.xavier_uniform_(half, gain=gain)
    nn.init.xavier_uniform_(attn.out_proj.weight)
    nn.init.zeros_(attn.out_proj.bias)


def _fairseq(layers: list) -> None:
    """fairseq's Transformer: attention as ``_fairseq_attention``; the feed-forward Linear layers keep PyTorch's
    default (fairseq's ``build_fc1``/``build_fc2`` are plain ``nn.Linear``, re-drawn here so the result does not
    depend on what ran before); LayerNorm weight 1, bias 0."""
    for layer in layers:
        for module in layer.modules():
            if isinstance(module, MultiHeadAttention):
                _fairseq_attention(module)
            elif isinstance(module, FeedForward):
                for linear in module.net:
                    if isinstance(linear, nn.Linear):
                        linear.reset_parameters()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()


INITS = {"fairseq": _fairseq, "xavier": _xavier}
"""Layer initializations by ``TransformerConfig.init``; embeddings are N(0, D^-1/2) with a zero padding row in
both (fairseq's ``Embedding()``), scaled by sqrt(D) in ``Embedder``."""


def init_layers(cfg: TransformerConfig, layers: list) -> None:
    """Initialize encoder/decoder ``layers`` in place as ``cfg.init`` says."""
    INITS[cfg.init](layers)


def _output(cfg: TransformerConfig, embedding: nn.Embedding, vocab: int) -> nn.Linear:
    output = nn.Linear(cfg.dim, vocab, bias=False)
    if cfg.tie_output:
        output.weight = embedding.weight
    else:
        nn.init.normal_(output.weight, std=cfg.dim**-0.5)
    return output


def _decoder_layers(cfg: TransformerConfig) -> list[DecoderLayer]:
    return [DecoderLayer(cfg.dim, cfg.heads, cfg.ffn_dim, **_layer_args(cfg)) for _ in range(cfg.decoder_layers)]


def build_decoder(cfg: TransformerConfig, vocab: int, pad_id: int = 0,
                  embedding: nn.Embedding | None = None) -> TransformerDecoder:
    """A Transformer decoder of ``cfg.decoder_layers`` layers over ``vocab`` tokens (initialized as ``cfg.init``
    says); ``embedding`` shares an existing table, else a new one is made."""
    emb = _embedding(cfg, vocab, pad_id) if embedding is None else embedding
    output = _output(cfg, emb, vocab)
    layers = _decoder_layers(cfg)
    init_layers(cfg, layers)
    embed = Embedder(emb, _added_positions(cfg), cfg.dropout)
    return TransformerDecoder(embed, layers, _final_norm(cfg), output)


def build(cfg: TransformerConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0) -> TransformerSeq2Seq:
    """Config + vocabulary sizes -> model, initialized as ``cfg.init`` says."""
    if cfg.share_embeddings and src_vocab != tgt_vocab:
        raise ValueError(
            f"model.share_embeddings needs one vocabulary, got {src_vocab} source / {tgt_vocab} target"
        )
    src_emb = _embedding(cfg, src_vocab, pad_id)
    tgt_emb = src_emb if cfg.share_embeddings else _embedding(cfg, tgt_vocab, pad_id)
    output = _output(cfg, tgt_emb, tgt_vocab)
    enc_layers = [EncoderLayer(cfg.dim, cfg.heads, cfg.ffn_dim, **_layer_args(cfg)) for _ in range(cfg.encoder_layers)]
    dec_layers = _decoder_layers(cfg)
    init_layers(cfg, [*enc_layers, *dec_layers])  # this order of random draws is what trained models were made with
    encoder = TransformerEncoder(
        Embedder(src_emb, _added_positions(cfg), cfg.dropout),
        enc_layers, _final_norm(cfg),
    )
    decoder = TransformerDecoder(
        Embedder(tgt_emb, _added_positions(cfg), cfg.dropout),
        dec_layers, _final_norm(cfg), output,
    )
    return TransformerSeq2Seq(encoder, decoder)


def tied_aliases(cfg: TransformerConfig) -> set[str]:
    """State-dict names that are the same parameter as an earlier name (tied embeddings): saved
    once, re-tied by ``build`` on load."""
    return shared_tensor_names(build(cfg, 8, 8))  # vocabulary sizes do not change which names alias

