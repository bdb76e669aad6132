"""Adding a task is one module plus one dict entry: a toy task defined here, registered by one entry in
``transduce.tasks.TASKS``, is trained by the real Trainer, exported, averaged, fine-tuned from and loaded back
through the generic folder/task paths; and no module outside ``transduce/tasks/`` tells tasks apart by name.

The toy task tags each token of an integer sequence with (token + shift) mod V; its model's output projection
is tied to its embedding (stored once in the folder), and its folder holds one extra file, ``labels.txt``.
Dimension letters: B sequences, T tokens, D model size, V vocabulary.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from transduce import tasks
from transduce.cli.main import main
from transduce.config import SECTIONS, RunConfig
from transduce.errors import ConfigError, UsageError
from transduce.models.folder import ModelFolder
from transduce.train.distributed import DistContext
from transduce.train.trainer import Trainer
from transduce.translate import Translator

sys.path.insert(0, str(Path(__file__).parent))
from task_names import task_comparisons  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LABELS = "labels.txt"


@dataclass(kw_only=True)
class ToyData:
    """The toy task's data: generated from a seed."""

    vocab: int = 11
    """Token ids 0 .. vocab-1."""
    length: int = 6
    """Tokens per sequence."""
    examples: int = 64
    """Training sequences."""
    shift: int = 3
    """Each token's tag is (token + shift) mod vocab."""
    seed: int = 5
    """Seed of the generated sequences."""


@dataclass(kw_only=True)
class ToyModel:
    """The toy tagger's size."""

    dim: int = 16
    """Embedding size."""


@dataclass(kw_only=True)
class ToyDecode:
    """The toy tagger's inference settings."""

    batch_size: int = 8
    """Sequences tagged together."""


class Tagger(nn.Module):
    """(B, T) token ids -> (B, T, V) logits; the output projection is the embedding (tied)."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.mix(self.embed(x))))  # (B, T, V)


@dataclass
class ToyBatch:
    x: Tensor  # (B, T)
    y: Tensor  # (B, T)

    @property
    def num_tokens(self) -> int:
        return self.y.numel()

    def to(self, device: torch.device | str) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device))

    def inputs(self) -> tuple[Tensor, ...]:
        return self.x, self.y


class ToyLoss(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten(), reduction="sum")
        return loss, loss.detach()


def sequences(data: ToyData, count: int, seed: int) -> tuple[Tensor, Tensor]:
    x = torch.randint(0, data.vocab, (count, data.length), generator=torch.Generator().manual_seed(seed))
    return x, (x + data.shift) % data.vocab


class ToyTraining:
    """The training side: writes labels.txt (the toy's "tokenizer") into the run folder the first time."""

    data_keys = ("vocab", "length", "shift")

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.cfg = cfg
        if not (run_dir / LABELS).is_file():
            (run_dir / LABELS).write_text("".join(f"tag{i}\n" for i in range(cfg.data.vocab)))
        self.x, self.y = sequences(cfg.data, cfg.data.examples, cfg.data.seed)
        self.dev_x, self.dev_y = sequences(cfg.data, 16, cfg.data.seed + 1)

    def build_model(self) -> nn.Module:
        return Tagger(self.cfg.data.vocab, self.cfg.model.dim)

    def loss_module(self, model: nn.Module, autocast: AbstractContextManager) -> nn.Module:
        return ToyLoss(model)

    def batches(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.cfg.train.seed + epoch))
        return [order[i : i + 16].tolist() for i in range(0, len(order), 16)]

    def iterate(self, batches: list[list[int]], *, epoch: int, start: int) -> Iterator[ToyBatch]:
        return (ToyBatch(self.x[b], self.y[b]) for b in batches[start:])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dist: DistContext, autocast: AbstractContextManager
                 ) -> tuple[dict[str, Any], float]:
        model.eval()
        logits = model(self.dev_x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), self.dev_y.flatten()) / math.log(2)
        accuracy = float((logits.argmax(-1) == self.dev_y).float().mean())
        return {"loss": round(float(loss), 4), "accuracy": accuracy}, accuracy


class ToyPredictor:
    """The toy task's inference object."""

    def __init__(self, model: nn.Module, labels: list[str]) -> None:
        self.model, self.labels = model, labels

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        return self.model(x)

    def tag(self, x: Tensor) -> list[list[str]]:
        return [[self.labels[i] for i in row] for row in self.logits(x).argmax(-1).tolist()]


@dataclass(frozen=True)
class ToyKind:
    name: str = "toy"
    description: str = "a toy tagger"
    inference: type = field(default=ToyPredictor)

    @property
    def sections(self) -> Mapping[str, type]:
        return {**SECTIONS, "data": ToyData, "model": ToyModel, "decode": ToyDecode}

    def folder_files(self, cfg: RunConfig, folder: Path) -> list[Path]:
        return [folder / LABELS]

    def tied_aliases(self, cfg: RunConfig) -> set[str]:
        return {"out.weight"}

    def build_model(self, cfg: RunConfig, folder: Path) -> nn.Module:
        return Tagger(len((folder / LABELS).read_text().split()), cfg.model.dim)

    def training(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> ToyTraining:
        return ToyTraining(cfg, run_dir)

    def load(self, folder: ModelFolder, device: str = "cpu") -> ToyPredictor:
        model, _, _ = tasks.build_loaded(folder.path, ToyPredictor, "the toy needs a toy model")
        return ToyPredictor(model.to(device), folder.file(LABELS).read_text().split())

    def describe(self, folder: ModelFolder, cfg: RunConfig) -> list[str]:
        return [f"toy tagger, d={cfg.model.dim}, shift {cfg.data.shift}"]


def toy_config(**train: object) -> RunConfig:
    return tasks.parse_config({"task": "toy", "data": {"examples": 64}, "model": {"dim": 16},
                               "optim": {"lr": 0.02, "warmup": 1, "schedule": "constant"},
                               "train": {"max_updates": 6, "eval_every": 1000, "device": "cpu", "log_every": 2,
                                         **train}})


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyKind:
    kind = ToyKind()
    monkeypatch.setitem(tasks.TASKS, "toy", kind)  # the one line that adds a task
    return kind


def test_toy_task_trains_exports_and_loads_through_the_generic_paths(toy: ToyKind, tmp_path: Path) -> None:
    trainer = Trainer(toy_config(), tmp_path / "run", log=lambda _: None, show_progress=False)
    assert trainer.kind is toy
    out = trainer.fit()
    assert out == tmp_path / "run" / "model" and trainer.state.update == 6
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "config.yaml", LABELS, "model.safetensors"]
    assert set(load_file(str(out / "model.safetensors"))) == {"embed.weight", "mix.weight", "mix.bias"}  # tied: once

    predictor = tasks.load(tmp_path / "run")  # a run folder resolves to its model/
    assert isinstance(predictor, ToyPredictor)
    x, _ = sequences(ToyData(), 5, seed=99)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(x)  # (B, T, V): the last update's weights are the only evaluated, so the best
    assert torch.equal(predictor.logits(x), expected)
    assert predictor.model.out.weight is predictor.model.embed.weight  # re-tied on load
    assert predictor.tag(x)[0][0] == f"tag{int(expected[0, 0].argmax())}"


def test_toy_folder_feeds_average_info_finetuning_and_wrong_kind_errors(toy: ToyKind, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    Trainer(toy_config(), tmp_path / "run", log=lambda _: None, show_progress=False).fit()
    model = tmp_path / "run" / "model"

    assert main(["average", str(tmp_path / "run"), "--last", "2", "--out", str(tmp_path / "avg"),
                 "--dtype", "float16"]) == 0
    avg = ModelFolder.read(tmp_path / "avg")
    assert (avg.path / LABELS).read_text() == (model / LABELS).read_text()
    stored = load_file(str(avg.path / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    exported = ModelFolder.read(model).state_dict()
    for name, tensor in avg.state_dict().items():  # float16 on disk, float32 loaded: the rounded weights
        assert tensor.dtype == torch.float32 and torch.equal(tensor, exported[name].half().float())

    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "toy tagger, d=16, shift 3"

    tuned = Trainer(toy_config(init_from=str(model)), tmp_path / "tuned", log=lambda _: None, show_progress=False)
    assert (tmp_path / "tuned" / LABELS).read_bytes() == (model / LABELS).read_bytes()
    for name, tensor in tuned.model.state_dict().items():
        assert torch.equal(tensor, exported["embed.weight" if name == "out.weight" else name])

    with pytest.raises(UsageError, match=r"run/model: a toy tagger; translate needs a translation model$"):
        Translator.load(model)
    assert main(["translate", "--model", str(model), "a b"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"transduce translate: error: {model}: a toy tagger; translate needs a "
                                        "translation model"]
    assert main(["transcribe", "--model", str(model), "x.wav"]) == 2
    assert "a toy tagger; transcribe needs a speech model" in capsys.readouterr().err


def test_a_model_of_the_wrong_kind_is_one_line_naming_the_folder(capsys: pytest.CaptureFixture) -> None:
    translation, speech = ROOT / "models" / "multi30k-en-de", ROOT / "models" / "digits-hybrid-streaming"
    assert main(["transcribe", "--model", str(translation), "x.wav"]) == 2
    assert capsys.readouterr().err.strip() == (f"transduce transcribe: error: {translation}: a translation model; "
                                               "transcribe needs a speech model")
    assert main(["translate", "--model", str(speech), "hello"]) == 2
    assert capsys.readouterr().err.strip() == (f"transduce translate: error: {speech}: a speech model; "
                                               "translate needs a translation model")


def test_unknown_task_names_the_known_ones() -> None:
    assert list(tasks.TASKS)[:4] == ["translation", "rnn_translation", "ctc", "speech_translation"]
    known = re.escape(", ".join(tasks.TASKS))  # every registered name, in the registry's order
    with pytest.raises(ConfigError, match=rf"task: unknown task 'tagging' \(known: {known}\)$"):
        tasks.parse_config({"task": "tagging"})


def test_every_registered_task_resolves_to_a_kind_of_that_name() -> None:
    for name in tasks.TASKS:
        kind = tasks.get_task(name)
        assert kind.name == name and set(kind.sections) == set(SECTIONS)


def test_no_module_outside_tasks_tells_tasks_apart_by_name() -> None:
    names = list(tasks.TASKS)
    found = {str(path.relative_to(ROOT)): lines for path in sorted((ROOT / "transduce").rglob("*.py"))
             if "tasks" not in path.relative_to(ROOT / "transduce").parts[:1]
             and (lines := task_comparisons(path, names))}
    assert found == {}


def test_task_name_finder_sees_dispatch_and_allows_same_task_checks(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("if cfg.task == 'ctc':\n    pass\n"            # 1: dispatch on a name
                      "x = data.get('task') in ('translation',)\n"  # 3: dispatch on names
                      "y = KIND != run.task\n"                      # 4: a name held in a variable
                      "z = source.task != cfg.task\n"               # 5: same-task check: allowed
                      "w = task == 'copy'\n")                       # 6: not a task name: allowed
    assert task_comparisons(source, ["translation", "ctc"]) == [1, 3, 4]


@pytest.mark.parametrize(("config", "message"), [
    ("task: tagging\n", "config.yaml: task: unknown task 'tagging'"),
    ("1: {}\n", "config.yaml: section name 1 is a int, not a string"),
    ("model: {2: 3}\n", "config.yaml: model: key 2 is a int, not a string"),
    ("model: {dim: wide}\n", "config.yaml: model.dim: expected int, got str 'wide'"),
    ("when: 2024-13-01\n", "config.yaml: invalid config"),
])
def test_a_broken_model_config_is_one_error_naming_the_file(tmp_path: Path, config: str, message: str) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.yaml").write_text(config)
    with pytest.raises(ConfigError) as caught:
        tasks.open_folder(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}/") and message in str(caught.value)
