"""One model across modalities: per-modality front ends and adapters (``models/adapters.py``) -> shared encoder
layers (Conformer or Transformer blocks) -> one Transformer decoder over one vocabulary, told by a tag prefix what
to produce (NeMo Canary / Whisper style, small).

Dimension letters: B batch, N input positions after a front end, D shared width, E decoder width, W vocabulary
pieces, G tags, U target length.

Decoder vocabulary: the tokenizer's W pieces, then the task tags (``<transcribe>`` = W + 0, ``<translate>`` =
W + 1), then one tag per language (``<en>``, ``<de>``, ...). Every target starts with two tags, task then target
language (``<transcribe> <en>``, ``<translate> <de>``): the decoder reads them in the place of BOS, searches
force them and never emit a tag. The input modality has no tag: it is the encoder's.

Contract: ``encode(x, x_lens, modality=...) -> (memory, memory_lens)``; ``init_state``/``step`` as the decoders of
``decoding/``. ``encode_for_loss`` also returns the shared encoder output that the optional CTC head reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from transduce.data.tokenizer import PAD
from transduce.models.adapters import MODALITIES, Modality
from transduce.models.transformer import TransformerConfig, TransformerDecoder, build_decoder
from transduce.nn.conformer import ConformerBlock, relative_positions, sinusoids
from transduce.nn.image_frontend import WIDTH_LAYOUTS
from transduce.nn.masks import encoder_masks
from transduce.nn.state import DecoderState
from transduce.nn.transformer import EncoderLayer
from transduce.nn.tying import shared_tensor_names

TASK_TAGS = ("transcribe", "translate")
"""The task tags, in vocabulary order after the pieces."""


@dataclass(kw_only=True)
class UnifiedModelConfig:
    """A unified model: input modalities, adapters, shared encoder, decoder; plus freezing and component init."""

    inputs: tuple[str, ...] = ("speech", "text")
    """Input modalities (keys of ``models.adapters.MODALITIES``)."""
    encoder: str = "conformer"
    """Shared encoder blocks: conformer or transformer."""
    dim: int = 256
    """Shared width D (every adapter's output, the encoder)."""
    heads: int = 4
    """Encoder attention heads; must divide dim."""
    layers: int = 6
    """Shared encoder blocks."""
    ffn_dim: int = 1024
    """Feed-forward hidden size of the encoder blocks."""
    kernel_size: int = 15
    """Depthwise convolution kernel of the conformer blocks (odd)."""
    dropout: float = 0.1
    """Dropout on inputs and residual branches."""
    attention_dropout: float = 0.0
    """Dropout on attention weights."""
    input_dim: int = 80
    """Speech: feature bins per frame (data.num_mel_bins)."""
    subsampling: int = 4
    """Speech: frame-rate reduction of the convolutional front end (4, 6 or 8)."""
    subsampling_channels: int = 0
    """Speech: channels of the front-end convolutions (0 = speech_dim)."""
    utterance_norm: bool = False
    """Speech: subtract each utterance's mean filterbank (over its real frames) before the global CMVN, as the
    bundled captions recognizer does; needed to start from it (model.init_encoder_from)."""
    speech_dim: int = 0
    """Speech front end's output width (0 = dim)."""
    text_dim: int = 0
    """Text embedding width (0 = dim)."""
    image_height: int = 32
    """Image: text-line height in pixels the images are scaled to (the manifests' height, >= 8)."""
    image_subsampling: int = 4
    """Image: width reduction of its convolutions (4 or 8)."""
    image_dim: int = 0
    """Image front end's output width (0 = dim)."""
    adapter_layers: int = 0
    """Bottleneck adapter layers after each modality's projection."""
    adapter_bottleneck: int = 64
    """Bottleneck width of the adapter layers."""
    zscore_momentum: float = 0.05
    """Momentum of each adapter's running Z-score statistics (stored with the model)."""
    decoder_layers: int = 3
    """Transformer decoder layers (>= 1)."""
    decoder_dim: int = 0
    """Decoder width E (0 = dim); when it differs a linear bridge maps the encoder output to it."""
    decoder_heads: int = 0
    """Decoder attention heads (0 = heads)."""
    decoder_ffn_dim: int = 0
    """Decoder feed-forward hidden size (0 = ffn_dim)."""
    decoder_pre_norm: bool = True
    """Pre-LN decoder (False: post-LN, e.g. to take the decoder of a post-LN translation model)."""
    decoder_positions: str = "sinusoidal"
    """Decoder positions: sinusoidal, learned, shaw or rope."""
    max_positions: int = 512
    """Longest target (tags included) the decoder's position table covers."""
    ctc_weight: float = 0.0
    """Speech examples' loss: ctc_weight * CTC on the transcript (over the pieces) + (1 - ctc_weight) * CE."""
    train_only: tuple[str, ...] = ()
    """Parameter-efficient training: train only these parts, freeze the rest ("adapters"; "tags": the tag rows
    of the decoder embedding). Empty = train everything."""
    init_encoder_from: str = ""
    """A speech model folder (task ctc, conformer) whose subsampling and blocks start the speech front end and the
    shared encoder; tensors that do not fit are an error naming them."""
    init_decoder_from: str = ""
    """A translation model folder whose decoder (and, when widths agree, source embedding as the text front end)
    start this run; its tokenizer becomes the model's vocabulary (tag rows start fresh)."""


class SharedEncoder(nn.Module):
    """Adapter outputs (B, N, D) -> Conformer blocks with relative positions, or Transformer layers with
    absolute sinusoids -> (B, N, D), padded positions zero."""

    def __init__(self, blocks: list[nn.Module], dim: int, dropout: float, final_norm: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.Identity() if final_norm is None else final_norm
        self.dim, self.dropout = dim, nn.Dropout(dropout)
        self.relative = bool(blocks) and isinstance(blocks[0], ConformerBlock)

    def encode(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        attn, pad = encoder_masks(x_lens, x.size(1))  # (B, 1, 1, N), (B, N)
        if self.relative:
            pos = self.dropout(relative_positions(x.size(1), x.size(1), self.dim, x.device))  # (2N - 1, D)
            x = self.dropout(x)
            for block in self.blocks:
                x, _ = block(x, pos, attn, pad)
        else:
            x = self.dropout(x + sinusoids(torch.arange(x.size(1), device=x.device), self.dim).to(x.dtype))
            for layer in self.blocks:
                x = layer(x, attn)
        return self.final_norm(x).masked_fill(~pad[..., None], 0.0), x_lens


class UnifiedModel(nn.Module):
    """modalities[m] -> shared encoder -> (CTC head over W; bridge -> decoder over W + G)."""

    def __init__(self, modalities: dict[str, Modality], encoder: SharedEncoder, decoder: TransformerDecoder, *,
                 bridge: nn.Module | None = None, ctc_head: nn.Linear | None = None) -> None:
        super().__init__()
        self.modalities = nn.ModuleDict(modalities)
        self.encoder, self.decoder = encoder, decoder
        self.bridge = nn.Identity() if bridge is None else bridge
        self.ctc_head = ctc_head

    def modality(self, name: str) -> Modality:
        """The front end and adapter of input ``name`` ("": the model's only one); a one-line error otherwise."""
        names = list(self.modalities)
        if not name and len(names) == 1:
            name = names[0]
        if name not in self.modalities:
            raise ValueError(f"input {name or '(unnamed)'!r}: this model takes {', '.join(names)}")
        found = self.modalities[name]
        assert isinstance(found, Modality)
        return found

    def encode_for_loss(self, x: Tensor, x_lens: Tensor, *, modality: str = "") -> tuple[Tensor, Tensor, Tensor]:
        """x (B, ...) of ``modality`` -> decoder memory (B, N, E), shared encoder output (B, N, D), lens (B,)."""
        h, lens = self.modality(modality).encode(x, x_lens)  # (B, N, D)
        out, lens = self.encoder.encode(h, lens)
        return self.bridge(out), out, lens

    def encode(self, x: Tensor, x_lens: Tensor, *, modality: str = "") -> tuple[Tensor, Tensor]:
        memory, _, lens = self.encode_for_loss(x, x_lens, modality=modality)
        return memory, lens

    def ctc_log_probs(self, hidden: Tensor) -> Tensor:
        """Shared encoder output (B, N, D) -> fp32 CTC log-probs over the pieces (B, N, W), blank = PAD."""
        head = self.ctc_head
        if not isinstance(head, nn.Linear):
            raise ValueError("this model has no CTC head (model.ctc_weight: 0)")
        return head(hidden).float().log_softmax(dim=-1)

    def forward(self, x: Tensor, x_lens: Tensor, tgt_in: Tensor, *, modality: str = "") -> Tensor:
        """Teacher forcing: tgt_in (B, U) (tags first) -> logits (B, U, W + G)."""
        memory, lens = self.encode(x, x_lens, modality=modality)
        return self.decoder(tgt_in, memory, lens)

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> DecoderState:
        return self.decoder.init_state(memory, memory_lens)

    def step(self, tokens: Tensor, memory: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """tokens (N,) -> log-probs (N, W + G) of the next token, and the new state."""
        return self.decoder.step(tokens, memory, state)

    def fsdp_units(self) -> list[nn.Module]:
        return [*self.encoder.blocks, *self.decoder.layers]


def check_config(cfg: UnifiedModelConfig) -> None:
    """ValueError naming the first bad ``model.*`` field."""
    unknown = [m for m in cfg.inputs if m not in MODALITIES]
    if not cfg.inputs or unknown:
        raise ValueError(f"model.inputs: unknown {unknown or 'empty'} (known: {', '.join(MODALITIES)})")
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"model.encoder: expected one of {', '.join(ENCODERS)}, got {cfg.encoder!r}")
    if cfg.dim % cfg.heads or (cfg.decoder_dim or cfg.dim) % (cfg.decoder_heads or cfg.heads):
        raise ValueError(f"model.heads: heads must divide dim ({cfg.dim}/{cfg.heads}, decoder "
                         f"{cfg.decoder_dim or cfg.dim}/{cfg.decoder_heads or cfg.heads})")
    if cfg.layers < 0 or cfg.decoder_layers < 1:
        raise ValueError(f"model.decoder_layers: need >= 1 decoder and >= 0 encoder layers, got "
                         f"{cfg.decoder_layers}, {cfg.layers}")
    if "image" in cfg.inputs and (cfg.image_subsampling not in WIDTH_LAYOUTS or cfg.image_height < 8):
        raise ValueError(f"model.image_subsampling: one of {sorted(WIDTH_LAYOUTS)} with model.image_height >= 8, got "
                         f"{cfg.image_subsampling} and {cfg.image_height}")
    if cfg.kernel_size % 2 == 0:
        raise ValueError(f"model.kernel_size: must be odd, got {cfg.kernel_size}")
    if not 0.0 <= cfg.ctc_weight < 1.0:
        raise ValueError(f"model.ctc_weight: must be in [0, 1), got {cfg.ctc_weight}")
    bad = [p for p in cfg.train_only if p not in ("adapters", "tags")]
    if bad:
        raise ValueError(f"model.train_only: unknown part {bad[0]!r} (known: adapters, tags)")


def _conformer(cfg: UnifiedModelConfig) -> SharedEncoder:
    blocks: list[nn.Module] = [ConformerBlock(cfg.dim, cfg.heads, cfg.ffn_dim, cfg.kernel_size, dropout=cfg.dropout,
                                              attention_dropout=cfg.attention_dropout) for _ in range(cfg.layers)]
    return SharedEncoder(blocks, cfg.dim, cfg.dropout)


def _transformer(cfg: UnifiedModelConfig) -> SharedEncoder:
    layers: list[nn.Module] = [EncoderLayer(cfg.dim, cfg.heads, cfg.ffn_dim, dropout=cfg.dropout,
                                            attention_dropout=cfg.attention_dropout) for _ in range(cfg.layers)]
    return SharedEncoder(layers, cfg.dim, cfg.dropout, nn.LayerNorm(cfg.dim))


ENCODERS = {"conformer": _conformer, "transformer": _transformer}
"""model.encoder -> builder of the shared layers."""


def decoder_config(cfg: UnifiedModelConfig) -> TransformerConfig:
    """The Transformer settings of the decoder (the decoder part of a translation model's config)."""
    return TransformerConfig(dim=cfg.decoder_dim or cfg.dim, heads=cfg.decoder_heads or cfg.heads,
                             ffn_dim=cfg.decoder_ffn_dim or cfg.ffn_dim, decoder_layers=cfg.decoder_layers,
                             dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                             pre_norm=cfg.decoder_pre_norm, positions=cfg.decoder_positions,
                             max_positions=cfg.max_positions)


def build_unified(cfg: UnifiedModelConfig, vocab: int, languages: int) -> UnifiedModel:
    """Config, vocabulary pieces W (PAD = 0 = CTC blank) and language count -> model with a decoder over
    W + len(TASK_TAGS) + languages; ValueError naming the field on bad values."""
    check_config(cfg)
    modalities = {name: MODALITIES[name](cfg, vocab) for name in cfg.inputs}
    dec = decoder_config(cfg)
    decoder = build_decoder(dec, vocab + len(TASK_TAGS) + languages, PAD)
    bridge = nn.Linear(cfg.dim, dec.dim) if dec.dim != cfg.dim else None
    head = nn.Linear(cfg.dim, vocab) if cfg.ctc_weight > 0 else None
    return UnifiedModel(modalities, ENCODERS[cfg.encoder](cfg), decoder, bridge=bridge, ctc_head=head)


def tied_aliases(cfg: UnifiedModelConfig) -> set[str]:
    """State-dict names stored once (the decoder's output projection is its embedding)."""
    return shared_tensor_names(build_unified(cfg, 8, 1))


@dataclass(frozen=True)
class Tags:
    """The tag ids of a model with ``pieces`` W vocabulary pieces and languages ``langs``."""

    pieces: int
    langs: tuple[str, ...]

    def prefix(self, task: str, lang: str) -> list[int]:
        """[task tag, language tag]: the decoder's first two inputs."""
        return [self.pieces + TASK_TAGS.index(task), self.pieces + len(TASK_TAGS) + self.langs.index(lang)]

    def ids(self) -> Tensor:
        """Every tag id (G,): never emitted by a search."""
        return torch.arange(self.pieces, self.pieces + len(TASK_TAGS) + len(self.langs))


def trainable(model: UnifiedModel, parts: tuple[str, ...], pieces: int) -> int:
    """Freeze every parameter outside ``parts`` ("adapters": each modality's adapter; "tags": the rows after the
    ``pieces`` W vocabulary pieces of the decoder embedding, which is tied to the output projection: a gradient
    hook zeroes the other rows). Returns the count of trained values."""
    for p in model.parameters():
        p.requires_grad_(False)
    count = 0
    if "adapters" in parts:
        for name in model.modalities:
            for p in model.modality(name).adapter.parameters():
                p.requires_grad_(True)
                count += p.numel()
    if "tags" in parts:
        weight = model.decoder.embed.embedding.weight  # (W + G, E)
        keep = torch.zeros(weight.size(0), 1, dtype=weight.dtype)
        keep[pieces:] = 1.0  # (W + G, 1)
        weight.requires_grad_(True)
        weight.register_hook(lambda grad: grad * keep.to(grad.device))
        count += (weight.size(0) - pieces) * weight.size(1)
    return count
