"""Recurrent encoder, bridge and attentional decoder (Bahdanau et al. 2014; Luong et al. 2015).

Dimension letters: B batch (x beams), S source length, T target length, E embedding size,
M memory size (encoder output; both directions together), H decoder hidden size, L decoder layers,
D attentional-output size (the features the output projection reads), K prepared-key size
(see ``nn/rnn_attention.py``), V vocabulary.
Masks are boolean, True = real position (``nn/masks.py``).

The decoder is Luong's: the recurrence runs first, its top output queries the attention, and
``tanh(W_c [context; query])`` is the attentional output; with input feeding it is also fed to the
next step's recurrence. Teacher forcing (``features``) runs the very same step function in a loop,
so step-by-step decoding and training see identical computations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from transduce.nn.masks import padding_mask
from transduce.nn.rnn_attention import RNNAttention

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
STEP_CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


def make_rnn(cell: str, input_size: int, hidden_size: int, layers: int, *, bidirectional: bool = False,
             dropout: float = 0.0) -> nn.LSTM | nn.GRU:
    """A batch-first stacked LSTM or GRU with dropout between layers (for whole sequences)."""
    if cell not in CELLS:
        raise ValueError(f"unknown RNN cell {cell!r}; choose lstm or gru")
    return CELLS[cell](input_size, hidden_size, layers, batch_first=True, bidirectional=bidirectional,
                       dropout=dropout if layers > 1 else 0.0)


class StackedCell(nn.Module):
    """L LSTM or GRU cells run for one time step, dropout between layers. (A per-step cell is
    several times cheaper on CPU than a one-step call of ``nn.LSTM``.)"""

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if cell not in STEP_CELLS:
            raise ValueError(f"unknown RNN cell {cell!r}; choose lstm or gru")
        self.lstm = cell == "lstm"
        sizes = [input_size] + [hidden_size] * (layers - 1)
        self.cells = nn.ModuleList(STEP_CELLS[cell](size, hidden_size) for size in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, hidden: Tensor, cell: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (N, I), hidden and cell (L, N, H) -> top output (N, H), new hidden, new cell."""
        hiddens, cells = [], []
        for i, layer in enumerate(self.cells):
            if i:
                x = self.dropout(x)
            if cell is None:
                x = layer(x, hidden[i])  # (N, H)
            else:
                x, c = layer(x, (hidden[i], cell[i]))
                cells.append(c)
            hiddens.append(x)
        return x, torch.stack(hiddens), torch.stack(cells) if cells else None


class RNNEncoder(nn.Module):
    """Embeddings -> dropout -> stacked (bi)RNN over packed sequences -> dropout.

    Packing means padding never enters the recurrence: each sentence's outputs and final states
    are those it would get alone. Padding positions of the output are zeros."""

    def __init__(self, embedding: nn.Embedding, rnn: nn.LSTM | nn.GRU, dropout: float) -> None:
        super().__init__()
        self.embedding, self.rnn = embedding, rnn
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return self.rnn.hidden_size * (2 if self.rnn.bidirectional else 1)

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) token ids, src_lens (B,) -> memory (B, S, M), memory_lens (B,)."""
        x = self.dropout(self.embedding(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_lens.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, M)
        return self.dropout(memory), src_lens


def final_states(memory: Tensor, memory_lens: Tensor, bidirectional: bool) -> Tensor:
    """The top layer's final states, read off the memory (B, S, M) -> (B, M): the forward
    direction at each sentence's last real position, the backward direction at position 0."""
    rows = torch.arange(memory.size(0), device=memory.device)
    last = memory[rows, memory_lens.clamp(min=1) - 1]  # (B, M)
    if not bidirectional:
        return last
    half = memory.size(2) // 2
    return torch.cat([last[:, :half], memory[:, 0, half:]], dim=-1)  # (B, M)


class Bridge(nn.Module):
    """Decoder initial state from the encoder's final states: ``tanh(W x + b)`` for the hidden
    state of every decoder layer (and, for an LSTM, separately for the cell state).

    It reads the top encoder layer's final states off the memory (``final_states``), so that
    ``init_state(memory, memory_lens)`` needs nothing beyond the shared encoder contract; the
    encoder's LSTM cell states and lower layers' final states are not used."""

    def __init__(self, memory_dim: int, hidden: int, layers: int, *, lstm: bool, bidirectional: bool) -> None:
        super().__init__()
        self.layers, self.hidden, self.bidirectional = layers, hidden, bidirectional
        self.hidden_proj = nn.Linear(memory_dim, layers * hidden)
        self.cell_proj = nn.Linear(memory_dim, layers * hidden) if lstm else None

    def _spread(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), self.layers, self.hidden).transpose(0, 1).contiguous()  # (B, L H) -> (L, B, H)

    def forward(self, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, Tensor | None]:
        """memory (B, S, M) -> hidden (L, B, H), cell (L, B, H) or None."""
        final = final_states(memory, memory_lens, self.bidirectional)  # (B, M)
        hidden = self._spread(torch.tanh(self.hidden_proj(final)))
        cell = None if self.cell_proj is None else self._spread(torch.tanh(self.cell_proj(final)))
        return hidden, cell


@dataclass
class RNNDecoderState:
    """Everything one decoding step reads besides the memory. Rows are N = batch x beams."""

    hidden: Tensor
    """(L, N, H) recurrent hidden state."""
    cell: Tensor | None
    """(L, N, H) LSTM cell state; None for a GRU."""
    feed: Tensor | None
    """(N, D) previous attentional output (input feeding); None without input feeding."""
    keys: Tensor
    """(N, S, K) the attention's prepared keys."""
    mask: Tensor
    """(N, S) True on real source positions."""
    weights: Tensor
    """(N, S) the last step's attention weights (uniform over the source before the first step)."""
    coverage: Tensor | None
    """(N, S) sum of all attention weights so far; None when the model has no coverage."""

    def reorder(self, indices: Tensor) -> RNNDecoderState:
        def rows(x: Tensor | None, dim: int = 0) -> Tensor | None:
            return None if x is None else x.index_select(dim, indices)

        return RNNDecoderState(
            self.hidden.index_select(1, indices), rows(self.cell, 1), rows(self.feed),
            self.keys.index_select(0, indices), self.mask.index_select(0, indices),
            self.weights.index_select(0, indices), rows(self.coverage),
        )


class RNNDecoder(nn.Module):
    """Attentional RNN decoder with optional input feeding, coverage and scheduled sampling."""

    def __init__(self, embedding: nn.Embedding, rnn: StackedCell, attention: RNNAttention, bridge: Bridge,
                 combine: nn.Linear, output: nn.Linear, *, dropout: float, input_feeding: bool,
                 coverage: bool, scheduled_sampling: float = 0.0) -> None:
        super().__init__()
        self.embedding, self.rnn, self.bridge = embedding, rnn, bridge
        self.attention: RNNAttention = attention  # an nn.Module: registered as a submodule
        self.combine, self.output = combine, output  # [context; query] (M + H) -> D;  D -> V
        self.dropout = nn.Dropout(dropout)
        self.input_feeding, self.coverage = input_feeding, coverage
        self.scheduled_sampling = scheduled_sampling

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> RNNDecoderState:
        """Bridge from the encoder's final states; uniform previous weights; zero feed and coverage."""
        mask = padding_mask(memory_lens, memory.size(1))  # (N, S)
        hidden, cell = self.bridge(memory, memory_lens)
        n = memory.size(0)
        feed = memory.new_zeros(n, self.combine.out_features) if self.input_feeding else None
        uniform = mask.to(memory.dtype) / memory_lens.clamp(min=1)[:, None].to(memory.dtype)  # (N, S)
        coverage = torch.zeros_like(uniform) if self.coverage else None
        return RNNDecoderState(hidden, cell, feed, self.attention.prepare(memory), mask, uniform, coverage)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.embedding(tokens))

    def _step(self, x: Tensor, memory: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState]:
        """x (N, E) embedded input -> attentional output (N, D) and the new state."""
        if state.feed is not None:
            x = torch.cat([x, state.feed], dim=-1)  # (N, E + D)
        query, hidden, cell = self.rnn(x, state.hidden, state.cell)  # (N, H)
        context, weights = self.attention(query, state.keys, memory, state.mask,
                                          prev_weights=state.weights, coverage=state.coverage)
        out = self.dropout(torch.tanh(self.combine(torch.cat([context, query], dim=-1))))  # (N, D)
        coverage = None if state.coverage is None else state.coverage + weights
        new = RNNDecoderState(hidden, cell, out if self.input_feeding else None, state.keys, state.mask,
                              weights, coverage)
        return out, new

    def step(self, tokens: Tensor, memory: Tensor, state: RNNDecoderState) -> tuple[Tensor, RNNDecoderState]:
        """One step: tokens (N,) -> log-probs (N, V) of the next token, and the new state."""
        out, state = self._step(self.embed(tokens), memory, state)
        return self.output(out).float().log_softmax(-1), state

    def features(self, tgt_in: Tensor, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: tgt_in (B, T) -> attentional outputs (B, T, D), attention weights (B, T, S),
        both fp32.

        In training mode with ``scheduled_sampling`` p > 0, each row's input at step t > 0 is, with
        probability p, the model's own previous greedy prediction instead of the reference
        (Bengio et al. 2015)."""
        state = self.init_state(memory, memory_lens)
        x = self.embed(tgt_in)  # (B, T, E)
        sampling = self.training and self.scheduled_sampling > 0
        outs: list[Tensor] = []
        weights: list[Tensor] = []
        for t in range(tgt_in.size(1)):
            inp = x[:, t]
            if sampling and t > 0:
                with torch.no_grad():
                    predicted = self.output(outs[-1]).argmax(-1)  # (B,)
                coin = torch.rand(inp.size(0), device=inp.device) < self.scheduled_sampling
                inp = torch.where(coin[:, None], self.embed(predicted), inp)
            out, state = self._step(inp, memory, state)
            outs.append(out)
            weights.append(state.weights)
        # fp32 out, as the Transformer's final layer norm gives under autocast: the fused loss
        # multiplies the features by the fp32 output weight outside autocast
        return torch.stack(outs, dim=1).float(), torch.stack(weights, dim=1).float()
