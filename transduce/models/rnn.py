"""RNN encoder-decoder with attention (Bahdanau et al. 2014; Luong et al. 2015; Chorowski et al.
2015; coverage after Tu et al. 2016 and See et al. 2017).

Dimension letters: B batch (x beams), S source length, T target length, D attentional-output size
(the features the output projection reads), V vocabulary.
Contract (the same as the Transformer's): ``encode(src, src_lens) -> (memory, memory_lens)``;
``features(src, src_lens, tgt_in) -> (B, T, D)``; ``output_weight`` (V, D);
``init_state(memory, memory_lens)``; ``step(tokens, memory, state) -> (log_probs, state)``;
plus the attention weights: ``features_with_attention(src, src_lens, tgt_in) -> ((B, T, D), (B, T, S))``
teacher-forced and ``step_with_attention(tokens, memory, state) -> (log_probs, state, (B, S))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from transduce.nn.rnn import Bridge, RNNDecoder, RNNDecoderState, RNNEncoder, StackedCell, make_rnn
from transduce.nn.rnn_attention import build_attention
from transduce.nn.tying import shared_tensor_names


@dataclass(kw_only=True)
class RNNConfig:
    """Sizes and options of an attentional RNN encoder-decoder."""

    cell: str = "lstm"
    """Recurrent cell of encoder and decoder: lstm or gru."""
    embed_dim: int = 256
    """Token embedding size E (source and target)."""
    hidden: int = 512
    """Encoder output size (both directions together) and decoder hidden size."""
    encoder_layers: int = 2
    """Stacked encoder RNN layers."""
    decoder_layers: int = 2
    """Stacked decoder RNN layers."""
    bidirectional: bool = True
    """Bidirectional encoder (each direction hidden / 2 units)."""
    attention: str = "additive"
    """dot, general (Luong), additive (Bahdanau), location (Chorowski) or multihead_additive."""
    attention_dim: int = 0
    """Energy size of the additive attentions, all heads together (0 = hidden)."""
    heads: int = 4
    """Heads of multihead_additive attention; must divide hidden and attention_dim."""
    input_feeding: bool = True
    """Feed the previous attentional output into the decoder RNN (Luong)."""
    coverage: bool = False
    """Feed the running sum of past attention weights into the additive energy (Tu et al. 2016)."""
    coverage_loss_weight: float = 0.0
    """Weight of the See et al. 2017 coverage loss (``coverage_loss``) added to the training loss
    (0 = off; needs coverage)."""
    dropout: float = 0.3
    """Dropout on embeddings, between RNN layers, on the memory and on attentional outputs."""
    share_embeddings: bool = False
    """One embedding table for source and target (needs a joint vocabulary)."""
    tie_embeddings: bool = False
    """Use the target embedding as the output projection (the attentional output gets size E)."""
    scheduled_sampling: float = 0.0
    """Probability of feeding the model's own previous prediction in training (0 = off)."""


class RNNSeq2Seq(nn.Module):
    """Encoder + decoder. ``forward`` returns teacher-forced logits; the loss lives in train/."""

    def __init__(self, encoder: RNNEncoder, decoder: RNNDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S), src_lens (B,) -> memory (B, S, M), memory_lens (B,)."""
        return self.encoder.encode(src, src_lens)

    def forward(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), src_lens (B,), tgt_in (B, T) -> logits (B, T, V)."""
        return self.decoder.output(self.features(src, src_lens, tgt_in))

    def features(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> Tensor:
        """Attentional outputs (B, T, D) before the output projection (for fused losses)."""
        return self.features_with_attention(src, src_lens, tgt_in)[0]

    def features_with_attention(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """One teacher-forced pass: attentional outputs (B, T, D) and attention weights (B, T, S),
        both fp32; row t of the weights is the alignment used to predict target token t + 1."""
        memory, memory_lens = self.encode(src, src_lens)
        return self.decoder.features(tgt_in, memory, memory_lens)

    def align(self, src: Tensor, src_lens: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced attention weights (B, T, S) (for plots, forced alignment and the coverage loss)."""
        return self.features_with_attention(src, src_lens, tgt_in)[1]

    @property
    def output_weight(self) -> Tensor:
        """(V, D) output projection."""
        return self.decoder.output.weight

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> RNNDecoderState:
        return self.decoder.init_state(memory, memory_lens)

    def step(self, tokens: Tensor, memory: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState]:
        return self.decoder.step(tokens, memory, state)

    def step_with_attention(self, tokens: Tensor, memory: Tensor, state: RNNDecoderState
                            ) -> tuple[Tensor, RNNDecoderState, Tensor]:
        """``step`` plus the attention weights (N, S) it used (for the coverage penalty)."""
        log_probs, state = self.decoder.step(tokens, memory, state)
        return log_probs, state, state.weights

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP gathers one at a time: the stacked encoder RNN (one call per batch). The decoder runs its
        cells and attention once per target step, a count that differs between ranks, and FSDP gathers a unit
        on every call, so the decoder stays in the root unit with the embeddings (shared, or tied to the
        output weight the loss reads directly). Every unit's parameters, gradients and optimizer state are
        still sharded between steps; the root's are gathered for the whole forward and backward."""
        return [self.encoder.rnn]


def coverage_loss(weights: Tensor, tgt_mask: Tensor) -> Tensor:
    """See et al. 2017: sum over real target steps t and source positions s of
    ``min(a_t[s], c_t[s])`` where ``c_t`` is the sum of the weights before step t.

    weights (B, T, S) from ``align``, tgt_mask (B, T) True on real target positions -> scalar sum
    (normalize like the token loss it is added to)."""
    coverage = weights.cumsum(dim=1) - weights  # (B, T, S): weights of steps 0..t-1
    per_step = torch.minimum(weights, coverage).sum(dim=-1)  # (B, T)
    return per_step.masked_fill(~tgt_mask, 0.0).sum()


def build_rnn(cfg: RNNConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0) -> RNNSeq2Seq:
    """Config + vocabulary sizes -> model (PyTorch's default RNN/linear initialization,
    uniform +-0.1 embeddings with a zero padding row)."""
    if cfg.share_embeddings and src_vocab != tgt_vocab:
        raise ValueError(
            f"model.share_embeddings needs one vocabulary, got {src_vocab} source / {tgt_vocab} target"
        )
    if cfg.coverage_loss_weight < 0:
        raise ValueError(f"model.coverage_loss_weight must be >= 0, got {cfg.coverage_loss_weight}")
    if cfg.coverage_loss_weight and not cfg.coverage:
        raise ValueError("model.coverage_loss_weight needs model.coverage: true (the loss trains the coverage model)")
    if cfg.bidirectional and cfg.hidden % 2:
        raise ValueError(f"model.hidden must be even for a bidirectional encoder, got {cfg.hidden}")

    def embedding(size: int) -> nn.Embedding:
        emb = nn.Embedding(size, cfg.embed_dim, padding_idx=pad_id)
        nn.init.uniform_(emb.weight, -0.1, 0.1)
        with torch.no_grad():
            emb.weight[pad_id].zero_()
        return emb

    src_emb = embedding(src_vocab)
    tgt_emb = src_emb if cfg.share_embeddings else embedding(tgt_vocab)
    enc_hidden = cfg.hidden // 2 if cfg.bidirectional else cfg.hidden
    encoder = RNNEncoder(src_emb, make_rnn(cfg.cell, cfg.embed_dim, enc_hidden, cfg.encoder_layers,
                                           bidirectional=cfg.bidirectional, dropout=cfg.dropout), cfg.dropout)
    out_dim = cfg.embed_dim if cfg.tie_embeddings else cfg.hidden
    rnn_input = cfg.embed_dim + (out_dim if cfg.input_feeding else 0)
    attention = build_attention(cfg.attention, cfg.hidden, encoder.output_dim,
                                attention_dim=cfg.attention_dim or cfg.hidden, heads=cfg.heads, coverage=cfg.coverage)
    output = nn.Linear(out_dim, tgt_vocab, bias=False)
    if cfg.tie_embeddings:
        output.weight = tgt_emb.weight
    decoder = RNNDecoder(
        tgt_emb, StackedCell(cfg.cell, rnn_input, cfg.hidden, cfg.decoder_layers, dropout=cfg.dropout), attention,
        Bridge(encoder.output_dim, cfg.hidden, cfg.decoder_layers, lstm=cfg.cell == "lstm",
               bidirectional=cfg.bidirectional),
        nn.Linear(encoder.output_dim + cfg.hidden, out_dim, bias=False), output,
        dropout=cfg.dropout, input_feeding=cfg.input_feeding, coverage=cfg.coverage,
        scheduled_sampling=cfg.scheduled_sampling,
    )
    return RNNSeq2Seq(encoder, decoder)


def tied_aliases(cfg: RNNConfig) -> set[str]:
    """State-dict names that are the same parameter as an earlier name (shared or tied
    embeddings): saved once, re-tied by ``build_rnn`` on load."""
    small = RNNConfig(**{**vars(cfg), "embed_dim": 4, "hidden": 4, "attention_dim": 4, "heads": 1})
    return shared_tensor_names(build_rnn(small, 8, 8))  # sizes do not change which names alias
