"""The computations an ONNX export of a CTC Conformer holds, as modules ``torch.onnx.export`` can trace.

They run the model's own submodules (front end, feed-forward, convolution, norms, CTC head) in eval mode and
differ from ``nn/conformer.py`` only where the exporter needs it (export workarounds live in ``export/``):

- relative-position scores are shifted with a gather instead of ``as_strided`` (``rel_shift``), and attention is
  written out as matmul + softmax (the exporter mis-tracks strides after SDPA with dynamic shapes);
- masks are built from tensors without Python branches on their values (``nn/masks.py`` branches on data);
- the streaming caches of all L blocks travel as stacked tensors, left-padded to P frames like
  ``ConformerEncoder._advance`` pads them, with each stream's real cache length, absolute frame and new frames.

Dimension letters: B batch (streams), T feature frames, F feature bins, T' encoder frames (of a chunk: the new
frames), P cached frames, S = P + T' keys, R = T' + S - 1 relative distances, L blocks, H heads, E head size,
D model size (H * E), K depthwise kernel, V vocabulary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transduce.models.ctc import CTCModel, utterance_mean_norm
from transduce.nn.conformer import ConformerBlock, ConformerEncoder, RelPositionMultiHeadAttention, relative_positions
from transduce.nn.masks import attendable, padding_mask


def shift_by_gather(scores: Tensor) -> Tensor:
    """``nn.conformer.rel_shift`` without strides: (B, H, T', R) against distances S-1..-(T'-1) -> (B, H, T', S),
    key s of query t read from column T' - 1 - t + s."""
    t, r = scores.size(2), scores.size(3)
    s = r - t + 1
    column = torch.arange(s, device=scores.device)[None, :] - torch.arange(t, device=scores.device)[:, None] + t - 1
    return scores.gather(3, column.expand(scores.size(0), scores.size(1), t, s))  # (B, H, T', S)


def attention(attn: RelPositionMultiHeadAttention, x: Tensor, pos: Tensor, mask: Tensor, keys: Tensor,
              values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``RelPositionMultiHeadAttention.forward``: x (B, T', D), pos (R, D), mask (B, 1, T', S), cached keys and
    values (B, H, P, E) -> output (B, T', D), keys and values (B, H, S, E)."""
    b, t, d = x.shape
    h = attn.heads
    e = d // h
    q = attn.q_proj(x).view(b, t, h, e).transpose(1, 2)  # (B, H, T', E)
    kv = attn.kv_proj(x).view(b, t, 2, h, e).permute(2, 0, 3, 1, 4)  # (2, B, H, T', E)
    keys, values = torch.cat([keys, kv[0]], dim=2), torch.cat([values, kv[1]], dim=2)  # (B, H, S, E)
    p = attn.pos_proj(pos).view(-1, h, e).transpose(0, 1)  # (H, R, E)
    ac = (q + attn.pos_bias_u[:, None]) @ keys.transpose(2, 3)  # (B, H, T', S)
    bd = shift_by_gather((q + attn.pos_bias_v[:, None]) @ p.transpose(1, 2))  # (B, H, T', S)
    scores = ((ac + bd) / math.sqrt(e)).masked_fill(~attendable(mask), float("-inf"))
    out = scores.softmax(dim=-1) @ values  # (B, H, T', E)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, d)), keys, values  # (B, T', D)


def block_step(block: ConformerBlock | nn.Module, x: Tensor, pos: Tensor, mask: Tensor, pad: Tensor, keys: Tensor,
               values: Tensor, conv: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``ConformerBlock.forward`` in eval mode: x (B, T', D), caches keys/values (B, H, P, E) and conv inputs
    (B, D, K - 1) (None: zero padding, offline) -> (B, T', D), keys/values (B, H, S, E), conv cache."""
    assert isinstance(block, ConformerBlock)
    ffn1, attn, conv_norm, ffn2, final = block.norms
    x = x + 0.5 * block.ffn1(ffn1(x))
    y, keys, values = attention(block.attn, attn(x), pos, mask, keys, values)
    x = x + y
    y, conv = block.conv(conv_norm(x), pad, conv)
    x = x + y
    x = x + 0.5 * block.ffn2(ffn2(x))
    return final(x), keys, values, conv


class OfflineGraph(nn.Module):
    """feats (B, T, F), feat_lens (B,) -> CTC log-probs (B, T', V), out_lens (B,), encoder output (B, T', D):
    ``CTCModel.forward`` / ``encode`` at full context (T >= the front end's receptive field)."""

    def __init__(self, model: CTCModel) -> None:
        super().__init__()
        assert isinstance(model.encoder, ConformerEncoder)
        self.model, self.encoder = model, model.encoder

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.model.utterance_norm:
            feats = utterance_mean_norm(feats, feat_lens)
        enc = self.encoder
        x = enc.subsampling(self.model.normalizer(feats)) * math.sqrt(enc.dim)  # (B, T', D)
        out_lens = enc.subsampling.output_lengths(feat_lens)
        pad = padding_mask(out_lens, x.size(1))  # (B, T')
        mask = pad[:, None, None, :]  # (B, 1, 1, S)
        pos = relative_positions(x.size(1), x.size(1), enc.dim, x.device)  # (2T' - 1, D)
        empty = x.new_zeros(x.size(0), enc.heads, 0, enc.dim // enc.heads)  # (B, H, 0, E)
        for block in enc.blocks:
            x, _, _, _ = block_step(block, x, pos, mask, pad, empty, empty, None)
        out = x.masked_fill(~pad[..., None], 0.0)
        return self.model.ctc_log_probs(out), out_lens, out


class HeadGraph(nn.Module):
    """encoder output (B, T', D) -> CTC log-probs (B, T', V) (``CTCModel.ctc_log_probs``)."""

    def __init__(self, model: CTCModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_out: Tensor) -> Tensor:
        return self.model.ctc_log_probs(encoder_out)


def chunk_masks(offsets: Tensor, cache_lens: Tensor, chunk_lens: Tensor, cached: int, size: int, chunk_size: Tensor,
                left_chunks: Tensor) -> tuple[Tensor, Tensor]:
    """``nn.masks.stream_masks`` from tensors: B streams at absolute frames ``offsets`` with ``cache_lens`` real
    cached frames (left-padded to P = ``cached``) and ``chunk_lens`` new frames (right-padded to T' = ``size``)
    -> attention mask (B, 1, T', S) and padding mask (B, T') of the new frames."""
    device = offsets.device
    query = (offsets[:, None] + torch.arange(size, device=device)) // chunk_size  # (B, T') chunk of each query
    key = (offsets[:, None] - cached + torch.arange(cached + size, device=device)) // chunk_size  # (B, S)
    mask = key[:, None, :] <= query[:, :, None]  # (B, T', S)
    mask = mask & ((left_chunks < 0) | (key[:, None, :] >= query[:, :, None] - left_chunks))
    column = torch.arange(cached + size, device=device)  # (S,)
    real = (column[None, :] >= cached - cache_lens[:, None]) & (column[None, :] < cached + chunk_lens[:, None])
    return (mask & real[:, None, :])[:, None], padding_mask(chunk_lens, size)


class ChunkGraph(nn.Module):
    """One streaming step of B streams (``ConformerEncoder._advance`` after the buffering):

    chunk (B, N, F) raw feature frames, N = (T' - 1) * factor + receptive field (zero-padded per stream),
    chunk_lens (B,) new encoder frames per stream (<= T'), offsets (B,) each stream's absolute encoder frame,
    cache_lens (B,) real cached frames, attn_keys / attn_values (L, B, H, P, E) left-padded, conv_cache
    (L, B, D, K - 1), chunk_size and left_chunks () ->
    output (B, T', D), new_keys / new_values (L, B, H, P + T', E), new_conv_cache (L, B, D, K - 1).
    The caller keeps each stream's window of the new caches (and only the last left_chunks chunks)."""

    def __init__(self, model: CTCModel) -> None:
        super().__init__()
        assert isinstance(model.encoder, ConformerEncoder)
        self.model, self.encoder = model, model.encoder

    def forward(self, chunk: Tensor, chunk_lens: Tensor, offsets: Tensor, cache_lens: Tensor, attn_keys: Tensor,
                attn_values: Tensor, conv_cache: Tensor, chunk_size: Tensor, left_chunks: Tensor,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        enc = self.encoder
        x = enc.subsampling(self.model.normalizer(chunk)) * math.sqrt(enc.dim)  # (B, T', D)
        cached, size = attn_keys.size(3), x.size(1)
        mask, pad = chunk_masks(offsets, cache_lens, chunk_lens, cached, size, chunk_size, left_chunks)
        pos = relative_positions(size, cached + size, enc.dim, x.device)  # (R, D)
        keys, values, convs = [], [], []
        for i, block in enumerate(enc.blocks):
            x, k, v, c = block_step(block, x, pos, mask, pad, attn_keys[i], attn_values[i], conv_cache[i])
            keys.append(k)
            values.append(v)
            convs.append(c)
        return x, torch.stack(keys), torch.stack(values), torch.stack(convs)
