"""Transformer encoder and decoder layers, pre-LN or post-LN; ``positions`` (Shaw, RoPE) goes to self-attention.

Dimension letters: B batch (x beams), T target length, S source length, D model size.
"""

from __future__ import annotations

from torch import Tensor, nn

from transduce.nn.attention import MultiHeadAttention
from transduce.nn.ffn import FeedForward
from transduce.nn.positions import AttentionPositions
from transduce.nn.state import DecoderLayerState


class Residual(nn.Module):
    """x + dropout(f(norm(x))) (pre-LN) or norm(x + dropout(f(x))) (post-LN); f is given per call."""

    def __init__(self, dim: int, *, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def before(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def after(self, x: Tensor, y: Tensor) -> Tensor:
        out = x + self.dropout(y)
        return out if self.pre_norm else self.norm(out)


class EncoderLayer(nn.Module):
    def __init__(
        self, dim: int, heads: int, ffn_dim: int, *, dropout: float = 0.1,
        attention_dropout: float = 0.0, activation_dropout: float = 0.0, pre_norm: bool = True,
        positions: AttentionPositions | None = None,
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout=attention_dropout, positions=positions)
        self.ffn = FeedForward(dim, ffn_dim, dropout=activation_dropout)
        self.attn_res = Residual(dim, dropout=dropout, pre_norm=pre_norm)
        self.ffn_res = Residual(dim, dropout=dropout, pre_norm=pre_norm)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), mask (B, 1, 1|S, S) -> (B, S, D)."""
        h = self.attn_res.before(x)
        x = self.attn_res.after(x, self.attn(h, h, mask=mask)[0])
        return self.ffn_res.after(x, self.ffn(self.ffn_res.before(x)))


class DecoderLayer(nn.Module):
    def __init__(
        self, dim: int, heads: int, ffn_dim: int, *, dropout: float = 0.1,
        attention_dropout: float = 0.0, activation_dropout: float = 0.0, pre_norm: bool = True,
        positions: AttentionPositions | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout=attention_dropout, positions=positions)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout=attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout=activation_dropout)
        self.self_res = Residual(dim, dropout=dropout, pre_norm=pre_norm)
        self.cross_res = Residual(dim, dropout=dropout, pre_norm=pre_norm)
        self.ffn_res = Residual(dim, dropout=dropout, pre_norm=pre_norm)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        memory_mask: Tensor,
        state: DecoderLayerState | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, DecoderLayerState, Tensor | None]:
        """x (B, T, D), memory (B, S, D), memory_mask (B, 1, 1, S).

        Without ``state`` this is the teacher-forced pass (causal self-attention over T).
        With ``state`` x holds only the new steps, which attend to the cached ones.
        Returns (B, T, D), the new state and cross-attention weights (B, H, T, S) if asked.
        """
        h = self.self_res.before(x)
        self_cache = None if state is None else state.self_attn
        y, self_cache, _ = self.self_attn(h, h, causal=state is None, cache=self_cache)
        x = self.self_res.after(x, y)
        h = self.cross_res.before(x)
        cross_cache = None if state is None else state.cross_attn
        y, cross_cache, weights = self.cross_attn(
            h, memory, mask=memory_mask, cache=cross_cache, static_kv=True, need_weights=need_weights
        )
        x = self.cross_res.after(x, y)
        x = self.ffn_res.after(x, self.ffn(self.ffn_res.before(x)))
        return x, DecoderLayerState(self_cache, cross_cache), weights
