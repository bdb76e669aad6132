"""The training loop: one readable loop that calls small components.

Position in the data is (epoch, batch index); batches of an epoch depend only on the seed and
the epoch, so a resumed run replays exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
)
from tqdm import tqdm

from transduce.config import DEFAULT_TASK, RunConfig, to_dict
from transduce.errors import ConfigError, TrainingError
from transduce.train import checkpoint as ckpt
from transduce.train.compile import WarmupClock, compile_layers
from transduce.train.distributed import init_distributed, skip_grad_sync, wrap_for_parallel
from transduce.train.export import export_model
from transduce.train.finetune import load_initial_weights, share_tokenizers
from transduce.train.interrupt import GracefulStop
from transduce.train.pipeline import Pipeline, gather_model_state, gather_state
from transduce.train.precision import Precision, detect_hardware, resolve_precision
from transduce.train.runtime import resolve_device, tune_malloc
from transduce.train.schedule import learning_rate, make_optimizer
from transduce.train.tasks import Task, TrainBatch, TrainingKind


@dataclass
class Progress:
    """Everything besides weights and optimizer that a resumed run needs."""

    update: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_score: float = -math.inf
    bad_evals: int = 0
    train_seconds: float = 0.0
    skipped_nonfinite: int = 0
    skipped_overflow: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _quiet(_: str) -> None:
    pass


def _get(tree: dict[str, Any], dotted: str) -> object:
    section, key = dotted.split(".")
    return tree.get(section, {}).get(key)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, log=print, show_progress: bool = True,
                 kind: TrainingKind | None = None):
        """``kind``: the task kind that prepares the data and names the model folder's files; default, the one
        ``transduce.tasks`` registers for ``cfg.task``."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        if kind is None:
            from transduce.tasks import get_task  # the registry sits above the trainer: looked up, not imported

            kind = get_task(cfg.task)
        self.kind = kind
        learning_rate(cfg.optim, 1)  # validates optim.schedule before any slow work
        cfg = self.cfg = self._runtime(cfg, log, show_progress)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tune_malloc()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        self.task, self.model = self._task_and_model(cfg, kind)
        self.warmup: WarmupClock | None = None
        if cfg.train.compile:
            count = compile_layers(self.model, self.device)
            self.log(f"train.compile: {count} layers compiled for training (the first updates are slower)")
            self.warmup = WarmupClock(self.log)
        self.state = Progress()
        self._bad_in_a_row = 0
        self._eval_copy: torch.nn.Module | None = None
        self.step_module = wrap_for_parallel(self.task.loss_module(self.model, self.autocast),
                                             self.dist, cfg.train.parallel, self.device, model=self.model)
        self.pipeline: Pipeline | None = None  # pp: this rank's stage; the other parameters become meta tensors
        if self.model_parallel and cfg.train.parallel == "pp":
            self.pipeline = Pipeline(self.step_module, self.dist, microbatches=cfg.train.microbatches,
                                     precision=cfg.train.precision)
        self.optimizer = self._optimizer()  # after sharding: FSDP replaces parameters by DTensors
        if self.dist.active:
            torch.manual_seed(cfg.train.seed + 1000 * self.dist.dp_rank)  # distinct dropout per data rank

    def _runtime(self, cfg: RunConfig, log, show_progress: bool) -> RunConfig:
        """Device, process group, who talks, and precision (``auto`` resolved: the config returned names the choice,
        so checkpoints, the model folder and evaluation see it)."""
        self.device = resolve_device(cfg.train.device)
        self.dist = init_distributed(self.device.type, cfg.train.parallel)
        self.data = self.dist.data()  # who splits the batches: everyone (ddp, fsdp) or no one (tp, pp)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.log = log if self.dist.is_main else _quiet  # only rank 0 talks, draws and writes
        self.show_progress = show_progress and self.dist.is_main
        self.sharded = self.dist.active and cfg.train.parallel == "fsdp"
        self.model_parallel = self.dist.active and not self.dist.data_parallel
        precision, note = resolve_precision(cfg.train.precision, detect_hardware(self.device))
        if note:
            self.log(note)
        if precision != cfg.train.precision:
            cfg = replace(cfg, train=replace(cfg.train, precision=precision))
        self.precision = Precision(precision, self.device.type, sharded=self.sharded)
        self.autocast = self.precision.autocast
        return cfg

    def _task_and_model(self, cfg: RunConfig, kind: TrainingKind) -> tuple[Task, torch.nn.Module]:
        """The task's data (rank 0 first: it trains or copies the tokenizer) and its model, initialized (from
        ``train.init_from``, or component-wise) and on the device."""
        if not self.dist.is_main:
            self.dist.barrier()
        elif cfg.train.init_from:
            share_tokenizers(cfg, self.run_dir, kind)
        task: Task = kind.training(cfg, self.run_dir, self.log)
        if self.dist.is_main:
            self.dist.barrier()
        model = task.build_model()
        if cfg.train.init_from:
            load_initial_weights(model, cfg, kind, self.log)
        init_components = getattr(task, "init_components", None)
        if init_components is not None:  # component-wise initialization (speech translation: encoder and decoder)
            init_components(model)
        return task, model.to(self.device)

    def _optimizer(self) -> torch.optim.Optimizer:
        # foreach not under tp: one multi-tensor kernel cannot take its mix of split (DTensor) and whole parameters
        foreach = not (self.model_parallel and self.cfg.train.parallel == "tp")
        return make_optimizer(self.cfg.optim, (p for p in self.model.parameters() if not p.is_meta),  # pp: its own
                              foreach=foreach)

    # ---- checkpoints -------------------------------------------------------------------
    def save(self, name: str | None = None) -> Path:
        """Write ``step_N`` (or ``name``): one file from rank 0, or, when sharded, a
        torch.distributed.checkpoint folder from all ranks. Every rank returns once it exists.
        Weights and optimizer state are keyed by parameter name, so any world size can load them."""
        stem = name or f"step_{self.state.update}"
        whole = StateDictOptions(full_state_dict=True) if self.model_parallel else None  # gathered on every rank
        model_state, optim_state = (gather_state(self.model, self.optimizer, self.dist) if self.pipeline else
                                    get_state_dict(self.model, self.optimizer, options=whole))  # collective if split
        extras = {"progress": vars(self.state), "rng": torch.get_rng_state(), "config": to_dict(self.cfg),
                  "rank_rngs": self.dist.gather(torch.get_rng_state()),  # dropout streams of every rank
                  "scaler": self.precision.state_dict(),
                  "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []}
        if self.sharded:
            path = self.ckpt_dir / stem
            ckpt.save_sharded({"model": model_state, "optimizer": optim_state}, extras, path,
                              is_main=self.dist.is_main, barrier=self.dist.barrier)
        else:
            path = self.ckpt_dir / f"{stem}.pt"
            if self.dist.is_main:
                ckpt.atomic_save({"model": model_state, "optimizer": optim_state, **extras}, path)
        if self.dist.is_main and name is None:
            ckpt.write_latest(self.ckpt_dir, path.name)
            ckpt.prune(self.ckpt_dir, self.cfg.train.keep_last)
        self.dist.barrier()
        return path

    def resume(self) -> bool:
        """Load the newest readable step checkpoint; False when there is none."""
        for path in reversed(ckpt.step_checkpoints(self.ckpt_dir)):
            try:
                payload = ckpt.load_verified(path)
            except Exception as err:  # truncated or corrupt: fall back to an older one
                self.log(f"warning: skipping unreadable checkpoint {path}: {err}")
                continue
            self._check_compatible(payload["config"], path)
            try:
                ckpt.load_into(self.model, self.optimizer, payload["model"], payload["optimizer"])
            except ckpt.MismatchError as err:
                raise ConfigError(f"{path}: {err}") from None
            self.state = Progress(**payload["progress"])
            self.precision.load_state_dict(payload.get("scaler", {}))
            self._restore_rng(payload)
            if self.device.type == "cuda" and payload.get("cuda_rng"):
                torch.cuda.set_rng_state_all(payload["cuda_rng"])
            self.log(f"resumed from {path} at update {self.state.update}")
            return True
        return False

    def _restore_rng(self, payload: dict[str, Any]) -> None:
        """Each rank continues its own dropout stream; with another world size, fresh streams."""
        streams = payload.get("rank_rngs") or [payload["rng"]]
        if len(streams) == self.dist.world:
            torch.set_rng_state(streams[self.dist.rank])
        else:
            self.log(f"note: world size {len(streams)} -> {self.dist.world}: dropout streams re-seeded")
            torch.manual_seed(self.cfg.train.seed + 1000 * self.dist.rank + self.state.update)

    def _check_compatible(self, saved: dict[str, Any], path: Path) -> None:
        """The recipe may change the schedule or the budget, not the model or its vocabulary. A field missing
        from an older checkpoint's config had its (current) default value then."""
        now = to_dict(self.cfg)
        old = {section: {**to_dict(type(getattr(self.cfg, section))()), **saved.get(section, {})}
               for section in ("model", "data")}
        keys = [f"model.{k}" for k in now["model"] if old["model"].get(k) != now["model"][k]]
        keys += [f"data.{k}" for k in self.task.data_keys if old["data"].get(k) != now["data"][k]]
        if saved.get("task", DEFAULT_TASK) != now["task"]:  # trained for another task, whichever
            keys.insert(0, "task")
        if keys:
            detail = ", ".join(f"{k}: {_get(saved, k)!r} in checkpoint, {_get(now, k)!r} now" for k in keys)
            raise ConfigError(f"{path} was trained with another configuration ({detail})")

    # ---- one update --------------------------------------------------------------------
    def _update(self, group: list[TrainBatch]) -> dict[str, float]:
        """Forward/backward over ``group`` (gradient accumulation), then one optimizer step."""
        self.step_module.train()
        tokens = sum(b.num_tokens for b in group)  # the whole global group, known to every rank
        mine = self.data.shard(group)
        loss_sum = nll_sum = 0.0
        for i, batch in enumerate(mine):
            last = i == len(mine) - 1
            with skip_grad_sync(self.step_module, skip=not last):
                batch = batch.to(self.device)
                if self.pipeline is not None:  # pp: forward and backward through the stages, microbatch by microbatch
                    loss, nll = self.pipeline.step(batch.inputs(), tokens, finish=last)
                else:
                    loss, nll = self.step_module(*batch.inputs())
                    # DDP averages gradients over ranks: scale by W so the result is sum / tokens
                    self.precision.backward(loss * self.data.world / tokens)
            loss_sum, nll_sum = loss_sum + loss.item(), nll_sum + nll.item()
        loss_sum, nll_sum = self.data.sum([loss_sum, nll_sum], self.device)
        if not math.isfinite(loss_sum):
            return self._skip_nonfinite(loss_sum)
        self._bad_in_a_row = 0
        lr = learning_rate(self.cfg.optim, self.state.update + 1)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        clip = self.cfg.train.clip_norm  # pp: clipped here over every stage's gradients, 0 left to do
        clip = self.pipeline.clip_grad_norm(clip) if self.pipeline is not None else clip
        applied = self.precision.step(self.optimizer, self.model.parameters(), clip)
        self.optimizer.zero_grad(set_to_none=True)
        if not applied:
            self.state.skipped_overflow += 1
            self.log(f"fp16 gradient overflow at update {self.state.update + 1}: step skipped, loss scale now "
                     f"{self.precision.scaler.get_scale():g} ({self.state.skipped_overflow} skipped in all)")
            return {}
        self.state.update += 1
        return {"loss": loss_sum / tokens / math.log(2), "nll": nll_sum / tokens / math.log(2),
                "lr": lr, "tokens": tokens}

    def _skip_nonfinite(self, loss: float) -> dict[str, float]:
        """Drop this update's gradients; stop after ``train.max_nonfinite`` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.state.skipped_nonfinite += 1
        self._bad_in_a_row += 1
        limit = self.cfg.train.max_nonfinite
        self.log(f"warning: loss {loss} at update {self.state.update + 1}: batch skipped "
                 f"({self._bad_in_a_row} in a row, {self.state.skipped_nonfinite} in all)")
        if self._bad_in_a_row >= limit:
            raise TrainingError(f"the loss was not finite for {limit} updates in a row; lower optim.lr, "
                                f"set train.clip_norm, or resume from an earlier checkpoint")
        return {}

    def _groups(self) -> Iterator[list[TrainBatch]]:
        """Yield lists of ``update_freq`` batches from the saved position onwards, forever."""
        t, world = self.cfg.train, self.data.world
        size = -(-t.update_freq // world) * world  # a multiple of the world size
        while self.state.epoch < t.max_epochs:
            batches = self.task.batches(self.state.epoch)
            usable = len(batches) - (len(batches) - self.state.batch_in_epoch) % world  # drop < W at the end
            group: list[TrainBatch] = []
            stream = self.task.iterate(batches[:usable], epoch=self.state.epoch, start=self.state.batch_in_epoch)
            for batch in stream:
                group.append(batch)
                self.state.batch_in_epoch += 1
                if len(group) == size or self.state.batch_in_epoch == usable:
                    yield group
                    group = []
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    # ---- evaluation and logging --------------------------------------------------------
    def _record(self, entry: dict[str, Any]) -> None:
        entry = {"update": self.state.update, **entry}
        self.state.history.append(entry)
        if not self.dist.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _eval_model(self) -> torch.nn.Module:
        """The model with whole parameters. Sharded or model parallel: a local copy refreshed from the gathered
        weights, so each rank decodes its share of the dev set (model parallel: all of it) without collectives."""
        if not (self.sharded or self.model_parallel):
            return self.model
        full = (gather_model_state(self.model, self.dist) if self.pipeline else
                get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True)))
        if self._eval_copy is None:
            self._eval_copy = self.task.build_model().to(self.device)
        self._eval_copy.load_state_dict(full)
        return self._eval_copy

    def evaluate(self) -> dict[str, Any]:
        metrics, score = self.task.evaluate(self._eval_model(), self.data, self.autocast)
        result: dict[str, Any] = {"kind": "valid", **metrics}
        if score > self.state.best_score:
            self.state.best_score, self.state.bad_evals = score, 0
            result["best"] = True
            self.save("best")
        else:
            self.state.bad_evals += 1
        self._record(result)
        return result

    def _log_step(self, stats: dict[str, float], speed: float, bar: tqdm) -> None:
        """``stats``: loss and nll averaged over the log window's tokens, the window's tokens."""
        bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{speed:.0f}")
        stats = {**stats, **getattr(self.task, "train_log", dict)()}  # a multi-task task's (unified: nll per task)
        self._record({"kind": "train", **stats, "tokens_per_s": round(speed), "epoch": self.state.epoch,
                      "skipped_nonfinite": self.state.skipped_nonfinite,
                      "skipped_overflow": self.state.skipped_overflow})

    def _checkpoint_and_maybe_stop(self, bar: tqdm) -> bool:
        """Evaluate, save; True when early stopping says to stop."""
        result = self.evaluate()
        if self.dist.is_main:  # the other ranks' bars are off, not their write
            bar.write(f"update {self.state.update}: " + ", ".join(
                f"{k}={v}" for k, v in result.items() if k != "kind" and "signature" not in k))
        self.save()
        t = self.cfg.train
        if t.patience and self.state.bad_evals >= t.patience:
            self.log(f"early stop: no dev improvement in {t.patience} evaluations")
            return True
        return False

    def fit(self, resume: bool = False) -> Path | None:
        """Train until max_updates/max_epochs/patience, then export the model and return its
        folder. On SIGINT/SIGTERM: finish the update, checkpoint, return None."""
        if resume and not self.resume():
            self.log("no checkpoint to resume from: starting fresh")
        t = self.cfg.train
        bar = tqdm(total=t.max_updates, initial=self.state.update, disable=not self.show_progress,
                   dynamic_ncols=True, desc="train")
        window: dict[str, float] = {"tokens": 0.0, "loss": 0.0, "nll": 0.0}
        window_start = time.perf_counter()
        with GracefulStop() as stop:
            for group in ([] if self.state.update >= t.max_updates else self._groups()):
                started = time.perf_counter()
                stats = self._update(group)
                self.state.train_seconds += time.perf_counter() - started
                if self.warmup is not None:
                    self.warmup.update_done(time.perf_counter() - started)
                if stats:
                    for key in window:  # token-weighted sums over the log window
                        window[key] += stats[key] * (stats["tokens"] if key != "tokens" else 1)
                    bar.update(1)
                    if self.state.update % t.log_every == 0:
                        mean = {**stats, "loss": window["loss"] / window["tokens"],
                                "nll": window["nll"] / window["tokens"], "tokens": window["tokens"]}
                        self._log_step(mean, window["tokens"] / (time.perf_counter() - window_start), bar)
                        window = dict.fromkeys(window, 0.0)
                        window_start = time.perf_counter()
                    done = self.state.update >= t.max_updates
                    if (self.state.update % t.eval_every == 0 or done) and self._checkpoint_and_maybe_stop(bar):
                        break
                    if done:
                        break
                if self._stop_everywhere(stop.requested is not None):
                    path = self.save()
                    bar.close()
                    self.log(f"{stop.requested or 'signal'}: stopped after update {self.state.update}, "
                             f"checkpoint {path}; "
                             f"continue with the same command and --resume")
                    return None
        bar.close()
        saved = self.ckpt_dir / f"step_{self.state.update}"
        if not (saved.exists() or saved.with_suffix(".pt").exists()):
            self.evaluate()
            self.save()
        out = export_model(self) if self.dist.is_main else self.run_dir / "model"
        self.dist.barrier()
        return out

    def _stop_everywhere(self, requested: bool) -> bool:
        """A signal may reach ranks at different updates: stop together when any rank saw one."""
        if not self.dist.active:
            return requested
        return self.dist.sum([float(requested)], self.device)[0] > 0
