"""The trainer's fast paths equal their slow references: the loss whose gradient is computed in the forward
pass vs plain autograd through the logits (every combination of inputs that need gradients, accumulation
over several batches, evaluation without gradients), and the multi-tensor (foreach) Adam the trainer builds
vs PyTorch's per-parameter loop, bit for bit over real updates."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from transduce.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from transduce.data.toy import write_toy
from transduce.models.transformer import TransformerConfig
from transduce.train.loss import label_smoothed_nll, projected_label_smoothed_nll
from transduce.train.trainer import Trainer

PAD, V, D = 0, 23, 8


def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 5, D, generator=g)
    weight = torch.randn(V, D, generator=g)
    target = torch.randint(1, V, (3, 5), generator=g)
    target[0, 3:] = PAD
    return hidden, weight, target


@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_forward_computed_gradients_equal_autograd(needs: tuple[bool, bool]) -> None:
    """Two batches accumulated with different scales, as the trainer's update_freq does."""
    grads = []
    for fused in (True, False):
        params = []
        for seed, scale in ((1, 0.3), (2, 1.7)):
            hidden, weight, target = _case(seed)
            hidden.requires_grad_(needs[0])
            weight.requires_grad_(needs[1])
            if fused:
                loss, _ = projected_label_smoothed_nll(hidden, weight, target, epsilon=0.1, ignore_index=PAD)
            else:
                loss, _ = label_smoothed_nll(hidden @ weight.t(), target, epsilon=0.1, ignore_index=PAD)
            (scale * loss).backward()
            params.append((hidden.grad, weight.grad))
        grads.append(params)
    for (fh, fw), (rh, rw) in zip(*grads, strict=True):
        for fast, ref, needed in ((fh, rh, needs[0]), (fw, rw, needs[1])):
            if needed:
                torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
            else:
                assert fast is None and ref is None


def test_loss_without_gradients_equals_loss_with_them() -> None:
    hidden, weight, target = _case(3)
    with torch.no_grad():
        evaluated = projected_label_smoothed_nll(hidden, weight, target, epsilon=0.1, ignore_index=PAD)
    trained = projected_label_smoothed_nll(hidden.requires_grad_(), weight, target, epsilon=0.1, ignore_index=PAD)
    assert not evaluated[0].requires_grad and trained[0].requires_grad
    assert torch.equal(evaluated[0], trained[0].detach()) and torch.equal(evaluated[1], trained[1])


def test_trainer_adam_equals_the_per_parameter_loop(tmp_path: Path) -> None:
    data = write_toy(tmp_path / "data", train=200, valid=10, test=0)
    cfg = RunConfig(
        data=DataConfig(dir=str(data), src_lang="src", tgt_lang="tgt", tokenizer="word", vocab_size=32),
        model=TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1, dropout=0.0),
        optim=OptimConfig(lr=1e-3, warmup=2, weight_decay=0.01, name="adamw"),
        train=TrainConfig(max_tokens=256, max_updates=5, eval_every=1000, eval_bleu=False, clip_norm=1.0),
    )
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None, show_progress=False)
    assert trainer.optimizer.defaults["foreach"] is True
    reference = copy.deepcopy(trainer.model)
    loop = torch.optim.AdamW(reference.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01,
                             foreach=False)
    groups = trainer._groups()
    for _ in range(5):
        group = next(groups)
        trainer._update(group)
        for batch in group:  # the same loss, gradients, clipping and schedule through the loop optimizer
            loss, _ = trainer.task.loss_module(reference, torch.autocast("cpu", enabled=False))(*batch.inputs())
            (loss / sum(b.num_tokens for b in group)).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        for g in loop.param_groups:
            g["lr"] = trainer.optimizer.param_groups[0]["lr"]
        loop.step()
        loop.zero_grad(set_to_none=True)
    for (name, a), (_, b) in zip(trainer.model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(a, b), name
