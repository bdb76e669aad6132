"""Human feedback: corrections of served results, kept in SQLite, exported as fine-tuning data.

The server (``transduce serve --data-dir DIR``) writes each correction a user posts to ``DIR/feedback.sqlite``
through a ``FeedbackStore``; served audio is written to ``DIR/audio/`` only when the client asked for it
(``keep_audio``). ``export_feedback`` turns the corrections of each model into what ``transduce train`` reads:

- speech: ``OUT/MODEL/train.jsonl`` + ``dev.jsonl`` manifests (the kept audio copied to ``OUT/MODEL/audio/``,
  the correction as the transcript, the speaker ``feedback``);
- translation: ``OUT/MODEL/train.SRC`` / ``train.TGT`` and ``val.SRC`` / ``val.TGT`` parallel text (input,
  correction);
- with the served model's folder given (``--model-dir``), ``OUT/MODEL/finetune.yaml``: the model's own recipe
  with ``train.init_from`` set to that folder and a short, gentle schedule, so fine-tuning is one command:
  ``transduce train OUT/MODEL/finetune.yaml --out RUN``.

A speech correction without kept audio cannot train anything and is counted as skipped, as is an empty one. A
correction equal to the model's output is kept: the user confirmed the output, a label as good as any other.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from transduce.data.text import DataError

DB_NAME = "feedback.sqlite"
AUDIO_DIR = "audio"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,           -- Unix time
    model TEXT NOT NULL,             -- served model name (its folder name), never a path
    request_id TEXT,                 -- the served request it corrects, when known
    input TEXT,                      -- source text (translation)
    audio TEXT,                      -- kept audio, relative to the data folder (speech, keep_audio)
    duration REAL,                   -- seconds of kept audio
    output TEXT NOT NULL,            -- what the model said
    correction TEXT NOT NULL         -- what it should have said
)"""
_COLUMNS = ("id", "created", "model", "request_id", "input", "audio", "duration", "output", "correction")


@dataclass(frozen=True)
class Correction:
    """One stored correction (a row of ``corrections``)."""

    id: int
    created: float
    model: str
    request_id: str | None
    input: str | None
    audio: str | None
    """Kept audio file, relative to the data folder."""
    duration: float | None
    output: str
    correction: str


def clean_text(text: str) -> str:
    """Whitespace runs as single spaces, none at the ends."""
    return " ".join(text.split())


class FeedbackStore:
    """Corrections in ``data_dir/feedback.sqlite`` and kept audio in ``data_dir/audio/``. Safe to share
    between threads (one connection behind a lock; SQLite commits each ``add``)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.data_dir / DB_NAME, check_same_thread=False)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            raise DataError(f"{self.data_dir / DB_NAME}: cannot open the feedback database ({err})") from None
        self._lock = threading.Lock()

    def save_audio(self, samples: np.ndarray, sample_rate: int) -> tuple[str, float]:
        """Write mono float samples in [-1, 1] as a 16-bit WAV; (path relative to the data folder, seconds)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        rel = f"{AUDIO_DIR}/{uuid.uuid4().hex}.wav"
        path = self.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        return rel, len(samples) / sample_rate

    def add(self, *, model: str, output: str, correction: str, input: str | None = None,
            request_id: str | None = None, audio: str | None = None, duration: float | None = None) -> int:
        """Store one correction; its id."""
        row = (time.time(), model, request_id, input, audio, duration, output, correction)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO corrections (created, model, request_id, input, audio, duration, output, correction) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._db.commit()
        assert cur.lastrowid is not None  # an INSERT into a rowid table always sets it
        return cur.lastrowid

    def corrections(self, model: str | None = None) -> list[Correction]:
        """Stored corrections in the order they came, of one model or all."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM corrections"
        args: tuple[str, ...] = ()
        if model is not None:
            query, args = query + " WHERE model = ?", (model,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [Correction(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_corrections(db: str | Path) -> list[Correction]:
    """All corrections of an existing feedback database (opened read-only); errors name the file."""
    db = Path(db)
    if not db.is_file():
        raise DataError(f"{db}: no such feedback database (transduce serve --data-dir writes {DB_NAME})")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM corrections ORDER BY id").fetchall()
    except sqlite3.Error as err:
        raise DataError(f"{db}: not a transduce feedback database ({err})") from None
    return [Correction(*row) for row in rows]


@dataclass
class ExportSummary:
    """What ``export_feedback`` wrote for one model."""

    model: str
    kind: str
    """speech or translation."""
    folder: Path
    train: int
    dev: int
    skipped: int
    recipe: Path | None

    def __str__(self) -> str:
        recipe = f"; fine-tune: transduce train {self.recipe} --out RUN" if self.recipe else ""
        return (f"{self.model}: {self.kind}, {self.train} train + {self.dev} dev corrections in {self.folder}, "
                f"{self.skipped} skipped{recipe}")


def _split(rows: list[Correction], dev_fraction: float, seed: int) -> tuple[list[Correction], list[Correction]]:
    """A seeded dev share (at least one row when there are two or more), the rest for training."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    n_dev = min(len(order) - 1, max(1, round(len(order) * dev_fraction))) if len(order) > 1 else 0
    return order[n_dev:], order[:n_dev]


def _write_manifest(path: Path, rows: Iterable[Correction], audio: dict[int, str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": f"feedback-{r.id}", "audio": audio[r.id], "duration": r.duration,
                                "text": clean_text(r.correction), "speaker": "feedback"}) + "\n")


def _export_speech(rows: list[Correction], db_dir: Path, folder: Path, dev_fraction: float, seed: int
                   ) -> tuple[int, int]:
    audio: dict[int, str] = {}
    for r in rows:
        assert r.audio is not None  # only rows with kept audio reach here
        src = db_dir / r.audio
        if not src.is_file():
            raise DataError(f"{src}: kept audio of correction {r.id} is missing")
        audio[r.id] = f"audio/{Path(r.audio).name}"
        shutil.copyfile(src, folder / audio[r.id])
    train, dev = _split(rows, dev_fraction, seed)
    _write_manifest(folder / "train.jsonl", train, audio)
    _write_manifest(folder / "dev.jsonl", dev or train, audio)  # a single correction doubles as its own dev set
    return len(train), len(dev)


def _export_text(rows: list[Correction], folder: Path, langs: tuple[str, str], dev_fraction: float, seed: int
                 ) -> tuple[int, int]:
    train, dev = _split(rows, dev_fraction, seed)
    for prefix, part in (("train", train), ("val", dev or train)):
        for lang, texts in zip(langs, ([r.input or "" for r in part], [r.correction for r in part]), strict=True):
            (folder / f"{prefix}.{lang}").write_text("".join(clean_text(t) + "\n" for t in texts), encoding="utf-8")
    return len(train), len(dev)


def finetune_recipe(model_dir: Path, data_dir: Path, *, kind: str, updates: int, lr_scale: float) -> dict:
    """The served model's recipe (its config.yaml) turned into a fine-tuning run on ``data_dir``: weights from
    ``model_dir``, ``updates`` updates at ``lr_scale`` times its peak learning rate, a dev check every quarter."""
    from transduce.models.folder import parse_yaml

    path = model_dir / "config.yaml"
    cfg = parse_yaml(path.read_text(encoding="utf-8"), path)
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), dict) for k in ("data", "optim", "train")):
        raise DataError(f"{path}: not a model config (needs data, optim and train sections)")
    data, optim, train = cfg["data"], cfg["optim"], cfg["train"]
    data.update(dir=str(data_dir.resolve()))
    data.update({"train": "train.jsonl", "valid": "dev.jsonl"} if kind == "speech" else {"train": "train",
                                                                                       "valid": "val"})
    optim.update(lr=float(optim.get("lr", 5e-4)) * lr_scale, warmup=max(1, updates // 10))
    train.update(init_from=str(model_dir.resolve()), max_updates=updates, eval_every=max(1, updates // 4),
                 log_every=max(1, updates // 20), keep_last=2, average_last=1, patience=0)
    for field in ("ensemble", "rerank", "rerank_weights"):  # other folders, named relative to the served one
        if isinstance(cfg.get("decode"), dict) and field in cfg["decode"]:
            cfg["decode"][field] = []
    return cfg


def _langs(model_dir: Path | None) -> tuple[str, str]:
    if model_dir is None:
        return "src", "tgt"
    from transduce.models.folder import parse_yaml

    cfg = parse_yaml((model_dir / "config.yaml").read_text(encoding="utf-8"), model_dir / "config.yaml")
    data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
    return str(data.get("src_lang", "en")), str(data.get("tgt_lang", "de"))


def export_feedback(db: str | Path, out: str | Path, *, model_dirs: Sequence[str | Path] = (),
                    models: Sequence[str] = (), dev_fraction: float = 0.1, seed: int = 1, updates: int = 60,
                    lr_scale: float = 0.1) -> list[ExportSummary]:
    """Export the corrections in ``db`` per model under ``out`` (see the module docstring). ``model_dirs``:
    served model folders, matched to the stored model names by folder name, for the fine-tuning recipes;
    ``models``: export only these names."""
    if not 0.0 <= dev_fraction < 1.0:
        raise DataError(f"dev fraction must be in [0, 1), got {dev_fraction}")
    rows = read_corrections(db)
    dirs = {Path(d).name: Path(d) for d in model_dirs}
    for d in dirs.values():
        if not (d / "config.yaml").is_file():
            raise DataError(f"{d}: not a model folder (no config.yaml)")
    if unknown := sorted(set(models) - {r.model for r in rows}):
        raise DataError(f"{db}: no corrections of model {', '.join(unknown)}")
    summaries = []
    for name in dict.fromkeys(r.model for r in rows if not models or r.model in models):
        mine = [r for r in rows if r.model == name]
        useful = [r for r in mine if clean_text(r.correction)]
        speech = [r for r in useful if r.audio]
        text = [r for r in useful if not r.audio and r.input]
        kind = "speech" if len(speech) >= len(text) else "translation"
        keep = speech if kind == "speech" else text
        folder = Path(out) / name
        (folder / "audio" if kind == "speech" else folder).mkdir(parents=True, exist_ok=True)
        if kind == "speech":
            n_train, n_dev = _export_speech(keep, Path(db).parent, folder, dev_fraction, seed)
        else:
            n_train, n_dev = _export_text(keep, folder, _langs(dirs.get(name)), dev_fraction, seed)
        recipe = None
        if name in dirs and keep:
            recipe = folder / "finetune.yaml"
            cfg = finetune_recipe(dirs[name], folder, kind=kind, updates=updates, lr_scale=lr_scale)
            recipe.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        summaries.append(ExportSummary(name, kind, folder, n_train, n_dev, len(mine) - len(keep), recipe))
    return summaries
