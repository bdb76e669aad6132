"""The unified model's decoder side: the tag prefix (only the first decoder inputs change with the task and
language), cached step-by-step decoding against the full forward, the prefix search against the one-tag search,
and adapter-only training (every other parameter bit-identical after optimizer steps)."""

from __future__ import annotations

import pytest
import torch
from test_adapters import inputs, tiny
from testkit import stepwise

from transduce.data.tokenizer import EOS, PAD
from transduce.data.unified_batching import Example, _decoder_side
from transduce.decoding.prefix import prefix_beam_search
from transduce.models.unified import TASK_TAGS, Tags, UnifiedModel, build_unified, trainable

pytestmark = pytest.mark.usefixtures("one_thread")
W, LANGS = 30, ("en", "de", "fr")


def model() -> UnifiedModel:
    torch.manual_seed(0)
    return build_unified(tiny(), W, len(LANGS))


def example(prefix: list[int], target: list[int]) -> Example:
    return Example(0, None, [5, 6], [], tuple(prefix), target, "de", "", 4)


def test_tags_change_only_the_decoder_prefix() -> None:
    tags = Tags(W, LANGS)
    target = [7, 8, 9]
    rows = [tags.prefix("translate", "de"), tags.prefix("translate", "fr"), tags.prefix("transcribe", "en")]
    tgt_in, tgt_out, _ = _decoder_side([example(p, target) for p in rows])
    assert (tgt_in[:, 2:] == torch.tensor(target)).all() and tgt_in[:, :2].tolist() == rows
    assert (tgt_out == torch.tensor([PAD, *target, EOS])).all()  # same output; nothing is trained on the first tag
    assert rows == [[W + 1, W + 2 + 1], [W + 1, W + 2 + 2], [W + 0, W + 2 + 0]]
    assert tags.ids().tolist() == list(range(W, W + len(TASK_TAGS) + len(LANGS)))
    m = model().eval()  # the encoder never reads the tags: memory is the same for any prefix
    x, lens = inputs()["text"]
    a, b = m.encode(x, lens, modality="text"), m.encode(x, lens, modality="text")
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("modality", ["speech", "text"])
def test_cached_steps_equal_the_full_forward(modality: str) -> None:
    m = model().eval()
    x, lens = inputs()[modality]
    tgt = torch.tensor([[W + 1, W + 3, 7, 8, 9, 4], [W + 1, W + 4, 5, 6, 4, 4], [W, W + 2, 9, 9, 9, 9]])
    full = m(x, lens, tgt, modality=modality).float().log_softmax(-1)  # (B, U, V)

    class Bound(torch.nn.Module):  # testkit.stepwise calls encode(src, src_lens)
        def encode(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return m.encode(a, b, modality=modality)

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(m, name) if name in ("init_state", "step") else super().__getattr__(name)

    steps, _ = stepwise(Bound(), x, lens, tgt)
    assert torch.allclose(steps, full, atol=1e-5)
    reorder = torch.tensor([2, 0, 0])
    moved, _ = stepwise(Bound(), x, lens, tgt, reorder)
    assert torch.allclose(moved[:, 2:], full[reorder, 2:], atol=1e-5)


def test_a_two_tag_search_scores_its_output_as_the_forced_forward() -> None:
    m = model().eval()
    x, lens = inputs()["text"]
    memory, memory_lens = m.encode(x, lens, modality="text")
    prefix = torch.tensor([[W + 1, W + 3]] * 3)
    found = prefix_beam_search(m, memory, memory_lens, prefix, Tags(W, LANGS).ids(), torch.tensor([5, 5, 5]), beam=1)
    for b, [hyp] in enumerate(found):
        assert all(t < W for t in hyp.tokens)
        forced = torch.tensor([[*prefix[b].tolist(), *hyp.tokens]])
        with torch.no_grad():  # log-probs read after the second tag: (len(tokens) + 1, V)
            lp = m(x[b: b + 1], lens[b: b + 1], forced, modality="text").float().log_softmax(-1)[0, 1:]
        total = sum(float(lp[i, t]) for i, t in enumerate([*hyp.tokens, EOS]))
        assert abs(total - hyp.log_prob) < 1e-4, (b, hyp)


@pytest.mark.parametrize("parts", [("adapters",), ("adapters", "tags")])
def test_train_only_adapters_leaves_everything_else_bit_identical(parts: tuple[str, ...]) -> None:
    m = model().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    count = trainable(m, parts, W)
    assert count == sum(p.numel() for p in m.parameters() if p.requires_grad) - (
        W * 32 if "tags" in parts else 0)  # the embedding is trained as a whole tensor, its piece rows held at 0
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    tgt = torch.tensor([[W + 1, W + 3, 7, 8, 9], [W + 1, W + 4, 5, 6, 4], [W, W + 2, 9, 9, 9]])
    for name, (x, lens) in inputs().items():
        for _ in range(2):
            opt.zero_grad()
            m(x, lens, tgt, modality=name).float().log_softmax(-1)[..., 1:, :].mean().backward()
            opt.step()
    after = m.state_dict()
    for k, v in after.items():
        adapter = ".adapter." in k
        embedding = k in ("decoder.embed.embedding.weight", "decoder.output.weight")
        if adapter and not k.endswith(("norm.mean", "norm.var")):
            assert not torch.equal(v, before[k]), k
        elif embedding and "tags" in parts:
            assert torch.equal(v[:W], before[k][:W]) and not torch.equal(v[W:], before[k][W:]), k
        elif not adapter:
            assert torch.equal(v, before[k]), k
