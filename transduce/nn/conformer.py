"""Conformer (Gulati et al. 2020) and plain Transformer speech encoders.

Dimension letters: B batch, T query frames (after subsampling), S key frames (S = P + T with a left
cache of P frames), R = T + S - 1 relative distances, D model size, H heads, E head size (D = H * E),
K depthwise kernel size, F input feature bins, B' the streams of a ``forward_chunks`` call that advance.

Masks are boolean, True = may attend (``nn/masks.py``): attention takes (B, 1, T|1, S) or (B, T, S),
the convolution a (B, T) padding mask. Layers take their cache explicitly and return the new one,
so chunked streaming only has to build masks and positions and carry ``ConformerLayerState``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from transduce.nn.conformer_ops import depthwise_conv, rel_position_attention, residual_dropout
from transduce.nn.conformer_ops import rel_shift as rel_shift  # re-exported: its home was here
from transduce.nn.ffn import FeedForward
from transduce.nn.local_attention import LocalWindow, in_pieces, local_attention
from transduce.nn.masks import attendable, chunk_mask, encoder_masks, padding_mask, stream_mask, stream_masks
from transduce.nn.state import KVCache
from transduce.nn.stream_state import ConformerLayerState, EncoderStreamState, advance_streams
from transduce.nn.subsampling import Conv2dSubsampling, FrontEnd, conv_lengths
from transduce.nn.transformer import EncoderLayer


def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """(N,) float positions (may be negative) -> (N, D) encodings, [sin | cos] as in ``nn/positions.py``."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=positions.device) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = positions.float()[:, None] * freqs[None, :]  # (N, D/2)
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(table, (0, dim % 2))  # (N, D)


def relative_positions(query_len: int, key_len: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Encodings of distances query - key for the last T of S frames: S-1, S-2, ..., -(T-1) -> (R, D)."""
    return sinusoids(torch.arange(key_len - 1, -query_len, -1, device=device), dim)


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention with Transformer-XL relative positions (ESPnet ``RelPositionMultiHeadedAttention``):
    score(t, s) = ((q_t + u) . k_s + (q_t + v) . W_pos r(t - s)) / sqrt(E), written out
    (``conformer_ops.rel_position_attention``)."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.pos_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, dim // heads))  # (H, E)
        self.pos_bias_v = nn.Parameter(torch.empty(heads, dim // heads))  # (H, E)
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape  # under tensor parallelism x holds this rank's heads only: H counted from the size
        return x.view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, H, T, E)

    def _biases(self) -> tuple[Tensor, Tensor]:
        """pos_bias_u, pos_bias_v (H, E); under tensor parallelism (train/tensor_parallel.py) DTensors split by
        heads, of which this rank's rows."""
        u, v = self.pos_bias_u, self.pos_bias_v
        return (u.to_local(), v.to_local()) if isinstance(u, DTensor) and isinstance(v, DTensor) else (u, v)

    def forward(
        self, x: Tensor, pos: Tensor, mask: Tensor | None, cache: KVCache | None = None
    ) -> tuple[Tensor, KVCache]:
        """x (B, T, D), pos (R, D) from ``relative_positions(T, S)``, mask bool (B, 1, T|1, S) or (B, T, S),
        cache: keys/values (B, H, P, E) of the P frames before x. Returns (B, T, D) and keys/values (B, H, S, E)."""
        q = self._split(self.q_proj(x))  # (B, H, T, E)
        k, v = (self._split(y) for y in self.kv_proj(x).chunk(2, dim=-1))  # (B, H, T, E) each
        kv = KVCache(k, v) if cache is None else cache.append(k, v)  # (B, H, S, E)
        p = self.pos_proj(pos).view(pos.size(0), -1, self.head_dim).permute(1, 2, 0)  # (H, E, R)
        if mask is not None:
            mask = attendable(mask[:, None] if mask.dim() == 3 else mask)  # (B, 1, T|1, S)
        bias_u, bias_v = self._biases()
        out = rel_position_attention(q + bias_u[:, None], q + bias_v[:, None], kv.keys, kv.values,
                                     p, mask, dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, E)
        b, h, t, e = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * e)), kv  # (B, T, D)

    def forward_local(self, x: Tensor, pos: Tensor, pad_mask: Tensor, window: LocalWindow) -> tuple[Tensor, KVCache]:
        """Blockwise local attention (``nn/local_attention.py``): x (B, T, D), pos (P, D) encodings of
        ``window.distances()``, pad_mask (B, T). Equals ``forward`` with the band mask, in O(T W) memory."""
        q = self._split(self.q_proj(x))  # (B, H, T, E)
        k, v = (self._split(y) for y in self.kv_proj(x).chunk(2, dim=-1))  # (B, H, T, E) each
        p = self.pos_proj(pos).view(pos.size(0), -1, self.head_dim).transpose(0, 1)  # (H, P, E)
        bias_u, bias_v = self._biases()
        out = local_attention(q + bias_u[:, None], q + bias_v[:, None], k, v, p, pad_mask, window,
                              dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, E)
        b, h, t, e = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * e)), KVCache(k, v)  # (B, T, D)


class ConvolutionModule(nn.Module):
    """Pointwise conv -> GLU -> depthwise conv -> norm -> Swish -> pointwise conv. (B, T, D) -> (B, T, D), computed
    in (B, T, D) layout throughout (pointwise convs as linear layers on their (D', D, 1) weights, the depthwise one
    channels-last: ``conformer_ops.depthwise_conv``).

    Padded frames are zeroed before the depthwise conv, so they act like the conv's own zero padding.
    ``causal`` pads K - 1 frames on the left only (output t sees inputs <= t); ``norm="layer"`` is the
    default because BatchNorm statistics differ between training, evaluation and chunked streaming.
    """

    def __init__(self, dim: int, kernel_size: int, *, causal: bool = False, norm: str = "layer") -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv kernel_size must be odd, got {kernel_size}")
        norms = {"layer": nn.LayerNorm, "batch": nn.BatchNorm1d}
        if norm not in norms:
            raise ValueError(f"unknown conv norm {norm!r}; choose from {sorted(norms)}")
        self.causal = causal
        self.left = kernel_size - 1 if causal else (kernel_size - 1) // 2
        self.right = 0 if causal else (kernel_size - 1) // 2
        self.pointwise_in = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, groups=dim)
        self.norm = norms[norm](dim)
        self.pointwise_out = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor, pad_mask: Tensor | None = None, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, D), pad_mask (B, T) True on real frames, cache (B, D, K - 1) of the frames before x
        (causal only). Returns (B, T, D) and the new cache (B, D, K - 1), empty when not causal."""
        h = F.glu(F.linear(x, self.pointwise_in.weight[..., 0], self.pointwise_in.bias), dim=-1)  # (B, T, 2D) -> D
        if pad_mask is not None:
            h = h.masked_fill(~pad_mask[..., None], 0.0)
        if cache is not None:
            if not self.causal:
                raise ValueError("a convolution cache needs causal=True")
            h = torch.cat([cache.transpose(1, 2), h], dim=1)  # (B, K - 1 + T, D)
        elif self.causal:
            h = F.pad(h, (0, 0, self.left, 0))  # (B, K - 1 + T, D)
        new_cache = h[:, h.size(1) - self.left :] if self.causal else h[:, :0]  # (B, K - 1 | 0, D)
        h = depthwise_conv(h, self.depthwise.weight, self.depthwise.bias, 0 if self.causal else self.left)  # (B, T, D)
        h = self.norm(h) if isinstance(self.norm, nn.LayerNorm) else self.norm(h.transpose(1, 2)).transpose(1, 2)
        out = F.linear(F.silu(h), self.pointwise_out.weight[..., 0], self.pointwise_out.bias)  # (B, T, D)
        # in the (B, D, T) memory layout of a Conv1d output, as before: a dropout after this module fills its mask
        # in memory order, so training draws the same masks as the convolution form did
        return out.transpose(1, 2).contiguous().transpose(1, 2), new_cache.transpose(1, 2)  # (B, D, K - 1 | 0)


class ConformerBlock(nn.Module):
    """x + FFN/2 -> + MHSA -> + conv -> + FFN/2 -> LayerNorm, all sublayers pre-LN. (B, T, D) -> (B, T, D)."""

    def __init__(
        self, dim: int, heads: int, ffn_dim: int, kernel_size: int, *, dropout: float = 0.1,
        attention_dropout: float = 0.0, causal: bool = False, conv_norm: str = "layer",
    ) -> None:
        super().__init__()
        self.ffn1 = FeedForward(dim, ffn_dim, dropout=dropout, activation="swish")
        self.attn = RelPositionMultiHeadAttention(dim, heads, dropout=attention_dropout)
        self.conv = ConvolutionModule(dim, kernel_size, causal=causal, norm=conv_norm)
        self.ffn2 = FeedForward(dim, ffn_dim, dropout=dropout, activation="swish")
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(5))  # ffn1, attn, conv, ffn2, final
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, pos: Tensor, mask: Tensor | None, pad_mask: Tensor | None,
        state: ConformerLayerState | None = None, *, window: LocalWindow | None = None,
    ) -> tuple[Tensor, ConformerLayerState]:
        """x (B, T, D), pos (R, D), mask (B, 1, T|1, S), pad_mask (B, T). Returns (B, T, D) and the
        caches to pass with the next chunk (whole sequence here; a streaming caller trims them).
        With ``window``: blockwise local attention, pos (P, D) for ``window.distances()``, no mask or state."""
        ffn1, attn, conv, ffn2, final = self.norms
        p, training = self.dropout.p, self.training
        x = residual_dropout(x, self.ffn1(ffn1(x)), p, scale=0.5, training=training)
        if window is not None:
            if pad_mask is None or mask is not None or state is not None:
                raise ValueError("local attention takes a padding mask only (no attention mask, no state)")
            y, kv = self.attn.forward_local(attn(x), pos, pad_mask, window)
        else:
            y, kv = self.attn(attn(x), pos, mask, None if state is None else state.attn)
        x = residual_dropout(x, y, p, training=training)
        y, conv_cache = self.conv(conv(x), pad_mask, None if state is None else state.conv)
        x = residual_dropout(x, y, p, training=training)
        x = residual_dropout(x, self.ffn2(ffn2(x)), p, scale=0.5, training=training)
        return final(x), ConformerLayerState(kv, conv_cache)


class ConformerEncoder(nn.Module):
    """Subsampling -> x * sqrt(D) -> Conformer blocks with relative positions. icefall encoder interface.

    Streaming: ``init_state`` + ``forward_chunk`` give, chunk after chunk, exactly what ``encode`` gives
    with ``chunk_size``/``left_chunks`` (the same code path in train and eval mode; needs ``causal``);
    ``forward_chunks`` advances many streams, each with its own state, in one call.
    """

    def __init__(
        self, input_dim: int, dim: int, *, heads: int, layers: int, ffn_dim: int, kernel_size: int,
        subsampling: int = 4, dropout: float = 0.1, attention_dropout: float = 0.0, causal: bool = False,
        subsampling_channels: int = 0, front_end: FrontEnd | None = None,
    ) -> None:
        """``front_end``: an already-built module in place of the ``Conv2dSubsampling`` (the image front end)."""
        super().__init__()
        self.subsampling: FrontEnd = front_end if front_end is not None else Conv2dSubsampling(
            input_dim, dim, subsampling, channels=subsampling_channels)
        self.blocks = nn.ModuleList(
            ConformerBlock(dim, heads, ffn_dim, kernel_size, dropout=dropout,
                           attention_dropout=attention_dropout, causal=causal)
            for _ in range(layers)
        )
        self.input_dim, self.dim, self.heads, self.kernel_size, self.causal = input_dim, dim, heads, kernel_size, causal
        self.dropout = nn.Dropout(dropout)

    def encode(
        self, feats: Tensor, feat_lens: Tensor, mask: Tensor | None = None, *, chunk_size: int = 0,
        left_chunks: int = -1, window: LocalWindow | None = None,
    ) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,), optional bool mask (T', T') or (B, T', T') ANDed with padding
        [and with ``chunk_mask(T', chunk_size, left_chunks)`` when chunk_size > 0]
        -> out (B, T', D) with zeros on padded frames, out_lens (B,). ``window``: blockwise local attention
        instead (equal to the mask ``chunk_mask(T', block, left, right_chunks=right)``), ``window.piece`` frames
        at a time: memory follows the piece, not T'."""
        if window is not None:
            if mask is not None or chunk_size > 0:
                raise ValueError("local attention (window) replaces the attention mask and chunk_size")
            return self._encode_local(feats, feat_lens, window)
        x = self.subsampling(feats)  # (B, T', D)
        out_lens = self.subsampling.output_lengths(feat_lens)
        if chunk_size > 0:
            chunks = chunk_mask(x.size(1), chunk_size, left_chunks, x.device)  # (T', T')
            mask = chunks if mask is None else mask & chunks
        attn, pad = encoder_masks(out_lens, x.size(1), mask)
        x = self.dropout(x * math.sqrt(self.dim))
        pos = self.dropout(relative_positions(x.size(1), x.size(1), self.dim, x.device))  # (2T' - 1, D)
        for block in self.blocks:
            x, _ = block(x, pos, attn, pad)
        return x.masked_fill(~pad[..., None], 0.0), out_lens

    def _encode_local(self, feats: Tensor, feat_lens: Tensor, window: LocalWindow) -> tuple[Tensor, Tensor]:
        """Subsampling and blocks with blockwise local attention, piece by piece (``nn/local_attention.in_pieces``):
        encoder frames [start, end) from features [start f, (end - 1) f + receptive field) alone."""
        sub = self.subsampling
        out_lens = sub.output_lengths(feat_lens)
        pos = self.dropout(sinusoids(window.distances(feats.device), self.dim))  # (P, D)

        def run(start: int, end: int) -> Tensor:
            x = sub(feats[:, start * sub.factor : (end - 1) * sub.factor + sub.receptive_field])  # (B, end - start, D)
            pad = padding_mask((out_lens - start).clamp(0, end - start), end - start)  # (B, end - start)
            x = self.dropout(x * math.sqrt(self.dim))
            for block in self.blocks:
                x, _ = block(x, pos, None, pad, window=window)
            return x.masked_fill(~pad[..., None], 0.0)

        total = int(conv_lengths(feats.size(1), sub.layout))
        return in_pieces(run, total, window.piece_frames, window.halo(len(self.blocks), self.kernel_size)), out_lens

    def init_state(self, batch: int, device: torch.device | str | None = None) -> EncoderStreamState:
        """Empty caches for ``batch`` streams (the causal convolution starts from zeros, like its padding)."""
        if not self.causal:
            raise ValueError("streaming needs a causal convolution (model.causal_conv: true)")
        e = self.dim // self.heads
        empty = torch.zeros(batch, self.heads, 0, e, device=device)  # (B, H, 0, E)
        layers = [ConformerLayerState(KVCache(empty, empty), torch.zeros(batch, self.dim, self.kernel_size - 1,
                                                                           device=device))
                  for _ in self.blocks]
        return EncoderStreamState(torch.zeros(batch, 0, self.input_dim, device=device), layers, 0)

    def forward_chunk(
        self, feats: Tensor, state: EncoderStreamState, *, chunk_size: int, left_chunks: int = -1,
        final: bool = False,
    ) -> tuple[Tensor, EncoderStreamState]:
        """feats (B, N, F): the next N >= 0 normalized feature frames of B streams advancing together.
        Returns (B, T', D) for every whole chunk of ``chunk_size`` encoder frames now computable (with
        ``final``, also the last partial chunk) and the new state. Chunks are never split, so the output
        equals ``encode(..., chunk_size=chunk_size, left_chunks=left_chunks)`` frame for frame."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        buffered = feats if state.feats.size(1) == 0 else torch.cat([state.feats, feats], dim=1)  # (B, L, F)
        sub = self.subsampling
        available = max(int(conv_lengths(buffered.size(1), sub.layout)), 0)
        size = available if final else available - available % chunk_size
        if size == 0:
            return buffered.new_zeros(buffered.size(0), 0, self.dim), EncoderStreamState(
                buffered, state.layers, state.frames)
        x = sub(buffered[:, : (size - 1) * sub.factor + sub.receptive_field])  # (B, T', D)
        x = self.dropout(x * math.sqrt(self.dim))
        cached = state.layers[0].attn.keys.size(2)
        mask = stream_mask(state.frames, cached, size, chunk_size, left_chunks, x.device)[None, None]  # (1,1,T',S)
        pos = self.dropout(relative_positions(size, cached + size, self.dim, x.device))  # (T' + S - 1, D)
        layers = []
        for block, layer_state in zip(self.blocks, state.layers, strict=True):
            x, new = block(x, pos, mask, None, layer_state)
            if left_chunks >= 0:  # later chunks see only the last left_chunks whole chunks
                keep = max(new.attn.keys.size(2) - left_chunks * chunk_size, 0)
                new = ConformerLayerState(KVCache(new.attn.keys[:, :, keep:], new.attn.values[:, :, keep:]), new.conv)
            layers.append(new)
        rest = buffered[:, size * sub.factor :]
        return x, EncoderStreamState(rest, layers, state.frames + size)

    def forward_chunks(
        self, feats: Sequence[Tensor], states: Sequence[EncoderStreamState], *, chunk_size: int,
        left_chunks: int = -1, final: Sequence[bool] | None = None,
    ) -> tuple[Tensor, Tensor, list[EncoderStreamState]]:
        """B streams, each with its own state (batch 1, caches of any length), advance together in one call.

        feats[b] (N_b, F): stream b's next N_b >= 0 normalized frames, buffered. Each stream advances by at
        most ONE chunk: one with a whole chunk buffered computes it; one with ``final[b]`` and less than a whole
        chunk left computes that rest; the others only buffer. Returns out (B, T, D) with each stream's new
        frames first in its row (zeros after), lengths (B,) and the new states. Row by row the output equals
        ``forward_chunk`` of that stream alone (to float rounding). A state after a final partial chunk is
        spent: only its ``frames`` stay meaningful."""
        return advance_streams(self._advance, feats, states, factor=self.subsampling.factor, dim=self.dim,
                               chunk_size=chunk_size, left_chunks=left_chunks, final=final)

    def _advance(
        self, buffered: list[Tensor], states: list[EncoderStreamState], sizes: list[int], chunk_size: int,
        left_chunks: int,
    ) -> tuple[Tensor, list[list[ConformerLayerState]]]:
        """One chunk of B' streams: buffers (1, L_b, F), T_b = sizes[b] new frames each -> (B', T, D), T = max
        T_b, and each stream's new per-block caches. Caches are left-padded to the longest (P frames) and new
        frames right-padded to T, so every row's new frames sit at the same columns, relative distances agree,
        and ``stream_masks`` hides the padding."""
        sub, size = self.subsampling, max(sizes)
        need = (size - 1) * sub.factor + sub.receptive_field
        inputs = torch.cat([F.pad(buf[:, :need], (0, 0, 0, need - min(need, buf.size(1)))) for buf in buffered])
        x = self.dropout(sub(inputs) * math.sqrt(self.dim))  # (B', T, D)
        cached = [s.layers[0].attn.keys.size(2) for s in states]
        past = max(cached)
        lengths = torch.tensor(sizes, device=x.device)
        mask = stream_masks(torch.tensor([s.frames for s in states], device=x.device),
                            torch.tensor(cached, device=x.device), lengths, chunk_size, left_chunks)  # (B', T, S)
        pad = None if min(sizes) == size else padding_mask(lengths, size)  # (B', T): short final chunks
        pos = self.dropout(relative_positions(size, past + size, self.dim, x.device))  # (T + S - 1, D)
        per_stream: list[list[ConformerLayerState]] = [[] for _ in states]
        for i, block in enumerate(self.blocks):
            layer = [s.layers[i] for s in states]
            keys = torch.cat([F.pad(c.attn.keys, (0, 0, past - c.attn.keys.size(2), 0)) for c in layer])  # (B',H,P,E)
            values = torch.cat([F.pad(c.attn.values, (0, 0, past - c.attn.values.size(2), 0)) for c in layer])
            batch_state = ConformerLayerState(KVCache(keys, values), torch.cat([c.conv for c in layer]))
            x, new = block(x, pos, mask, pad, batch_state)  # new keys/values (B', H, P + T, E)
            for b, (stream, n) in enumerate(zip(cached, sizes, strict=True)):
                begin = past - stream
                if left_chunks >= 0:  # later chunks see only the last left_chunks whole chunks
                    begin = max(begin, past + n - left_chunks * chunk_size)
                window = slice(begin, past + n)  # the stream's own cached and new frames
                kv = KVCache(new.attn.keys[b : b + 1, :, window], new.attn.values[b : b + 1, :, window])
                per_stream[b].append(ConformerLayerState(kv, new.conv[b : b + 1]))
        return x, per_stream


class TransformerSpeechEncoder(nn.Module):
    """Subsampling -> x * sqrt(D) + absolute sinusoids -> pre-LN Transformer layers -> LayerNorm."""

    def __init__(
        self, input_dim: int, dim: int, *, heads: int, layers: int, ffn_dim: int,
        subsampling: int = 4, dropout: float = 0.1, attention_dropout: float = 0.0, subsampling_channels: int = 0,
        front_end: FrontEnd | None = None,
    ) -> None:
        super().__init__()
        self.subsampling: FrontEnd = front_end if front_end is not None else Conv2dSubsampling(
            input_dim, dim, subsampling, channels=subsampling_channels)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, ffn_dim, dropout=dropout, attention_dropout=attention_dropout)
            for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(dim)
        self.dim = dim
        self.dropout = nn.Dropout(dropout)

    def encode(
        self, feats: Tensor, feat_lens: Tensor, mask: Tensor | None = None, *, chunk_size: int = 0,
        left_chunks: int = -1,
    ) -> tuple[Tensor, Tensor]:
        """Same contract as ``ConformerEncoder.encode`` (no streaming API: absolute positions)."""
        x = self.subsampling(feats)  # (B, T', D)
        out_lens = self.subsampling.output_lengths(feat_lens)
        if chunk_size > 0:
            chunks = chunk_mask(x.size(1), chunk_size, left_chunks, x.device)  # (T', T')
            mask = chunks if mask is None else mask & chunks
        attn, pad = encoder_masks(out_lens, x.size(1), mask)
        positions = sinusoids(torch.arange(x.size(1), device=x.device), self.dim)  # (T', D)
        x = self.dropout(x * math.sqrt(self.dim) + positions)
        for layer in self.layers:
            x = layer(x, attn)
        return self.final_norm(x).masked_fill(~pad[..., None], 0.0), out_lens
