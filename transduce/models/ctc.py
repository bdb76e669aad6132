"""Speech recognizer: feature normalizer -> Conformer or Transformer encoder -> CTC head, plus an
optional attention decoder (and right-to-left decoder) for hybrid CTC/attention (WeNet U2/U2++).

Dimension letters: B batch, T feature frames, F feature bins, T' encoder frames, D model size,
V vocabulary (blank = 0 = the tokenizer's PAD id; the decoder never emits it), U target length.
Contract: ``encode(feats, feat_lens) -> (out, out_lens)``; ``forward`` returns CTC log-probs; the
losses are ``ctc_loss`` and ``attention_loss`` below (summed over the batch: the trainer normalizes).
Streaming: ``init_stream`` + ``forward_chunk``, or ``forward_chunks`` for many streams in one call (chunk masks
and caches live in ``nn/conformer.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.models.losses import label_smoothed_nll
from transduce.models.transformer import TransformerConfig, TransformerDecoder, build_decoder, layer_tp_plan
from transduce.nn.conformer import ConformerEncoder, RelPositionMultiHeadAttention, TransformerSpeechEncoder
from transduce.nn.local_attention import LocalWindow
from transduce.nn.masks import padding_mask
from transduce.nn.state import DecoderState
from transduce.nn.stream_state import EncoderStreamState
from transduce.nn.subsampling import LAYOUTS, FrontEnd, conv_lengths
from transduce.nn.tying import shared_tensor_names

BLANK = 0


@dataclass(kw_only=True)
class CTCModelConfig:
    """Sizes and regularization of a CTC encoder."""

    encoder: str = "conformer"
    """Encoder kind: conformer or transformer."""
    input_dim: int = 80
    """Feature bins F per input frame (e.g. 80 log-mel)."""
    dim: int = 144
    """Model size D."""
    heads: int = 4
    """Attention heads; must divide dim."""
    layers: int = 6
    """Number of encoder blocks."""
    ffn_dim: int = 576
    """Hidden size of the feed-forward blocks."""
    kernel_size: int = 15
    """Depthwise convolution kernel (odd; conformer only)."""
    subsampling: int = 4
    """Frame-rate reduction of the convolutional front end: 4, 6 or 8."""
    subsampling_channels: int = 0
    """Channels of the front-end convolutions (0 = dim); fewer makes the front end much cheaper."""
    dropout: float = 0.1
    """Dropout on the input and residual branches."""
    attention_dropout: float = 0.0
    """Dropout on attention weights."""
    causal_conv: bool = False
    """Left-only depthwise convolution (needed for streaming; conformer only)."""
    utterance_norm: bool = False
    """Subtract each utterance's mean feature vector (over its real frames) before the global CMVN:
    removes the microphone/gain differences between recordings. Needs the whole utterance."""
    decoder_layers: int = 0
    """Attention decoder layers on top of the encoder (0 = CTC only; > 0 = hybrid CTC/attention)."""
    decoder_ffn_dim: int = 0
    """Hidden size of the decoder feed-forward blocks (0 = ffn_dim)."""
    reverse_decoder_layers: int = 0
    """Right-to-left decoder layers (U2++), used in attention rescoring (0 = none)."""
    ctc_weight: float = 0.3
    """Hybrid loss: ctc_weight * CTC + (1 - ctc_weight) * attention (ignored without a decoder)."""
    reverse_weight: float = 0.3
    """Share of the right-to-left decoder in the attention loss."""
    dynamic_chunk: bool = False
    """Dynamic chunk training (WeNet): each batch attends within a random chunk size, or full context."""
    max_chunk: int = 25
    """Largest random chunk (encoder frames) in dynamic chunk training."""
    full_context_prob: float = 0.5
    """Probability that a batch uses full context in dynamic chunk training."""
    left_chunks: int = -1
    """Left chunks each chunk sees in training (-1 = all); with dynamic_left_chunks, the largest draw."""
    dynamic_left_chunks: bool = False
    """Draw the left chunks per batch uniformly from 0..left_chunks."""


def utterance_mean_norm(feats: Tensor, feat_lens: Tensor) -> Tensor:
    """feats (B, T, F) minus each utterance's mean over its real frames; padding stays 0."""
    real = padding_mask(feat_lens, feats.size(1))[..., None]  # (B, T, 1)
    mean = (feats * real).sum(1, keepdim=True) / feat_lens[:, None, None].clamp(min=1)  # (B, 1, F)
    return (feats - mean) * real


@dataclass(kw_only=True)
class ChunkTraining:
    """How training draws the attention context per batch (``CTCModelConfig``'s dynamic chunk fields)."""

    max_chunk: int = 25
    full_context_prob: float = 0.5
    left_chunks: int = -1
    dynamic_left_chunks: bool = False

    def draw(self) -> tuple[int, int]:
        """(chunk_size, left_chunks) for one batch from torch's global RNG (restored on resume);
        chunk_size 0 = full context."""
        if float(torch.rand(())) < self.full_context_prob:
            return 0, -1
        chunk = int(torch.randint(1, self.max_chunk + 1, ()))
        left = self.left_chunks
        if self.dynamic_left_chunks and left >= 0:
            left = int(torch.randint(0, left + 1, ()))
        return chunk, left


class CTCModel(nn.Module):
    """[utterance mean norm] -> normalizer (e.g. ``GlobalCMVN``) -> encoder -> linear head over V tokens,
    [+ attention decoder over the encoder output, + right-to-left decoder]."""

    def __init__(
        self, encoder: ConformerEncoder | TransformerSpeechEncoder, head: nn.Linear,
        normalizer: nn.Module | None = None, *, utterance_norm: bool = False,
        decoder: TransformerDecoder | None = None, reverse_decoder: TransformerDecoder | None = None,
        chunk_training: ChunkTraining | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.encoder = encoder
        self.head = head
        self.utterance_norm = utterance_norm
        self.decoder = decoder
        self.reverse_decoder = reverse_decoder
        self.chunk_training = chunk_training

    def encode(
        self, feats: Tensor, feat_lens: Tensor, mask: Tensor | None = None, *, chunk_size: int = 0,
        left_chunks: int = -1, window: LocalWindow | None = None,
    ) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) [, attention mask (T', T')] -> out (B, T', D), out_lens (B,).
        ``chunk_size`` > 0 restricts attention to chunks (streaming-equivalent); in training with dynamic
        chunks and no explicit chunk_size, each call draws its own. ``window``: blockwise local attention
        (Conformer only)."""
        if self.utterance_norm:
            feats = utterance_mean_norm(feats, feat_lens)
        if self.training and self.chunk_training is not None and chunk_size == 0:
            chunk_size, left_chunks = self.chunk_training.draw()
        short = self.encoder.subsampling.min_frames - feats.size(1)
        if short > 0:  # too short for one output frame: padded to one, which every length (0) masks, as in a
            feats = F.pad(feats, (0, 0, 0, short))  # batch with longer audio -> (B, min_frames, F)
        if window is not None:
            if not isinstance(self.encoder, ConformerEncoder):
                raise ValueError("local attention (window) needs the conformer encoder")
            return self.encoder.encode(self.normalizer(feats), feat_lens, mask, window=window)
        return self.encoder.encode(self.normalizer(feats), feat_lens, mask, chunk_size=chunk_size,
                                   left_chunks=left_chunks)

    def ctc_log_probs(self, out: Tensor) -> Tensor:
        """Encoder output (B, T', D) -> fp32 CTC log-probs (B, T', V)."""
        return self.head(out).float().log_softmax(dim=-1)

    def forward(self, feats: Tensor, feat_lens: Tensor, *, chunk_size: int = 0,
                left_chunks: int = -1) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) -> fp32 log-probs (B, T', V), out_lens (B,)."""
        out, out_lens = self.encode(feats, feat_lens, chunk_size=chunk_size, left_chunks=left_chunks)
        return self.ctc_log_probs(out), out_lens

    def init_stream(self, batch: int = 1, device: torch.device | str | None = None) -> EncoderStreamState:
        """Empty streaming state (needs a causal Conformer trained without utterance_norm)."""
        if self.utterance_norm:
            raise ValueError("model.utterance_norm needs the whole utterance: a streaming model is trained without it")
        if not isinstance(self.encoder, ConformerEncoder):
            raise ValueError("streaming needs the conformer encoder")
        return self.encoder.init_state(batch, device)

    def forward_chunk(
        self, feats: Tensor, state: EncoderStreamState, *, chunk_size: int, left_chunks: int = -1,
        final: bool = False,
    ) -> tuple[Tensor, EncoderStreamState]:
        """Next raw feature frames (B, N, F) -> encoder output (B, T', D) of the chunks completed (see
        ``ConformerEncoder.forward_chunk``) and the new state."""
        assert isinstance(self.encoder, ConformerEncoder)
        return self.encoder.forward_chunk(self.normalizer(feats), state, chunk_size=chunk_size,
                                          left_chunks=left_chunks, final=final)

    def forward_chunks(
        self, feats: Sequence[Tensor], states: Sequence[EncoderStreamState], *, chunk_size: int,
        left_chunks: int = -1, final: Sequence[bool] | None = None,
    ) -> tuple[Tensor, Tensor, list[EncoderStreamState]]:
        """B streams in one call: raw frames (N_b, F) and a batch-1 state each -> encoder output (B, T', D)
        of at most one chunk per stream, lengths (B,) and the new states (see ``ConformerEncoder.forward_chunks``)."""
        assert isinstance(self.encoder, ConformerEncoder)
        return self.encoder.forward_chunks([self.normalizer(f) for f in feats], states, chunk_size=chunk_size,
                                           left_chunks=left_chunks, final=final)

    # attention decoder: the StepModel interface of decoding/, over encoder output as memory
    def init_state(self, memory: Tensor, memory_lens: Tensor) -> DecoderState:
        return self.attention_decoder().init_state(memory, memory_lens)

    def step(self, tokens: Tensor, memory: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        log_probs, state = self.attention_decoder().step(tokens, memory, state)
        log_probs[:, PAD] = float("-inf")  # PAD is the CTC blank, never an output token
        return log_probs, state

    def attention_decoder(self) -> TransformerDecoder:
        """The left-to-right decoder; a clear error for a CTC-only model."""
        if self.decoder is None:
            raise ValueError("this model has no attention decoder (model.decoder_layers: 0)")
        return self.decoder

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP shards and gathers one at a time: every encoder block (Conformer ``blocks`` or
        Transformer ``layers``) and every layer of the attention decoders, when there are any. The
        normalizer, front end, CTC head and each decoder's tied embedding stay in the root unit."""
        blocks = self.encoder.blocks if isinstance(self.encoder, ConformerEncoder) else self.encoder.layers
        decoders = [d for d in (self.decoder, self.reverse_decoder) if d is not None]
        return [*blocks, *(layer for decoder in decoders for layer in decoder.layers)]

    def tp_plan(self) -> dict[str, str]:
        """What tensor parallelism (train/tensor_parallel.py) splits over ranks: Transformer attention and
        feed-forward blocks as ``layer_tp_plan`` (the Conformer's feed-forward blocks, the decoders); Conformer
        self-attention likewise, with its position projection colwise and its per-head position biases u, v split
        by rows (heads). Front end, convolution modules, norms, normalizer and CTC head stay whole on every rank."""
        plan = layer_tp_plan(self)
        for name, module in self.named_modules():
            if isinstance(module, RelPositionMultiHeadAttention):
                plan |= {f"{name}.q_proj": "colwise", f"{name}.kv_proj": "colwise_fused", f"{name}.pos_proj": "colwise",
                         f"{name}.out_proj": "rowwise", f"{name}.pos_bias_u": "rows", f"{name}.pos_bias_v": "rows"}
        return plan


def ctc_loss(log_probs: Tensor, out_lens: Tensor, targets: Tensor, target_lens: Tensor) -> Tensor:
    """log_probs (B, T', V), out_lens (B,), padded targets (B, U), target_lens (B,) -> summed CTC loss
    (blank 0; impossible alignments give 0 instead of inf)."""
    return F.ctc_loss(
        log_probs.transpose(0, 1), targets, out_lens, target_lens,  # (T', B, V)
        blank=BLANK, reduction="sum", zero_infinity=True,
    )


def decoder_io(targets: Tensor, target_lens: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """Padded targets (B, U) (PAD = 0 after each row's end) -> decoder input BOS + y and output y + EOS,
    both (B, U + 1) PAD-padded; ``reverse`` flips each row's real tokens first (right-to-left decoder)."""
    b, u = targets.shape
    real = padding_mask(target_lens, u)  # (B, U)
    if reverse:
        index = (target_lens[:, None] - 1 - torch.arange(u, device=targets.device)).clamp(min=0)  # (B, U)
        targets = targets.gather(1, index).masked_fill(~real, PAD)
    bos = targets.new_full((b, 1), BOS)
    tgt_in = torch.cat([bos, targets], dim=1)  # (B, U + 1)
    tgt_out = torch.cat([targets, targets.new_full((b, 1), PAD)], dim=1)
    tgt_out[torch.arange(b, device=targets.device), target_lens] = EOS
    return tgt_in, tgt_out


def attention_loss(
    model: CTCModel, memory: Tensor, memory_lens: Tensor, targets: Tensor, target_lens: Tensor,
    label_smoothing: float = 0.0, reverse_weight: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Teacher-forced decoder loss over memory (B, T', D): label-smoothed cross-entropy summed over real
    output tokens (U + 1 per row, EOS included), mixing in the right-to-left decoder with
    ``reverse_weight``. Returns (loss sum, nll sum), both fp32."""
    losses, nlls = [], []
    for decoder, reverse in ((model.decoder, False), (model.reverse_decoder, True)):
        if decoder is None:
            continue
        tgt_in, tgt_out = decoder_io(targets, target_lens, reverse)
        logits = decoder(tgt_in, memory, memory_lens)  # (B, U + 1, V)
        loss, nll = label_smoothed_nll(logits, tgt_out, epsilon=label_smoothing, ignore_index=PAD)
        losses.append(loss)
        nlls.append(nll)
    if len(losses) == 1:
        return losses[0], nlls[0]
    w = reverse_weight
    return (1 - w) * losses[0] + w * losses[1], (1 - w) * nlls[0] + w * nlls[1]


def _check(cfg: CTCModelConfig, vocab_size: int) -> None:
    def fail(key: str, why: str) -> NoReturn:
        raise ValueError(f"model.{key}: {why}")

    if cfg.encoder not in ("conformer", "transformer"):
        fail("encoder", f"expected conformer or transformer, got {cfg.encoder!r}")
    if cfg.subsampling not in LAYOUTS:
        fail("subsampling", f"expected one of {sorted(LAYOUTS)}, got {cfg.subsampling}")
    if cfg.dim <= 0 or cfg.heads <= 0 or cfg.dim % cfg.heads:
        fail("heads", f"must divide dim {cfg.dim}, got {cfg.heads}")
    if cfg.layers < 1 or cfg.ffn_dim < 1:
        fail("layers" if cfg.layers < 1 else "ffn_dim", "must be positive")
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        fail("kernel_size", f"must be a positive odd number, got {cfg.kernel_size}")
    if not 0.0 <= cfg.dropout < 1.0 or not 0.0 <= cfg.attention_dropout < 1.0:
        fail("dropout", f"dropout and attention_dropout must be in [0, 1), got {cfg.dropout}, {cfg.attention_dropout}")
    if cfg.encoder == "transformer" and cfg.causal_conv:
        fail("causal_conv", "only applies to the conformer encoder")
    freq = conv_lengths(cfg.input_dim, LAYOUTS[cfg.subsampling])
    if not isinstance(freq, int) or freq < 1:
        fail("input_dim", f"{cfg.input_dim} feature bins are too few for subsampling by {cfg.subsampling}")
    if vocab_size < 2:
        fail("vocab_size", f"need blank plus at least one token, got {vocab_size}")
    if cfg.decoder_layers < 0 or cfg.reverse_decoder_layers < 0:
        fail("decoder_layers", "must be >= 0")
    if cfg.reverse_decoder_layers and not cfg.decoder_layers:
        fail("reverse_decoder_layers", "needs a left-to-right decoder (decoder_layers > 0)")
    if not 0.0 <= cfg.ctc_weight <= 1.0 or not 0.0 <= cfg.reverse_weight <= 1.0:
        fail("ctc_weight", f"ctc_weight, reverse_weight: must be in [0, 1], got {cfg.ctc_weight}, {cfg.reverse_weight}")
    if cfg.dynamic_chunk and cfg.max_chunk < 1:
        fail("max_chunk", f"must be >= 1, got {cfg.max_chunk}")
    if not 0.0 <= cfg.full_context_prob <= 1.0:
        fail("full_context_prob", f"must be in [0, 1], got {cfg.full_context_prob}")


def build_ctc(cfg: CTCModelConfig, vocab_size: int, normalizer: nn.Module | None = None, *,
              front_end: FrontEnd | None = None) -> CTCModel:
    """Config + vocabulary size (including blank = 0) -> CTC model; raises ValueError on bad values.
    ``front_end``: a module in place of the encoder's convolutional subsampling (the image front end)."""
    _check(cfg, vocab_size)
    encoder: ConformerEncoder | TransformerSpeechEncoder
    if cfg.encoder == "conformer":
        encoder = ConformerEncoder(
            cfg.input_dim, cfg.dim, heads=cfg.heads, layers=cfg.layers, ffn_dim=cfg.ffn_dim,
            kernel_size=cfg.kernel_size, subsampling=cfg.subsampling, dropout=cfg.dropout,
            subsampling_channels=cfg.subsampling_channels,
            attention_dropout=cfg.attention_dropout, causal=cfg.causal_conv, front_end=front_end,
        )
    else:
        encoder = TransformerSpeechEncoder(
            cfg.input_dim, cfg.dim, heads=cfg.heads, layers=cfg.layers, ffn_dim=cfg.ffn_dim,
            subsampling=cfg.subsampling, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            subsampling_channels=cfg.subsampling_channels, front_end=front_end,
        )
    decoders = [_decoder(cfg, vocab_size, layers) if layers else None
                for layers in (cfg.decoder_layers, cfg.reverse_decoder_layers)]
    chunks = ChunkTraining(max_chunk=cfg.max_chunk, full_context_prob=cfg.full_context_prob,
                           left_chunks=cfg.left_chunks, dynamic_left_chunks=cfg.dynamic_left_chunks)
    return CTCModel(encoder, nn.Linear(cfg.dim, vocab_size), normalizer, utterance_norm=cfg.utterance_norm,
                    decoder=decoders[0], reverse_decoder=decoders[1],
                    chunk_training=chunks if cfg.dynamic_chunk else None)


def _decoder(cfg: CTCModelConfig, vocab_size: int, layers: int) -> TransformerDecoder:
    """A pre-LN Transformer decoder of the encoder's size, with tied input/output embeddings."""
    tcfg = TransformerConfig(dim=cfg.dim, heads=cfg.heads, ffn_dim=cfg.decoder_ffn_dim or cfg.ffn_dim,
                             decoder_layers=layers, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                             max_positions=1024, init="xavier")  # the init hybrid models were trained with
    return build_decoder(tcfg, vocab_size, PAD)


def tied_aliases(cfg: CTCModelConfig) -> set[str]:
    """State-dict names that are the same tensor as an earlier name (each decoder's output projection
    is its embedding): saved once, re-tied by ``build_ctc`` on load."""
    return shared_tensor_names(build_ctc(cfg, 8))
