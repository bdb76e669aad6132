"""RNN attention: masking (weights sum to 1 on real positions, exactly 0 on padding), padding
invariance, and each scoring function against a naive re-implementation in the test."""

from __future__ import annotations

import pytest
import torch

from transduce.nn.masks import padding_mask
from transduce.nn.rnn_attention import (
    ATTENTIONS,
    AdditiveAttention,
    GeneralAttention,
    LocationAwareAttention,
    MultiHeadAdditiveAttention,
    build_attention,
    masked_softmax,
)

Q = M = 8
A = 6
LENS = torch.tensor([5, 2, 4])
KINDS = [(kind, False) for kind in ATTENTIONS] + [
    (kind, True) for kind in ("additive", "location", "multihead_additive")
]


def _attention(kind: str, coverage: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_attention(kind, Q, M, attention_dim=A, heads=2, coverage=coverage)


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    """Query, memory with garbage (not zeros) on padding, and previous weights / coverage that
    are 0 on padding, as the decoder keeps them."""
    g = torch.Generator().manual_seed(seed)
    b, s = len(LENS), int(LENS.max())
    mask = padding_mask(LENS, s)
    prev = torch.rand(b, s, generator=g) * mask
    return {
        "query": torch.randn(b, Q, generator=g),
        "memory": torch.randn(b, s, M, generator=g) * 3,
        "mask": mask,
        "prev_weights": prev / prev.sum(-1, keepdim=True),
        "coverage": torch.rand(b, s, generator=g) * 2 * mask,
    }


def _call(att: torch.nn.Module, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    keys = att.prepare(x["memory"])
    return att(x["query"], keys, x["memory"], x["mask"], prev_weights=x["prev_weights"], coverage=x["coverage"])


@pytest.mark.parametrize(("kind", "coverage"), KINDS)
def test_weights_sum_to_one_and_are_exactly_zero_on_padding(kind: str, coverage: bool) -> None:
    x = _inputs()
    context, weights = _call(_attention(kind, coverage), x)
    assert context.shape == (3, M) and weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert torch.all(weights[~x["mask"]] == 0)
    assert torch.all(weights[x["mask"]] > 0)


@pytest.mark.parametrize(("kind", "coverage"), KINDS)
def test_padding_does_not_change_context_or_weights(kind: str, coverage: bool) -> None:
    """Each row equals the same row run alone on its unpadded memory."""
    att, x = _attention(kind, coverage), _inputs()
    context, weights = _call(att, x)
    for b, n in enumerate(LENS.tolist()):
        alone = {k: v[b : b + 1] for k, v in x.items()}
        alone = {k: v[:, :n] if k != "query" else v for k, v in alone.items()}
        ctx_b, w_b = _call(att, alone)
        torch.testing.assert_close(ctx_b[0], context[b])
        torch.testing.assert_close(w_b[0], weights[b, :n])


@pytest.mark.parametrize(("kind", "coverage"), KINDS)
def test_row_without_real_positions_gives_zeros_and_finite_gradients(kind: str, coverage: bool) -> None:
    att, x = _attention(kind, coverage), _inputs()
    x["mask"] = x["mask"].clone()
    x["mask"][1] = False
    x["query"].requires_grad_(True)
    context, weights = _call(att, x)
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)
    (context.sum() + weights.sum()).backward()
    assert torch.isfinite(x["query"].grad).all()
    assert all(torch.isfinite(p.grad).all() for p in att.parameters() if p.grad is not None)


def _softmax_real(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Reference: plain softmax over the real prefix, zeros after it."""
    out = torch.zeros_like(scores)
    out[:n] = scores[:n].softmax(-1)
    return out


def test_masked_softmax_equals_softmax_over_real_prefix() -> None:
    scores = torch.randn(3, 5)
    got = masked_softmax(scores, padding_mask(LENS, 5))
    for b, n in enumerate(LENS.tolist()):
        torch.testing.assert_close(got[b], _softmax_real(scores[b], n))


def test_dot_and_general_scores() -> None:
    x = _inputs()
    torch.manual_seed(0)
    general = GeneralAttention(Q, M)
    for att, keys in [(build_attention("dot", Q, M, attention_dim=A), x["memory"]),
                      (general, x["memory"] @ general.key_proj.weight.t())]:
        context, weights = _call(att, x)
        for b, n in enumerate(LENS.tolist()):
            w = _softmax_real(keys[b] @ x["query"][b], n)
            torch.testing.assert_close(weights[b], w)
            torch.testing.assert_close(context[b], w @ x["memory"][b])


def _additive_energy(att: AdditiveAttention, x: dict[str, torch.Tensor], b: int, s: int) -> torch.Tensor:
    """Bahdanau's energy for one (row, position), written out: W_q q + W_k h + b [+ w_c c]."""
    e = att.query_proj.weight @ x["query"][b] + att.key_proj.weight @ x["memory"][b, s] + att.key_proj.bias
    if att.coverage_proj is not None:
        e = e + att.coverage_proj.weight[:, 0] * x["coverage"][b, s]
    return e


@pytest.mark.parametrize("coverage", [False, True])
def test_additive_against_naive_loops(coverage: bool) -> None:
    att, x = _attention("additive", coverage), _inputs()
    assert isinstance(att, AdditiveAttention)
    context, weights = _call(att, x)
    for b, n in enumerate(LENS.tolist()):
        scores = torch.stack([att.v.weight[0] @ torch.tanh(_additive_energy(att, x, b, s)) for s in range(5)])
        w = _softmax_real(scores, n)
        torch.testing.assert_close(weights[b], w)
        torch.testing.assert_close(context[b], w @ x["memory"][b])


def test_location_aware_against_naive_convolution() -> None:
    att, x = _attention("location", False), _inputs()
    assert isinstance(att, LocationAwareAttention)
    kernel = att.conv.weight[:, 0, :]  # (C, K)
    r = kernel.size(1) // 2
    _, weights = _call(att, x)
    for b, n in enumerate(LENS.tolist()):
        prev = x["prev_weights"][b]
        scores = []
        for s in range(5):
            window = torch.stack([prev[j] if 0 <= j < 5 else torch.tensor(0.0) for j in range(s - r, s + r + 1)])
            f = kernel @ window  # (C,)
            e = _additive_energy(att.additive, x, b, s) + att.location_proj.weight @ f
            scores.append(att.additive.v.weight[0] @ torch.tanh(e))
        torch.testing.assert_close(weights[b], _softmax_real(torch.stack(scores), n))


def test_location_aware_depends_on_previous_weights() -> None:
    att, x = _attention("location", False), _inputs()
    _, w1 = _call(att, x)
    x["prev_weights"] = x["prev_weights"].roll(1, dims=1) * x["mask"]
    _, w2 = _call(att, x)
    assert not torch.allclose(w1, w2)


@pytest.mark.parametrize("coverage", [False, True])
def test_multihead_additive_is_mean_of_single_head_attentions(coverage: bool) -> None:
    """Each head is an additive attention with its own slice (A / H) of the projections."""
    att, x = _attention("multihead_additive", coverage), _inputs()
    assert isinstance(att, MultiHeadAdditiveAttention)
    context, weights = _call(att, x)
    head_weights, head_contexts = [], []
    e = A // 2
    for h in range(2):
        rows = slice(h * e, (h + 1) * e)
        single = AdditiveAttention(Q, M, e, coverage=coverage)
        with torch.no_grad():
            single.query_proj.weight.copy_(att.query_proj.weight[rows])
            single.key_proj.weight.copy_(att.key_proj.weight[rows])
            single.key_proj.bias.copy_(att.key_proj.bias[rows])
            single.v.weight.copy_(att.v[h][None])
            if coverage:
                single.coverage_proj.weight.copy_(att.coverage_proj.weight[rows])
        ctx_h, w_h = _call(single, x)
        head_weights.append(w_h)
        head_contexts.append(ctx_h @ att.value_proj[h].t())  # (B, M) -> (B, E)
    torch.testing.assert_close(weights, torch.stack(head_weights).mean(0))
    torch.testing.assert_close(context, torch.cat(head_contexts, dim=-1))


def test_coverage_changes_additive_scores_and_is_required() -> None:
    att, x = _attention("additive", True), _inputs()
    _, w1 = _call(att, x)
    x["coverage"] = x["coverage"] * 3
    _, w2 = _call(att, x)
    assert not torch.allclose(w1, w2)
    with pytest.raises(ValueError, match="coverage"):
        att(x["query"], att.prepare(x["memory"]), x["memory"], x["mask"])


def test_build_rejects_coverage_without_additive_energy_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="coverage"):
        build_attention("dot", Q, M, attention_dim=A, coverage=True)
    with pytest.raises(ValueError, match="dot attention needs equal"):
        build_attention("dot", Q, M + 1, attention_dim=A)
    with pytest.raises(ValueError, match="unknown attention"):
        build_attention("bilinear", Q, M, attention_dim=A)
