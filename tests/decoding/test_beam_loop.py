"""The generic beam loop on hand-built scorers (fixed log-prob tables over a tiny vocabulary), checked
against exhaustive search over every output up to the length limit, and beam 1 against greedy search."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from transduce.data.tokenizer import BOS, EOS, PAD, UNK
from transduce.decoding.beam import beam_search
from transduce.decoding.beam_loop import Candidates, beam_loop
from transduce.decoding.greedy import greedy_search
from transduce.decoding.hypothesis import Hypothesis, length_penalty, max_lengths

V = 6  # PAD, UNK, BOS, EOS and two ordinary tokens
WORDS = (UNK, 4, 5)  # tokens an output may contain


class Tables:
    """Fixed next-token log-probs (V,) for every (sentence, prefix), drawn once per key from a seeded generator,
    so each sentence has its own distribution over whole sequences."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.cache: dict[tuple[int, tuple[int, ...]], Tensor] = {}

    def log_probs(self, sentence: int, prefix: tuple[int, ...]) -> Tensor:
        key = (sentence, prefix)
        if key not in self.cache:
            g = torch.Generator().manual_seed(hash((self.seed, *key)) % 2**31)
            self.cache[key] = (2.0 * torch.randn(V, generator=g)).log_softmax(-1)
        return self.cache[key]

    def rows(self, sentences: Tensor, prefixes: Tensor) -> Tensor:
        """sentences (N,), prefixes (N, t) -> (N, V), a fresh tensor (the loop masks it in place)."""
        return torch.stack([self.log_probs(s, tuple(p)) for s, p in zip(sentences.tolist(), prefixes.tolist(),
                                                                          strict=True)])


@dataclass
class TableState:
    sentences: Tensor
    """(N,) the sentence of each row."""
    prefixes: Tensor
    """(N, t) the tokens each row has output (no BOS)."""
    offered: Tensor | None = None
    """(N, P) the candidates' tokens of the current step."""

    def reorder(self, indices: Tensor) -> TableState:
        return TableState(self.sentences[indices], self.prefixes[indices])


def allowed(prefix: tuple[int, ...]) -> list[int]:
    """The pruning scorer's candidates after ``prefix``: no immediate repeat, no UNK first; EOS always."""
    banned = prefix[-1] if prefix else UNK
    return [t for t in (5, 4, EOS, UNK) if t != banned]  # 3 tokens, not in vocabulary order


class TableScorer:
    """A ``BeamScorer`` over ``Tables``. ``prune``: each row offers only ``allowed`` tokens (like the joint
    search's pre-beam); ``bonus``: each finished hypothesis gains bonus * (number of 4s) (like coverage)."""

    def __init__(self, tables: Tables, *, prune: bool, bonus: float) -> None:
        self.tables, self.prune, self.bonus = tables, prune, bonus

    def init(self, rows: Tensor) -> TableState:
        return TableState(rows, torch.zeros(rows.size(0), 0, dtype=torch.long))

    def score(self, tokens: Tensor, state: TableState) -> tuple[Tensor, TableState]:
        if state.prefixes.size(1):  # the token read last must be the one the beam chose
            assert torch.equal(tokens, state.prefixes[:, -1])
        return self.tables.rows(state.sentences, state.prefixes), state

    def candidates(self, log_probs: Tensor, state: TableState) -> tuple[Candidates, TableState]:
        if not self.prune:
            offered = torch.arange(V).expand(log_probs.size(0), V)
            return Candidates(log_probs), TableState(state.sentences, state.prefixes, offered)
        offered = torch.tensor([allowed(tuple(p)) for p in state.prefixes.tolist()]).view(-1, 3)  # (N, 3)
        return Candidates(log_probs.gather(1, offered), offered), TableState(state.sentences, state.prefixes, offered)

    def select(self, state: TableState, rows: Tensor, columns: Tensor) -> TableState:
        assert state.offered is not None
        chosen = state.offered[rows, columns]  # (M,)
        return TableState(state.sentences[rows], torch.cat([state.prefixes[rows], chosen[:, None]], dim=1))

    def finish_score(self, state: TableState, row: int) -> float:
        return self.bonus * int((state.prefixes[row] == 4).sum())


def exhaustive(tables: Tables, sentence: int, limit: int, alpha: float, style: str, *, prune: bool,
               bonus: float) -> list[Hypothesis]:
    """Every output of at most ``limit`` tokens that the scorer may produce, scored as the loop should, best first."""
    hyps = []
    for n in range(limit + 1):
        for tokens in itertools.product(WORDS, repeat=n):
            if prune and any(t not in allowed(tokens[:i]) for i, t in enumerate(tokens)):
                continue
            steps = [*tokens, EOS]
            total = sum(float(tables.log_probs(sentence, tokens[:i])[t]) for i, t in enumerate(steps))
            score = total / length_penalty(n + 1, alpha, style) + bonus * tokens.count(4)
            hyps.append(Hypothesis(list(tokens), score, total))
    return sorted(hyps, key=lambda h: -h.score)


@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize(("alpha", "style", "bonus"), [(1.0, "fairseq", 0.0), (0.0, "fairseq", -0.3),
                                                       (0.6, "gnmt", 0.2), (1.5, "gnmt", 0.0)])
def test_huge_beam_equals_exhaustive_search(alpha: float, style: str, bonus: float, prune: bool) -> None:
    """A beam that holds every prefix returns every output, ranked and scored as exhaustive search does; the
    sentences have different limits, so they leave the batch at different steps."""
    tables, limits = Tables(seed=7), [3, 1, 2, 0]
    scorer = TableScorer(tables, prune=prune, bonus=bonus)
    beam = 40  # 1 + 3 + 9 + 27 outputs of at most 3 tokens
    got = beam_loop(scorer, torch.tensor(limits), beam=beam, nbest=beam, len_penalty=alpha, len_penalty_style=style)
    for sentence, limit in enumerate(limits):
        want = exhaustive(tables, sentence, limit, alpha, style, prune=prune, bonus=bonus)
        gaps = [a.score - b.score for a, b in itertools.pairwise(want)]
        assert min(gaps, default=1.0) > 1e-4, "near-ties: pick another seed"
        assert [h.tokens for h in got[sentence]] == [h.tokens for h in want]
        assert [h.score for h in got[sentence]] == pytest.approx([h.score for h in want], abs=1e-4)
        assert [h.log_prob for h in got[sentence]] == pytest.approx([h.log_prob for h in want], abs=1e-4)


@pytest.mark.parametrize("prune", [False, True])
def test_small_beam_returns_the_nbest_it_found_with_exact_scores(prune: bool) -> None:
    """With a beam smaller than the search space the n-best are still distinct, sorted, within the limit and
    scored exactly as their sequences score."""
    tables = Tables(seed=3)
    got = beam_loop(TableScorer(tables, prune=prune, bonus=0.1), torch.tensor([4, 6]), beam=3, nbest=3,
                    len_penalty=1.0)
    for sentence, (hyps, limit) in enumerate(zip(got, [4, 6], strict=True)):
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        every = {tuple(h.tokens): h for h in exhaustive(tables, sentence, limit, 1.0, "fairseq", prune=prune,
                                                         bonus=0.1)}
        for h in hyps:
            assert h.score == pytest.approx(every[tuple(h.tokens)].score, abs=1e-4)
            assert h.log_prob == pytest.approx(every[tuple(h.tokens)].log_prob, abs=1e-4)


class TableModel:
    """The tables as a ``StepModel`` for ``greedy_search`` and ``beam_search``: the "memory" of sentence b
    is the number b, and the state is the output so far."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def encode(self, src: Tensor, src_lens: Tensor) -> tuple[Tensor, Tensor]:
        return torch.arange(src.size(0)).float()[:, None, None], torch.ones_like(src_lens)  # (B, 1, 1), (B,)

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> TableState:
        return TableState(memory[:, 0, 0].long(), torch.zeros(memory.size(0), 0, dtype=torch.long))

    def step(self, tokens: Tensor, memory: Tensor, state: TableState) -> tuple[Tensor, TableState]:
        assert torch.equal(state.sentences, memory[:, 0, 0].long()), "memory and state were reordered apart"
        prefixes = state.prefixes if bool((tokens == BOS).all()) else torch.cat([state.prefixes, tokens[:, None]], 1)
        return self.tables.rows(state.sentences, prefixes), TableState(state.sentences, prefixes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy(seed: int) -> None:
    model = TableModel(Tables(seed))
    src_lens = torch.tensor([5, 3, 7, 2, 9, 1, 4, 6, 2, 8])
    src = torch.full((10, 9), UNK).masked_fill(torch.arange(9)[None, :] >= src_lens[:, None], PAD)
    greedy = greedy_search(model, src, src_lens, max_len_a=0.5, max_len_b=1)
    beam = beam_search(model, src, src_lens, beam=1, nbest=1, max_len_a=0.5, max_len_b=1)
    limits = max_lengths(src_lens, 0.5, 1).tolist()
    assert any(len(g.tokens) == limit for g, limit in zip(greedy, limits, strict=True)), "no row hit its limit"
    assert any(len(g.tokens) < limit for g, limit in zip(greedy, limits, strict=True)), "no row chose EOS"
    for g, (b,) in zip(greedy, beam, strict=True):
        assert g.tokens == b.tokens
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-4)
        assert g.score == pytest.approx(b.score, abs=1e-4)
