"""Label-smoothed NLL (plain and fused with the output projection) against F.cross_entropy and
against the formula written out by hand."""

import pytest
import torch
import torch.nn.functional as F

from transduce.data.tokenizer import PAD
from transduce.train import loss as loss_mod
from transduce.train.loss import label_smoothed_nll, projected_label_smoothed_nll

V, D = 13, 8


def _targets(b: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(1, V, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    target[torch.arange(t)[None, :] >= lengths[:, None]] = PAD
    return target


def _reference(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    return F.cross_entropy(
        logits.flatten(0, 1),
        target.flatten(),
        ignore_index=PAD,
        label_smoothing=eps,
        reduction="sum",
    )


def _by_hand(logits: torch.Tensor, target: torch.Tensor, eps: float) -> tuple[float, float]:
    """(1 - eps) * nll + eps * mean_v(-log p_v), summed over non-PAD positions, in float64."""
    logp = logits.double().log_softmax(-1)
    loss = nll = 0.0
    for b, t in (target != PAD).nonzero().tolist():
        tok_nll = -float(logp[b, t, target[b, t]])
        smooth = -float(logp[b, t].mean())
        loss += (1 - eps) * tok_nll + eps * smooth
        nll += tok_nll
    return loss, nll


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothed_nll_equals_cross_entropy_value_and_gradient(eps):
    torch.manual_seed(0)
    target = _targets(4, 7, seed=1)
    logits = torch.randn(4, 7, V, requires_grad=True)
    ref_logits = logits.detach().clone().requires_grad_(True)
    loss, nll = label_smoothed_nll(logits, target, epsilon=eps, ignore_index=PAD)
    ref = _reference(ref_logits, target, eps)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, _reference(logits.detach(), target, 0.0))
    assert not nll.requires_grad
    (2.5 * loss).backward()
    (2.5 * ref).backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)
    assert torch.all(logits.grad[target == PAD] == 0)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_label_smoothed_nll_equals_formula_by_hand(eps):
    torch.manual_seed(2)
    target = _targets(3, 5, seed=3)
    logits = 3 * torch.randn(3, 5, V)
    loss, nll = label_smoothed_nll(logits, target, epsilon=eps, ignore_index=PAD)
    want_loss, want_nll = _by_hand(logits, target, eps)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(nll) == pytest.approx(want_nll, rel=1e-5)


def _projected_case(rows: int, seed: int):
    """About ``rows`` target positions in two sentences, the second ending in 3 PADs."""
    torch.manual_seed(seed)
    t = (rows + 1) // 2
    target = torch.randint(1, V, (2, t))
    target[1, t - 3 :] = PAD
    hidden = torch.randn(2, t, D, requires_grad=True)
    weight = (0.5 * torch.randn(V, D)).requires_grad_(True)
    return hidden, weight, target


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("chunk_rows", [None, 7], ids=["default_chunks", "tiny_chunks"])
def test_projected_loss_equals_cross_entropy_value_and_gradients(eps, chunk_rows, monkeypatch):
    if chunk_rows is not None:
        monkeypatch.setattr(loss_mod, "CHUNK_ROWS", chunk_rows)
    rows = 2 * loss_mod.CHUNK_ROWS + 37  # several chunks, the last one partial
    hidden, weight, target = _projected_case(rows, seed=4)
    assert int((target != PAD).sum()) > 2 * loss_mod.CHUNK_ROWS
    ref_hidden = hidden.detach().clone().requires_grad_(True)
    ref_weight = weight.detach().clone().requires_grad_(True)

    loss, nll = projected_label_smoothed_nll(hidden, weight, target, epsilon=eps, ignore_index=PAD)
    ref = _reference(ref_hidden @ ref_weight.t(), target, eps)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-3)
    ref_nll = _reference((hidden @ weight.t()).detach(), target, 0.0)
    torch.testing.assert_close(nll, ref_nll, rtol=1e-5, atol=1e-3)

    (0.75 * loss).backward()
    (0.75 * ref).backward()
    torch.testing.assert_close(hidden.grad, ref_hidden.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weight.grad, ref_weight.grad, rtol=1e-4, atol=1e-4)
    assert torch.all(hidden.grad[target == PAD] == 0)


def test_projected_loss_equals_plain_loss_and_formula_by_hand():
    hidden, weight, target = _projected_case(20, seed=5)
    logits = hidden @ weight.t()
    fused, fused_nll = projected_label_smoothed_nll(
        hidden, weight, target, epsilon=0.2, ignore_index=PAD
    )
    plain, plain_nll = label_smoothed_nll(logits, target, epsilon=0.2, ignore_index=PAD)
    torch.testing.assert_close(fused, plain)
    torch.testing.assert_close(fused_nll, plain_nll)
    want_loss, want_nll = _by_hand(logits.detach(), target, 0.2)
    assert float(fused.detach()) == pytest.approx(want_loss, rel=1e-5)
    assert float(fused_nll) == pytest.approx(want_nll, rel=1e-5)


def test_projected_loss_passes_gradcheck_in_float64():
    """Double precision end to end: the hand-written backward against finite differences."""
    torch.manual_seed(6)
    target = torch.randint(1, V, (9,))
    hidden = torch.randn(9, D, dtype=torch.double, requires_grad=True)
    weight = torch.randn(V, D, dtype=torch.double, requires_grad=True)

    def fn(h, w):
        return loss_mod._ProjectedSmoothedCE.apply(h, w, target, 0.1)[0]

    # The forward casts logits to fp32, so finite differences need a coarse step and tolerance.
    assert torch.autograd.gradcheck(fn, (hidden, weight), eps=1e-3, atol=1e-2, rtol=1e-2)


def test_cross_entropy_reference_helper_matches_f_cross_entropy():
    torch.manual_seed(7)
    target = _targets(2, 4, seed=8)
    logits = torch.randn(2, 4, V)
    torch.testing.assert_close(
        loss_mod.cross_entropy_reference(logits, target, 0.1, PAD), _reference(logits, target, 0.1)
    )


def test_all_padding_gives_zero_loss_and_zero_gradients():
    """Like ``label_smoothed_nll``, the fused loss of a batch with no real token is zero."""
    torch.manual_seed(9)
    hidden = torch.randn(2, 3, D, requires_grad=True)
    weight = torch.randn(V, D, requires_grad=True)
    target = torch.full((2, 3), PAD)
    loss, nll = projected_label_smoothed_nll(hidden, weight, target, epsilon=0.1, ignore_index=PAD)
    plain, plain_nll = label_smoothed_nll(
        hidden @ weight.t(), target, epsilon=0.1, ignore_index=PAD
    )
    assert float(loss.detach()) == float(plain.detach()) == 0.0
    assert float(nll) == float(plain_nll) == 0.0
    loss.backward()
    assert torch.all(hidden.grad == 0) and torch.all(weight.grad == 0)
