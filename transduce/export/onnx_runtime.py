"""An ONNX export of a CTC Conformer run by onnxruntime behind the interface ``Recognizer``, ``StreamSession`` and
``StreamBatch`` call on a ``CTCModel``: ``encode`` / ``ctc_log_probs`` for whole utterances and ``init_stream`` /
``forward_chunks`` for streams, so search, endpointing, stream sessions and batched streams run unchanged over it.

The graphs (``export/onnx.py``): ``encoder.onnx`` (whole utterances), ``encoder_chunk.onnx`` (one chunk of B
streams with their caches, streaming models only) and ``ctc.onnx`` (the CTC head). The front-end geometry and
the model sizes come from the encoder's ONNX metadata, as a C++ runtime would read them. Stream states are the
PyTorch ``EncoderStreamState`` (per-block key/value and convolution caches, the frames emitted), except that
``feats`` holds raw feature frames: the graphs normalize them.

Dimension letters: B batch (streams), T feature frames, F feature bins, T' encoder frames, D model size,
L blocks, H heads, P cached frames, E head size, K depthwise kernel, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transduce.errors import ConfigError
from transduce.nn.state import KVCache
from transduce.nn.stream_state import ConformerLayerState, EncoderStreamState, advance_streams
from transduce.nn.subsampling import LAYOUTS, conv_lengths

OFFLINE, CHUNK, HEAD = "encoder.onnx", "encoder_chunk.onnx", "ctc.onnx"


@dataclass(frozen=True)
class FrontEnd:
    """The geometry of the convolutional front end (``Conv2dSubsampling``) a stream needs."""

    factor: int
    receptive_field: int

    @property
    def layout(self) -> list[tuple[int, int]]:
        return LAYOUTS[self.factor]

    @property
    def min_frames(self) -> int:
        return self.receptive_field

    def output_lengths(self, lengths: Tensor) -> Tensor:
        out = conv_lengths(lengths, self.layout)
        assert isinstance(out, Tensor)
        return out.clamp(min=0)


@dataclass(frozen=True)
class ExportedEncoder:
    """What the ONNX metadata says about the encoder (the sizes ``ConformerEncoder`` has as attributes)."""

    subsampling: FrontEnd
    input_dim: int
    dim: int
    heads: int
    layers: int
    kernel_size: int
    causal: bool


def session(path: Path) -> ort.InferenceSession:
    """An onnxruntime CPU session on ``path`` using as many threads as torch does (``torch.set_num_threads``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().contiguous().numpy()


class OnnxCTCModel(nn.Module):
    """The exported graphs of a CTC Conformer folder, with ``CTCModel``'s inference interface (CTC search only:
    no attention decoder, so ``decoder`` is None)."""

    decoder = None
    reverse_decoder = None

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.offline, self.head = session(folder / OFFLINE), session(folder / HEAD)
        meta = self.offline.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        self.encoder = ExportedEncoder(
            FrontEnd(int(meta["subsampling"]), int(meta["receptive_field"])), input_dim=int(meta["feature_dim"]),
            dim=int(meta["dim"]), heads=int(meta["heads"]), layers=int(meta["layers"]),
            kernel_size=int(meta["kernel_size"]), causal=meta["causal"] == "1")
        self.utterance_norm = meta["utterance_norm"] == "1"
        self._unstreamable = meta.get("unstreamable") or None
        self.chunk = session(folder / CHUNK) if self._unstreamable is None else None

    def unstreamable(self) -> str | None:
        """Why this model cannot stream, naming the config field (``streaming.session.unstreamable``)."""
        return self._unstreamable

    def attention_decoder(self) -> nn.Module:
        raise ConfigError("the ONNX export computes the encoder and CTC head only: attention decoding and "
                          "rescoring need the PyTorch model folder")

    # -- whole utterances --------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, feats: Tensor, feat_lens: Tensor, mask: Tensor | None = None, *, chunk_size: int = 0,
               left_chunks: int = -1) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) -> encoder output (B, T', D), out_lens (B,) (``CTCModel.encode``);
        ``chunk_size`` > 0 runs the streaming graph chunk by chunk (the same result as the chunk mask)."""
        if mask is not None:
            raise ValueError("the ONNX encoder takes no extra attention mask")
        if chunk_size > 0:
            return self._encode_chunked(feats, feat_lens, chunk_size, left_chunks)
        short = self.encoder.subsampling.min_frames - feats.size(1)
        if short > 0:  # too short for one output frame: padded to one, which its length (0) masks
            feats = F.pad(feats, (0, 0, 0, short))
        _, out_lens, out = self.offline.run(None, {"feats": _numpy(feats.float()), "feat_lens": _numpy(feat_lens)})
        return torch.from_numpy(out), torch.from_numpy(out_lens)

    def _encode_chunked(self, feats: Tensor, feat_lens: Tensor, chunk_size: int, left_chunks: int
                        ) -> tuple[Tensor, Tensor]:
        """Every row as a stream given all its frames at once, advanced one chunk per call until none is left."""
        if (why := self.unstreamable()) is not None:
            raise ConfigError(f"decode.chunk_size: {why}")
        rows = range(feats.size(0))
        states = [self.init_stream(1) for _ in rows]
        inputs = [feats[b, : int(feat_lens[b])] for b in rows]
        pieces: list[list[Tensor]] = [[] for _ in rows]
        while True:
            out, lens, states = self.forward_chunks(inputs, states, chunk_size=chunk_size, left_chunks=left_chunks,
                                                    final=[True] * len(states))
            if int(lens.sum()) == 0:
                break
            for b in rows:
                pieces[b].append(out[b, : int(lens[b])])
            inputs = [feats.new_zeros(0, feats.size(2)) for _ in rows]
        encoded = [torch.cat(p) if p else feats.new_zeros(0, self.encoder.dim) for p in pieces]  # (T'_b, D) each
        out_lens = torch.tensor([e.size(0) for e in encoded], dtype=torch.long)
        return nn.utils.rnn.pad_sequence(encoded, batch_first=True), out_lens  # (B, T', D)

    @torch.no_grad()
    def ctc_log_probs(self, out: Tensor) -> Tensor:
        """Encoder output (..., T', D) -> CTC log-probs (..., T', V) through ``ctc.onnx``."""
        flat = out.reshape(1, -1, out.size(-1))  # (1, ... * T', D)
        if flat.size(1) == 0:
            vocab = int(self.metadata["vocab_size"])
            return out.new_zeros(*out.shape[:-1], vocab)
        (log_probs,) = self.head.run(None, {"encoder_out": _numpy(flat.float())})
        return torch.from_numpy(log_probs).reshape(*out.shape[:-1], -1)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) -> CTC log-probs (B, T', V), out_lens (B,)."""
        out, out_lens = self.encode(feats, feat_lens)
        return self.ctc_log_probs(out), out_lens

    # -- streams ---------------------------------------------------------------------------------------------------
    def init_stream(self, batch: int = 1, device: torch.device | str | None = None) -> EncoderStreamState:
        """Empty caches for ``batch`` streams (``CTCModel.init_stream``)."""
        if (why := self.unstreamable()) is not None:
            raise ValueError(why)
        enc = self.encoder
        empty = torch.zeros(batch, enc.heads, 0, enc.dim // enc.heads)  # (B, H, 0, E)
        conv = torch.zeros(batch, enc.dim, enc.kernel_size - 1)  # (B, D, K - 1)
        layers = [ConformerLayerState(KVCache(empty, empty), conv) for _ in range(enc.layers)]
        return EncoderStreamState(torch.zeros(batch, 0, enc.input_dim), layers, 0)

    def forward_chunks(
        self, feats: Sequence[Tensor], states: Sequence[EncoderStreamState], *, chunk_size: int,
        left_chunks: int = -1, final: Sequence[bool] | None = None,
    ) -> tuple[Tensor, Tensor, list[EncoderStreamState]]:
        """``CTCModel.forward_chunks``: B streams with their own states advance by at most one chunk each, in
        one call of ``encoder_chunk.onnx``; raw frames (N_b, F) -> output (B, T', D), lengths (B,), new states."""
        return advance_streams(self._advance, feats, states, factor=self.encoder.subsampling.factor,
                               dim=self.encoder.dim, chunk_size=chunk_size, left_chunks=left_chunks, final=final)

    def _advance(self, buffered: list[Tensor], states: list[EncoderStreamState], sizes: list[int], chunk_size: int,
                 left_chunks: int) -> tuple[Tensor, list[list[ConformerLayerState]]]:
        """One chunk of B' streams (``ConformerEncoder._advance``): caches left-padded to the longest (P), new
        frames right-padded to T' = max sizes; returns (B', T', D) and each stream's window of the new caches."""
        assert self.chunk is not None
        sub, size = self.encoder.subsampling, max(sizes)
        need = (size - 1) * sub.factor + sub.receptive_field
        chunk = torch.cat([F.pad(buf[:, :need], (0, 0, 0, need - min(need, buf.size(1)))) for buf in buffered])
        cached = [s.layers[0].attn.keys.size(2) for s in states]
        past = max(cached)

        def stacked(part: str) -> np.ndarray:  # (L, B', H, P, E), each stream's cache left-padded to P
            return _numpy(torch.stack([torch.cat([F.pad(getattr(s.layers[i].attn, part), (0, 0, past - c, 0))
                                                  for s, c in zip(states, cached, strict=True)])
                                       for i in range(self.encoder.layers)]))

        conv = torch.stack([torch.cat([s.layers[i].conv for s in states]) for i in range(self.encoder.layers)])
        x, keys, values, convs = (torch.from_numpy(a) for a in self.chunk.run(None, {
            "chunk": _numpy(chunk.float()), "chunk_lens": np.array(sizes, dtype=np.int64),
            "offsets": np.array([s.frames for s in states], dtype=np.int64),
            "cache_lens": np.array(cached, dtype=np.int64), "attn_keys": stacked("keys"),
            "attn_values": stacked("values"), "conv_cache": _numpy(conv),
            "chunk_size": np.array(chunk_size, dtype=np.int64), "left_chunks": np.array(left_chunks, dtype=np.int64),
        }))
        per_stream = []
        for b, (stream, n) in enumerate(zip(cached, sizes, strict=True)):
            begin = past - stream
            if left_chunks >= 0:  # later chunks see only the last left_chunks whole chunks
                begin = max(begin, past + n - left_chunks * chunk_size)
            window = slice(begin, past + n)  # the stream's own cached and new frames
            per_stream.append([ConformerLayerState(KVCache(keys[i, b : b + 1, :, window],
                                                           values[i, b : b + 1, :, window]), convs[i, b : b + 1])
                               for i in range(self.encoder.layers)])
        return x, per_stream
