"""Positions inside self-attention: Shaw et al. clipped relative keys against an explicit relative-index reference,
RoPE against a complex-rotation reference, RoPE scores depend only on i - j, and cached (incremental) attention
equals the full causal pass for each scheme.

Dimension letters: B batch, H heads, T queries, S keys, E head size, D model size.
"""

import pytest
import torch

from transduce.nn.attention import MultiHeadAttention
from transduce.nn.masks import attention_mask, padding_mask
from transduce.nn.positions import RotaryPositions, ShawRelativePositions, build_attention_positions
from transduce.nn.state import KVCache

D, H = 16, 2
E = D // H


def _heads(x: torch.Tensor) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, H, E).transpose(1, 2)  # (B, H, T, E)


def _shaw_reference(attn: MultiHeadAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Shaw et al. 2018 eq. 4-5 (key term) with explicit loops over i, j: e_ij = q_i . (k_j + a^K_ij) / sqrt(E),
    a^K_ij = w^K[clip(j - i, -K, K)]. ``allowed`` (B, T, S) bool. -> (B, T, D) after the output projection."""
    table, k_max = attn.positions.keys, attn.positions.max_relative
    q = _heads(attn.q_proj(x))
    k, v = (_heads(p) for p in attn.kv_proj(x).chunk(2, dim=-1))
    b, h, t, _ = q.shape
    scores = torch.full((b, h, t, t), float("-inf"))
    for i in range(t):
        for j in range(t):
            a_k = table[max(-k_max, min(k_max, j - i)) + k_max]  # (E,)
            e_ij = (q[:, :, i] * (k[:, :, j] + a_k)).sum(-1) / E**0.5  # (B, H)
            scores[:, :, i, j] = torch.where(allowed[:, None, i, j], e_ij, float("-inf"))
    out = scores.softmax(-1) @ v  # (B, H, T, E)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, D))


def _rope_reference(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x (..., T, E) as complex pairs (x[2m] + i x[2m+1]) times exp(i p base^(-2m/E)) at position p."""
    theta = base ** (-torch.arange(0, E, 2, dtype=torch.float64) / E)  # (E/2,)
    rotation = torch.polar(torch.ones(len(positions), E // 2, dtype=torch.float64),
                           positions.double()[:, None] * theta[None, :])  # (T, E/2) complex
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], E // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).reshape(x.shape).float()


def _attention(kind: str, seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(D, H, positions=build_attention_positions(kind, E, max_relative=2)).eval()


def test_shaw_distances_are_clipped_relative_indices():
    shaw = ShawRelativePositions(E, max_relative=2)
    want = torch.tensor([[2, 3, 4, 4], [1, 2, 3, 4], [0, 1, 2, 3], [0, 0, 1, 2]])
    torch.testing.assert_close(shaw.distances(4, 4, 0, torch.device("cpu")), want)
    torch.testing.assert_close(shaw.distances(1, 4, 3, torch.device("cpu")), want[3:])  # one cached step


@pytest.mark.parametrize("causal", [False, True], ids=["padded", "causal"])
def test_shaw_attention_equals_explicit_reference(causal):
    attn = _attention("shaw")
    x = torch.randn(2, 7, D)
    lens = torch.tensor([7, 4])
    keys = padding_mask(lens, 7)  # (B, S)
    allowed = keys[:, None, :].expand(2, 7, 7)  # (B, T, S)
    if causal:
        allowed = allowed & torch.ones(7, 7, dtype=torch.bool).tril()
    with torch.no_grad():
        out = attn(x, x, mask=attention_mask(keys), causal=causal)[0]
        want = _shaw_reference(attn, x, allowed)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_shaw_weights_path_equals_sdpa_path():
    attn = _attention("shaw")
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        fast = attn(x, x, causal=True)[0]
        slow, _, weights = attn(x, x, causal=True, need_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert weights is not None and torch.all(weights.triu(1) == 0)


@pytest.mark.parametrize("offset", [0, 3])
def test_rope_equals_complex_rotation(offset):
    rope = RotaryPositions(E)
    x = torch.randn(2, H, 6, E)
    want = _rope_reference(x, torch.arange(offset, offset + 6))
    torch.testing.assert_close(rope.rotate(x, offset), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [1, 5, 37])
def test_rope_scores_depend_only_on_relative_position(shift):
    rope = RotaryPositions(E)
    q, k = torch.randn(1, H, 1, E), torch.randn(1, H, 1, E)
    for i, j in [(0, 0), (4, 1), (2, 9)]:
        score = rope.rotate(q, i) @ rope.rotate(k, j).transpose(-1, -2)  # (1, H, 1, 1)
        shifted = rope.rotate(q, i + shift) @ rope.rotate(k, j + shift).transpose(-1, -2)
        torch.testing.assert_close(score, shifted, atol=1e-4, rtol=1e-4)
    moved = rope.rotate(q, 4) @ rope.rotate(k, 0).transpose(-1, -2)
    assert not torch.allclose(moved, rope.rotate(q, 0) @ rope.rotate(k, 0).transpose(-1, -2), atol=1e-3)


@pytest.mark.parametrize("kind", ["shaw", "rope"])
def test_cached_steps_equal_full_causal_attention(kind):
    attn = _attention(kind)
    x = torch.randn(3, 6, D)
    with torch.no_grad():
        full = attn(x, x, causal=True)[0]
        cache: KVCache | None = None
        steps = []
        for t in range(6):
            y, cache, _ = attn(x[:, t : t + 1], x[:, t : t + 1], cache=cache)
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_unknown_and_invalid_positions_fail_clearly():
    with pytest.raises(ValueError, match="unknown positions 'alibi'"):
        build_attention_positions("alibi", E, 4)
    with pytest.raises(ValueError, match="even head size"):
        RotaryPositions(5)
    with pytest.raises(ValueError, match="max_relative"):
        ShawRelativePositions(E, 0)
