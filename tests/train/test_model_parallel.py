"""Model parallel training (``train.parallel: tp`` and ``pp``) on 2 gloo CPU processes equals one process: the
same loss and gradients on the same batch, the same parameters after 3 Adam steps, checkpoints that move
between the two, and the real trainer's logged losses and weights.

One torchrun launch (this file run as a script, see the end) runs every job of the module; the one-process
references run in the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from transduce.config import TrainConfig
from transduce.errors import ConfigError
from transduce.models.transformer import TransformerConfig, TransformerSeq2Seq, build
from transduce.train import checkpoint as ckpt
from transduce.train.loss import SequenceLoss

ROOT = Path(__file__).resolve().parents[2]
TINY = TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=2, decoder_layers=2, dropout=0.0)
VOCAB, STEPS = 24, 3
Batch = tuple[Tensor, Tensor, Tensor, Tensor]


def tiny_model(seed: int = 0, **changes: Any) -> TransformerSeq2Seq:
    torch.manual_seed(seed)
    return build(replace(TINY, **changes), VOCAB, VOCAB)


def tiny_batches() -> list[Batch]:
    """STEPS batches of 4 padded pairs: (src, src_lens, tgt_in, tgt_out), pad 0."""
    gen = torch.Generator().manual_seed(5)
    out = []
    for _ in range(STEPS):
        src_lens, tgt_lens = torch.randint(3, 9, (4,), generator=gen), torch.randint(3, 8, (4,), generator=gen)
        src = torch.randint(4, VOCAB, (4, 8), generator=gen) * (torch.arange(8) < src_lens[:, None])
        tgt = torch.randint(4, VOCAB, (4, 8), generator=gen) * (torch.arange(8) < tgt_lens[:, None] + 1)
        out.append((src, src_lens, tgt[:, :-1], tgt[:, 1:]))
    return out


def whole(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def adam(model: torch.nn.Module, foreach: bool) -> torch.optim.Optimizer:
    """eps 1e-4: the attention key biases get only rounding noise as gradient (softmax ignores a shift), ~1e-9
    and different in every summation order, which the default eps 1e-8 would turn into lr-sized steps."""
    return torch.optim.Adam([p for p in model.parameters() if not p.is_meta], lr=1e-2, eps=1e-4, foreach=foreach)


def plain_step(model: torch.nn.Module, batch: Batch) -> float:
    """One forward/backward of the label-smoothed loss normalized by target tokens; the loss sum."""
    loss, _ = SequenceLoss(model, epsilon=0.1, ignore_index=0)(*batch)
    (loss / int((batch[3] != 0).sum())).backward()
    return loss.item()


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step=plain_step) -> dict[str, Any]:
    """STEPS updates: the losses, the first update's gradients and the final parameters, whole."""
    record: dict[str, Any] = {"losses": []}
    for i, batch in enumerate(tiny_batches()):
        record["losses"].append(step(model, batch))
        if i == 0:
            record["grads"] = {n: whole(p.grad) for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
    record["params"] = {n: whole(p) for n, p in model.named_parameters() if not p.is_meta}
    return record


def assert_close(a: dict[str, Tensor], b: dict[str, Tensor], names: set[str] | None = None) -> None:
    assert names is not None or a.keys() == b.keys()
    for name in sorted(names if names is not None else a):
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


# ---- the workers' jobs (2 processes) -----------------------------------------------------------------------

def tp_job(out: Path) -> None:
    """Tensor parallel: 3 steps recorded, a checkpoint saved, the one-process checkpoint loaded and run."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from transduce.train.distributed import init_distributed
    from transduce.train.tensor_parallel import parallelize

    ctx = init_distributed("cpu", "tp")
    model = tiny_model()
    parallelize(model, ctx, torch.device("cpu"))
    optimizer = adam(model, foreach=False)
    record = train_steps(model, optimizer)
    model_state, optim_state = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    if ctx.is_main:
        torch.save({"model": model_state, "optimizer": optim_state}, out / "tp_checkpoint.pt")
    fresh = tiny_model(seed=7)
    parallelize(fresh, ctx, torch.device("cpu"))
    single = torch.load(out / "single_checkpoint.pt", weights_only=True)
    ckpt.load_into(fresh, adam(fresh, foreach=False), single["model"], single["optimizer"])
    with torch.no_grad():
        record["loaded_logits"] = fresh(*tiny_batches()[0][:3])
    shaw = tiny_model(positions="shaw")  # a relative key table every head of a layer uses
    parallelize(shaw, ctx, torch.device("cpu"))
    record["shaw"] = train_steps(shaw, adam(shaw, foreach=False))
    if ctx.is_main:
        torch.save(record, out / "tp.pt")
    dist.barrier()


def pp_job(out: Path) -> None:
    """Pipeline parallel, 2 stages, 2 microbatches: 3 steps recorded (every stage's part gathered), a checkpoint
    saved, the one-process checkpoint loaded and its loss on the first batch."""
    import torch.distributed as dist

    from transduce.train.distributed import init_distributed
    from transduce.train.pipeline import Pipeline, gather_state

    ctx = init_distributed("cpu", "pp")

    def staged(seed: int) -> tuple[TransformerSeq2Seq, Pipeline, torch.optim.Optimizer]:
        model = tiny_model(seed)
        pipeline = Pipeline(SequenceLoss(model, epsilon=0.1, ignore_index=0), ctx, microbatches=2)
        return model, pipeline, adam(model, foreach=True)

    def step(model: torch.nn.Module, batch: Batch) -> float:
        return pipeline.step(batch, int((batch[3] != 0).sum()), finish=True)[0].item()

    model, pipeline, optimizer = staged(0)
    record = train_steps(model, optimizer, step)
    for key in ("grads", "params"):  # every stage's own parameters
        record[key] = {k: v for part in ctx.gather(record[key]) for k, v in part.items()}
    model_state, optim_state = gather_state(model, optimizer, ctx)
    fresh, pipeline, fresh_optimizer = staged(7)
    single = torch.load(out / "single_checkpoint.pt", weights_only=True)
    ckpt.load_into(fresh, fresh_optimizer, single["model"], single["optimizer"])
    batch = tiny_batches()[0]
    with torch.no_grad():
        record["loaded_loss"] = pipeline.step(batch, 1, finish=False)[0].item()
    if ctx.is_main:
        torch.save({"model": model_state, "optimizer": optim_state}, out / "pp_checkpoint.pt")
        torch.save(record, out / "pp.pt")
    dist.barrier()


JOBS = {"tp": tp_job, "pp": pp_job}


def worker(plan: list[dict[str, Any]]) -> None:
    from transduce.cli.main import main

    for job in plan:
        if job["kind"] == "train":
            if main(["train", *job["argv"]]) != 0:
                sys.exit(1)
        else:
            JOBS[job["kind"]](Path(job["out"]))


# ---- one-process references and the launch ----------------------------------------------------------------

def trainer_argv(data: Path, run: Path, parallel: str) -> list[str]:
    return [str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(run), "--no-progress",
            "--set", f"data.dir={data}", "--set", "train.max_updates=3", "--set", "train.update_freq=2",
            "--set", "train.max_tokens=256", "--set", "train.eval_every=3", "--set", "train.eval_bleu=false",
            "--set", "train.log_every=1", "--set", "train.threads=1", "--set", f"train.parallel={parallel}",
            "--set", "model.dim=32", "--set", "model.ffn_dim=64", "--set", "model.heads=2",
            "--set", "optim.eps=1e-4",  # as ``adam``
            "--set", "train.clip_norm=0.1"]  # clips every update here: tp's and pp's norms of split gradients


def hybrid_argv(data: Path, run: Path, parallel: str) -> list[str]:
    """A Conformer CTC/attention hybrid (2 heads, relative positions, two attention decoders), 2 updates. Chunk
    sizes of dynamic chunk training are drawn from each process's RNG: full context here. Adam eps as ``adam``."""
    return [str(ROOT / "recipes" / "tiny-tones-hybrid.yaml"), "--out", str(run), "--no-progress",
            "--set", f"data.dir={data}", "--set", "train.max_updates=2", "--set", "train.update_freq=2",
            "--set", "train.max_tokens=1000", "--set", "train.eval_every=2", "--set", "train.log_every=1",
            "--set", "train.threads=1", "--set", f"train.parallel={parallel}", "--set", "model.dynamic_chunk=false",
            "--set", "optim.eps=1e-4"]


@pytest.fixture(scope="module")
def speech_data(tmp_path_factory) -> Path:
    from transduce.data.tones import write_tones

    folder = tmp_path_factory.mktemp("tones") / "data"
    write_tones(folder, train=40, valid=4)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from transduce.data.toy import write_toy

    return write_toy(tmp_path_factory.mktemp("mp") / "data", train=200, valid=8, test=0)


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return one_process()


def one_process() -> dict[str, Any]:
    """The one-process run of ``train_steps`` and its checkpoint (full state dicts)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = tiny_model()
    optimizer = adam(model, foreach=True)
    record = train_steps(model, optimizer)
    model_state, optim_state = get_state_dict(model, optimizer)
    record["checkpoint"] = {"model": model_state, "optimizer": optim_state}
    with torch.no_grad():
        record["logits"] = model(*tiny_batches()[0][:3])
        record["loaded_loss"] = SequenceLoss(model, epsilon=0.1, ignore_index=0)(*tiny_batches()[0])[0].item()
    shaw = tiny_model(positions="shaw")
    record["shaw"] = train_steps(shaw, adam(shaw, foreach=True))
    return record


def launch(plan: list[dict[str, Any]], processes: int = 2) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", __file__,
           json.dumps(plan)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, data: Path, speech_data: Path, single: dict[str, Any]) -> Path:
    out = tmp_path_factory.mktemp("workers")
    torch.save(single["checkpoint"], out / "single_checkpoint.pt")
    plan = [{"kind": "tp", "out": str(out)}, {"kind": "pp", "out": str(out)},
            {"kind": "train", "argv": trainer_argv(data, out / "tp_run", "tp")},
            {"kind": "train", "argv": [*trainer_argv(data, out / "pp_run", "pp"), "--set", "train.microbatches=2"]},
            {"kind": "train", "argv": [*trainer_argv(data, out / "switch_run", "tp"), "--set", "train.max_updates=2"]},
            {"kind": "train", "argv": [*trainer_argv(data, out / "switch_run", "pp"), "--resume"]},
            {"kind": "train", "argv": hybrid_argv(speech_data, out / "hybrid_run", "tp")}]
    launch(plan)
    return out


def test_tp_same_loss_gradients_and_parameters(launched: Path, single: dict[str, Any]) -> None:
    tp = torch.load(launched / "tp.pt", weights_only=True)
    assert tp["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert "encoder.layers.0.attn.kv_proj.weight" in tp["grads"]
    assert_close(tp["grads"], single["grads"])
    assert_close(tp["params"], single["params"])
    shaw, reference = tp["shaw"], single["shaw"]
    assert shaw["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert "decoder.layers.1.self_attn.positions.keys" in shaw["grads"]
    assert_close(shaw["grads"], reference["grads"])
    assert_close(shaw["params"], reference["params"])


def test_tp_checkpoints_load_both_ways(launched: Path, single: dict[str, Any]) -> None:
    saved = torch.load(launched / "tp_checkpoint.pt", weights_only=True)  # written under tp, whole tensors
    model = tiny_model(seed=7)
    optimizer = adam(model, foreach=True)
    ckpt.load_into(model, optimizer, saved["model"], saved["optimizer"])
    assert_close({n: p.detach() for n, p in model.named_parameters()}, single["params"])
    reference = single["checkpoint"]["optimizer"]["state"]
    for name, state in saved["optimizer"]["state"].items():
        assert_close(state, reference[name], names={"exp_avg", "exp_avg_sq"})
    tp = torch.load(launched / "tp.pt", weights_only=True)  # the one-process checkpoint loaded under tp
    torch.testing.assert_close(tp["loaded_logits"], single["logits"], rtol=1e-5, atol=1e-5)


def test_pp_same_loss_gradients_and_parameters(launched: Path, single: dict[str, Any]) -> None:
    pp = torch.load(launched / "pp.pt", weights_only=True)
    assert pp["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert_close(pp["grads"], single["grads"])
    assert_close(pp["params"], single["params"])


@pytest.mark.slow
def test_pp_four_stages(tmp_path: Path, single: dict[str, Any]) -> None:
    """4 stages of one layer each: the memory passes through the third stage on its way to the fourth, decoder
    states travel from the third to the fourth, and the shared embedding's gradient is summed over 3 of the 4
    ranks (a process subgroup)."""
    torch.save(single["checkpoint"], tmp_path / "single_checkpoint.pt")
    launch([{"kind": "pp", "out": str(tmp_path)}], processes=4)
    pp = torch.load(tmp_path / "pp.pt", weights_only=True)
    assert pp["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert_close(pp["grads"], single["grads"])
    assert_close(pp["params"], single["params"])
    assert pp["loaded_loss"] == pytest.approx(single["loaded_loss"], rel=1e-5)


def test_pp_checkpoints_load_both_ways(launched: Path, single: dict[str, Any]) -> None:
    saved = torch.load(launched / "pp_checkpoint.pt", weights_only=True)  # gathered from both stages
    model = tiny_model(seed=7)
    optimizer = adam(model, foreach=True)
    ckpt.load_into(model, optimizer, saved["model"], saved["optimizer"])
    assert_close({n: p.detach() for n, p in model.named_parameters()}, single["params"])
    reference = single["checkpoint"]["optimizer"]["state"]
    assert saved["optimizer"]["state"].keys() == reference.keys()
    for name, state in saved["optimizer"]["state"].items():
        assert_close(state, reference[name], names={"exp_avg", "exp_avg_sq"})
    pp = torch.load(launched / "pp.pt", weights_only=True)  # the one-process checkpoint loaded on 2 stages
    assert pp["loaded_loss"] == pytest.approx(single["loaded_loss"], rel=1e-5)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, data: Path) -> Path:
    from transduce.cli.main import main

    run = tmp_path_factory.mktemp("single_run") / "run"
    assert main(["train", *trainer_argv(data, run, "ddp")]) == 0
    return run


def assert_same_training(run: Path, reference: Path, updates: int) -> None:
    """The same tokens and losses logged at every update, the same weights at the end."""
    def logged(run: Path) -> list[tuple[int, float, float]]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["update"], r["tokens"], r["loss"]) for r in rows if r["kind"] == "train"]

    mine, expected = logged(run), logged(reference)
    assert [r[:2] for r in mine] == [r[:2] for r in expected] and len(mine) == updates
    assert [r[2] for r in mine] == pytest.approx([r[2] for r in expected], rel=1e-5)
    weights = ckpt.load(run / "checkpoints" / f"step_{updates}.pt")["model"]
    assert_close(weights, ckpt.load(reference / "checkpoints" / f"step_{updates}.pt")["model"])


@pytest.mark.parametrize("parallel", ["tp", "pp", "switch"])
def test_trainer_equals_single_process(parallel: str, launched: Path, single_run: Path) -> None:
    """``transduce train`` under torchrun equals one process. switch: 2 updates under tp, resumed under pp."""
    assert_same_training(launched / f"{parallel}_run", single_run, 3)


def test_tp_conformer_hybrid_trainer_equals_single_process(launched: Path, speech_data: Path, tmp_path: Path) -> None:
    from transduce.cli.main import main

    assert main(["train", *hybrid_argv(speech_data, tmp_path / "single", "ddp")]) == 0
    saved = ckpt.load(launched / "hybrid_run" / "checkpoints" / "step_2.pt")["model"]
    assert "encoder.blocks.0.attn.pos_bias_u" in saved and "decoder.layers.0.self_attn.kv_proj.weight" in saved
    assert_same_training(launched / "hybrid_run", tmp_path / "single", 2)


# ---- configuration errors (one process) --------------------------------------------------------------------

def test_tp_plan_errors_name_the_field() -> None:
    from transduce.train.tensor_parallel import tp_plan

    assert tp_plan(tiny_model(), 2)["decoder.layers.1.cross_attn.kv_proj"] == "colwise_fused"
    with pytest.raises(ConfigError, match="model.heads"):
        tp_plan(tiny_model(heads=1), 2)
    with pytest.raises(ConfigError, match="model.ffn_dim"):
        tp_plan(tiny_model(ffn_dim=63), 2)
    assert tp_plan(tiny_model(positions="shaw"), 2)["encoder.layers.0.attn.positions.keys"] == "heads_shared"


def test_pp_stages_and_errors() -> None:
    from transduce.train.distributed import DistContext
    from transduce.train.pipeline import Pipeline, split_layers

    assert split_layers(5, 2) == [range(0, 3), range(3, 5)]
    assert split_layers(4, 4) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(ConfigError, match=r"pp over 5 processes needs at least 5 layers.*model.encoder_layers"):
        split_layers(4, 5)
    loss = SequenceLoss(tiny_model(), epsilon=0.1, ignore_index=0)
    with pytest.raises(ConfigError, match="train.microbatches: must be >= 1, got 0"):
        Pipeline(loss, DistContext(), microbatches=0)
    with pytest.raises(ConfigError, match="train.microbatches: must be >= 1, got -1"):
        TrainConfig(microbatches=-1)  # the recipe is checked before any process starts
    with pytest.raises(ConfigError, match="train.precision: fp16"):
        Pipeline(loss, DistContext(), microbatches=2, precision="fp16")
    with pytest.raises(ConfigError, match="train.parallel: pp"):
        Pipeline(torch.nn.Linear(2, 2), DistContext(), microbatches=2)


def test_unknown_parallel_value() -> None:
    from transduce.train.distributed import init_distributed

    with pytest.raises(ConfigError, match="train.parallel: unknown 'zp'"):
        init_distributed("cpu", "zp")


if __name__ == "__main__":  # a torchrun worker: run the jobs of argv[1] in turn
    worker(json.loads(sys.argv[1]))
