"""Atomic checkpoints, pruning, numeric ordering and averaging."""

import pytest
import torch

from transduce.train import checkpoint as ckpt


def _payload(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)},
        "step": seed,
        "config": {"name": "tiny", "betas": [0.9, 0.98]},
    }


def test_atomic_save_leaves_only_the_target_and_loads_with_weights_only(tmp_path):
    payload = _payload(1)
    path = tmp_path / "step_1.pt"
    ckpt.atomic_save(payload, path)
    assert [p.name for p in tmp_path.iterdir()] == ["step_1.pt"]
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert loaded["step"] == 1 and loaded["config"] == payload["config"]
    for name, tensor in payload["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert ckpt.load(path)["step"] == 1


def test_atomic_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "best.pt"
    ckpt.atomic_save(_payload(1), path)
    ckpt.atomic_save(_payload(2), path)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    assert ckpt.load(path)["step"] == 2


def _touch_steps(folder, steps):
    for s in steps:
        (folder / f"step_{s}.pt").write_bytes(b"")


def test_step_checkpoints_are_ordered_numerically(tmp_path):
    _touch_steps(tmp_path, [10, 9, 100, 2, 11])
    (tmp_path / "best.pt").write_bytes(b"")
    (tmp_path / "step_x.pt").write_bytes(b"")
    (tmp_path / ".step_12.pt.tmp").write_bytes(b"")
    names = [p.name for p in ckpt.step_checkpoints(tmp_path)]
    assert names == ["step_2.pt", "step_9.pt", "step_10.pt", "step_11.pt", "step_100.pt"]


def test_step_checkpoints_of_missing_folder_is_empty(tmp_path):
    assert ckpt.step_checkpoints(tmp_path / "nope") == []


@pytest.mark.parametrize("keep", [1, 2, 5])
def test_prune_keeps_the_newest(tmp_path, keep):
    steps = [9, 10, 11, 2, 100]
    _touch_steps(tmp_path, steps)
    (tmp_path / "best.pt").write_bytes(b"")
    ckpt.prune(tmp_path, keep)
    want = sorted(steps)[-keep:]
    assert [p.name for p in ckpt.step_checkpoints(tmp_path)] == [f"step_{s}.pt" for s in want]
    assert (tmp_path / "best.pt").exists()


def test_prune_with_more_to_keep_than_present_deletes_nothing(tmp_path):
    _touch_steps(tmp_path, [1, 2])
    ckpt.prune(tmp_path, 5)
    assert len(ckpt.step_checkpoints(tmp_path)) == 2


def test_average_equals_manual_mean(tmp_path):
    paths = []
    for seed in (1, 2, 3):
        paths.append(tmp_path / f"step_{seed}.pt")
        ckpt.atomic_save(_payload(seed), paths[-1])
    got = ckpt.average(paths)
    models = [_payload(seed)["model"] for seed in (1, 2, 3)]
    assert set(got) == {"w", "b"}
    for name in got:
        want = torch.stack([m[name] for m in models]).mean(0)
        torch.testing.assert_close(got[name], want)


def test_average_accumulates_low_precision_in_fp32(tmp_path):
    paths = []
    for i, value in enumerate([1.0, 1.0 + 2**-7, 1.0 + 2**-6]):
        paths.append(tmp_path / f"step_{i}.pt")
        ckpt.atomic_save({"model": {"w": torch.full((2,), value, dtype=torch.bfloat16)}}, paths[-1])
    got = ckpt.average(paths)["w"]
    want = torch.tensor([1.0, 1.0 + 2**-7, 1.0 + 2**-6]).mean()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want.expand(2))


def test_average_of_nothing_raises():
    with pytest.raises(ValueError, match="no checkpoints"):
        ckpt.average([])
