"""End-to-end speech translation: feature normalizer -> Conformer (or Transformer) speech encoder -> a CTC head
over the English transcript pieces, and a Transformer decoder over target-language pieces (ESPnet's CTC/attention
ST; fairseq's S2T Transformer without CTC when ``ctc_weight`` is 0).

Dimension letters: B batch, T feature frames, F feature bins, T' encoder frames, D encoder size, E decoder size,
V transcript vocabulary (CTC blank = 0 = PAD), W target pieces, L target languages, U target length.

Multilingual: the decoder vocabulary is the target tokenizer's W pieces followed by one tag per target language
(``<2de>`` = W + 0, ``<2fr>`` = W + 1, ...). A tag is the first decoder input, in the place of BOS, so one model
translates into each of its languages; searches never emit a tag.

Contract: ``encode(feats, feat_lens) -> (out, out_lens)`` as the speech models, ``init_state``/``step`` as the
decoders of ``decoding/`` (memory is ``encode``'s output). ``encode_for_loss`` also returns what the CTC head
reads (the final encoder output, or block ``ctc_layer``'s).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transduce.data.tokenizer import PAD
from transduce.models.ctc import ChunkTraining, CTCModelConfig, build_ctc, utterance_mean_norm
from transduce.models.transformer import TransformerConfig, TransformerDecoder, build_decoder
from transduce.nn.conformer import ConformerEncoder, TransformerSpeechEncoder
from transduce.nn.state import DecoderState
from transduce.nn.stream_state import EncoderStreamState
from transduce.nn.subsampling import FrontEnd
from transduce.nn.tying import shared_tensor_names


@dataclass(kw_only=True)
class STModelConfig(CTCModelConfig):
    """A speech translation model: the speech encoder's fields (as ``CTCModelConfig``: encoder, dim, layers,
    dynamic chunks, ...), with ``decoder_layers`` the target-language decoder, plus the fields below."""

    decoder_layers: int = 3
    """Target-language Transformer decoder layers (>= 1)."""
    decoder_dim: int = 0
    """Decoder size E (0 = dim); when it differs from dim a linear bridge maps the encoder output to it."""
    decoder_heads: int = 0
    """Decoder attention heads (0 = heads)."""
    decoder_pre_norm: bool = True
    """Pre-LN decoder (False: post-LN, e.g. to take the decoder of a post-LN translation model)."""
    decoder_positions: str = "sinusoidal"
    """Decoder positions: sinusoidal, learned, shaw or rope (as a translation model's model.positions)."""
    max_positions: int = 512
    """Longest target the decoder's position table covers."""
    ctc_weight: float = 0.3
    """Training loss: ctc_weight * CTC on the English transcript + (1 - ctc_weight) * translation cross-entropy."""
    ctc_layer: int = 0
    """Encoder block whose output the CTC head reads (1-based; 0 = the final output)."""
    init_encoder_from: str = ""
    """A speech model folder (task ctc) whose encoder and CTC head start this run (its transcript tokenizer is
    taken too); tensors that do not fit are an error naming them."""
    init_decoder_from: str = ""
    """A translation model folder whose decoder starts this run (its target tokenizer is taken too; the language
    tags' embeddings start fresh)."""


class SpeechTranslationModel(nn.Module):
    """[utterance mean norm] -> normalizer -> speech encoder -> (CTC head over V; bridge -> decoder over W + L)."""

    def __init__(
        self, encoder: ConformerEncoder | TransformerSpeechEncoder, head: nn.Linear, decoder: TransformerDecoder,
        normalizer: nn.Module | None = None, *, bridge: nn.Module | None = None, ctc_layer: int = 0,
        utterance_norm: bool = False, chunk_training: ChunkTraining | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = nn.Identity() if normalizer is None else normalizer
        self.encoder, self.head, self.decoder = encoder, head, decoder
        self.bridge = nn.Identity() if bridge is None else bridge
        self.ctc_layer, self.utterance_norm, self.chunk_training = ctc_layer, utterance_norm, chunk_training

    def encode_for_loss(self, feats: Tensor, feat_lens: Tensor, *, chunk_size: int = 0, left_chunks: int = -1
                        ) -> tuple[Tensor, Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) -> decoder memory (B, T', E), the CTC head's input (B, T', D),
        out_lens (B,). In training with dynamic chunks and no explicit chunk_size, each call draws its own."""
        if self.utterance_norm:
            feats = utterance_mean_norm(feats, feat_lens)
        if self.training and self.chunk_training is not None and chunk_size == 0:
            chunk_size, left_chunks = self.chunk_training.draw()
        short = self.encoder.subsampling.min_frames - feats.size(1)
        if short > 0:  # too short for one output frame: padded to one, which every length (0) masks
            feats = F.pad(feats, (0, 0, 0, short))  # (B, min_frames, F)
        tapped: list[Tensor] = []  # block ctc_layer's output (B, T', D), caught on its way through encode
        hook = None
        if self.ctc_layer:
            blocks = self.encoder.blocks if isinstance(self.encoder, ConformerEncoder) else self.encoder.layers
            hook = blocks[self.ctc_layer - 1].register_forward_hook(
                lambda _m, _i, out: tapped.append(out[0] if isinstance(out, tuple) else out))
        try:
            out, out_lens = self.encoder.encode(self.normalizer(feats), feat_lens, chunk_size=chunk_size,
                                                left_chunks=left_chunks)
        finally:
            if hook is not None:
                hook.remove()
        return self.bridge(out), tapped[0] if tapped else out, out_lens

    def encode(self, feats: Tensor, feat_lens: Tensor, *, chunk_size: int = 0, left_chunks: int = -1
               ) -> tuple[Tensor, Tensor]:
        """feats (B, T, F), feat_lens (B,) -> decoder memory (B, T', E), out_lens (B,)."""
        memory, _, out_lens = self.encode_for_loss(feats, feat_lens, chunk_size=chunk_size, left_chunks=left_chunks)
        return memory, out_lens

    def init_stream(self, batch: int = 1, device: torch.device | str | None = None) -> EncoderStreamState:
        """Empty encoder streaming state (a causal Conformer trained without utterance_norm)."""
        if self.utterance_norm or not isinstance(self.encoder, ConformerEncoder):
            raise ValueError("streaming needs a conformer encoder trained without model.utterance_norm")
        return self.encoder.init_state(batch, device)

    def forward_chunk(self, feats: Tensor, state: EncoderStreamState, *, chunk_size: int, left_chunks: int = -1,
                      final: bool = False) -> tuple[Tensor, EncoderStreamState]:
        """Next raw feature frames (B, N, F) -> decoder memory (B, T', E) of the chunks completed (as
        ``ConformerEncoder.forward_chunk``: equal to ``encode`` with the same chunk_size and left_chunks)."""
        assert isinstance(self.encoder, ConformerEncoder)
        out, state = self.encoder.forward_chunk(self.normalizer(feats), state, chunk_size=chunk_size,
                                                left_chunks=left_chunks, final=final)
        return self.bridge(out), state

    def ctc_log_probs(self, hidden: Tensor) -> Tensor:
        """The CTC head's input (B, T', D) -> fp32 log-probs over the transcript pieces (B, T', V)."""
        return self.head(hidden).float().log_softmax(dim=-1)

    def forward(self, feats: Tensor, feat_lens: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: tgt_in (B, U) (language tag first) -> logits (B, U, W + L)."""
        memory, memory_lens = self.encode(feats, feat_lens)
        return self.decoder(tgt_in, memory, memory_lens)

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> DecoderState:
        return self.decoder.init_state(memory, memory_lens)

    def step(self, tokens: Tensor, memory: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """tokens (N,) -> log-probs (N, W + L) of the next token, and the new state."""
        return self.decoder.step(tokens, memory, state)

    def fsdp_units(self) -> list[nn.Module]:
        blocks = self.encoder.blocks if isinstance(self.encoder, ConformerEncoder) else self.encoder.layers
        return [*blocks, *self.decoder.layers]


def _check(cfg: STModelConfig) -> None:
    if cfg.decoder_layers < 1:
        raise ValueError(f"model.decoder_layers: a speech translation model needs a decoder, got {cfg.decoder_layers}")
    if cfg.reverse_decoder_layers:
        raise ValueError("model.reverse_decoder_layers: speech translation models have no right-to-left decoder")
    if not 0 <= cfg.ctc_layer <= cfg.layers:
        raise ValueError(f"model.ctc_layer: expected 0 (final) to model.layers ({cfg.layers}), got {cfg.ctc_layer}")
    dim, heads = cfg.decoder_dim or cfg.dim, cfg.decoder_heads or cfg.heads
    if dim % heads:
        raise ValueError(f"model.decoder_heads: {heads} heads do not divide decoder_dim {dim}")


def decoder_config(cfg: STModelConfig) -> TransformerConfig:
    """The Transformer settings of the target decoder (the decoder part of a translation model's config)."""
    return TransformerConfig(dim=cfg.decoder_dim or cfg.dim, heads=cfg.decoder_heads or cfg.heads,
                             ffn_dim=cfg.decoder_ffn_dim or cfg.ffn_dim, decoder_layers=cfg.decoder_layers,
                             dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                             pre_norm=cfg.decoder_pre_norm, positions=cfg.decoder_positions,
                             max_positions=cfg.max_positions)


def build_st(cfg: STModelConfig, transcript_vocab: int, target_vocab: int, languages: int,
             normalizer: nn.Module | None = None, *, front_end: FrontEnd | None = None) -> SpeechTranslationModel:
    """Config, transcript vocabulary V (with blank), target pieces W and L languages -> model (decoder over W + L);
    raises ValueError naming the key on bad values. ``front_end``: in place of the encoder's subsampling (the
    image front end of image translation)."""
    _check(cfg)
    if languages < 1:
        raise ValueError("data.tgt_langs: name at least one target language")
    speech = build_ctc(CTCModelConfig(**{k: v for k, v in vars(cfg).items() if k in CTCModelConfig.__dataclass_fields__
                                         } | {"decoder_layers": 0}), transcript_vocab, front_end=front_end)
    dec = decoder_config(cfg)
    decoder = build_decoder(dec, target_vocab + languages, PAD)
    bridge = nn.Linear(cfg.dim, dec.dim) if dec.dim != cfg.dim else None
    chunks = speech.chunk_training if cfg.dynamic_chunk else None
    return SpeechTranslationModel(speech.encoder, speech.head, decoder, normalizer, bridge=bridge,
                                  ctc_layer=cfg.ctc_layer, utterance_norm=cfg.utterance_norm, chunk_training=chunks)


def tied_aliases(cfg: STModelConfig) -> set[str]:
    """State-dict names that are the same tensor as an earlier name (the decoder's output projection is its
    embedding): saved once, re-tied by ``build_st`` on load."""
    return shared_tensor_names(build_st(cfg, 8, 8, 1))


def tag_ids(target_vocab: int, languages: int) -> Tensor:
    """The language tags' token ids (L,): the ids after the target tokenizer's W pieces."""
    return torch.arange(target_vocab, target_vocab + languages)
