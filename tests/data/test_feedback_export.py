"""``transduce data feedback``: stored corrections -> a speech manifest or parallel text + a fine-tuning recipe
that ``transduce train`` runs from the served model."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from testkit import ROOT, run_cli, train_tiny_copy

from transduce.data.feedback import FeedbackStore, export_feedback, read_corrections
from transduce.data.manifest import read_manifest
from transduce.models.folder import ModelFolder
from transduce.tasks import parse_config

DIGITS = ROOT / "models" / "digits-hybrid-streaming"
EN_DE = ROOT / "models" / "multi30k-en-de"


def _speech_store(data_dir: Path, n: int) -> tuple[FeedbackStore, list[np.ndarray]]:
    store = FeedbackStore(data_dir)
    rng = np.random.default_rng(1)
    waves = [(rng.standard_normal(1600 * (i + 1)) * 0.1).astype(np.float32) for i in range(n)]
    for i, wave in enumerate(waves):
        audio, seconds = store.save_audio(wave, 16000)
        store.add(model="digits-hybrid-streaming", request_id=f"r{i}", output="one two",
                  correction=f"  three   {i} ", audio=audio, duration=seconds)
    store.add(model="digits-hybrid-streaming", request_id="no-audio", output="one", correction="two")
    store.add(model="digits-hybrid-streaming", request_id="empty", output="one two", correction="  ",
              audio=store.save_audio(waves[0], 16000)[0], duration=0.1)
    return store, waves


def test_speech_corrections_become_a_manifest_with_the_kept_audio(tmp_path: Path) -> None:
    store, waves = _speech_store(tmp_path / "served", 10)
    store.add(model="digits-hybrid-streaming", request_id="ok", output="one two", correction="one two",
              audio=store.save_audio(waves[3], 16000)[0], duration=len(waves[3]) / 16000)  # a confirmation
    [summary] = export_feedback(tmp_path / "served" / "feedback.sqlite", tmp_path / "out", model_dirs=[DIGITS])
    assert (summary.kind, summary.train, summary.dev, summary.skipped) == ("speech", 10, 1, 2)
    folder = tmp_path / "out" / "digits-hybrid-streaming"
    utts = read_manifest(folder / "train.jsonl", check_audio=True) + read_manifest(folder / "dev.jsonl")
    assert sorted(u.text for u in utts) == sorted([f"three {i}" for i in range(10)] + ["one two"])
    for u in utts:  # the audio is the kept audio, sample for sample (16-bit)
        i = int(u.text.split()[1]) if u.text.startswith("three") else 3
        data, rate = sf.read(u.audio, dtype="float32")
        assert rate == 16000 and u.duration == len(waves[i]) / 16000
        np.testing.assert_allclose(data, np.clip(waves[i], -1, 1), atol=1 / 32767)
    cfg = parse_config(yaml.safe_load((folder / "finetune.yaml").read_text()))
    source = ModelFolder.read(DIGITS).config
    assert cfg.train.init_from == str(DIGITS.resolve()) and cfg.train.max_updates == 60
    assert cfg.data.dir == str(folder.resolve()) and (cfg.data.train, cfg.data.valid) == ("train.jsonl", "dev.jsonl")
    assert cfg.optim.lr == source["optim"]["lr"] * 0.1
    assert cfg.model == parse_config(source).model  # the served architecture, so the weights load
    store.close()


def test_translation_corrections_fine_tune_the_served_model_in_one_command(tmp_path: Path, capsys) -> None:
    base = train_tiny_copy(tmp_path / "tiny", "train.max_updates=4", "train.eval_every=4")
    served = base / "run" / "model"
    store = FeedbackStore(tmp_path / "served")
    pairs = [("a b c", "c b a"), ("d e", "e d"), ("f g h i", "i h g f"), ("j k", "k j")]
    for src, tgt in pairs:
        store.add(model="model", input=src, output=src, correction=tgt)
    db = tmp_path / "served" / "feedback.sqlite"
    code, out, err = run_cli(["data", "feedback", "--db", str(db), "--out", str(tmp_path / "fb"),
                              "--model-dir", str(served), "--updates", "3"], capsys)
    assert code == 0, err
    folder = tmp_path / "fb" / "model"
    assert f"fine-tune: transduce train {folder / 'finetune.yaml'}" in out
    train = list(zip((folder / "train.src").read_text().splitlines(), (folder / "train.tgt").read_text().splitlines(),
                     strict=True))
    val = list(zip((folder / "val.src").read_text().splitlines(), (folder / "val.tgt").read_text().splitlines(),
                   strict=True))
    assert sorted(train + val) == sorted(pairs) and len(val) == 1
    code, out, err = run_cli(["train", str(folder / "finetune.yaml"), "--out", str(tmp_path / "ft"), "--no-progress"],
                             capsys)
    assert code == 0, err
    assert "initialized" in out + err and (tmp_path / "ft" / "model" / "model.safetensors").is_file()
    tuned = ModelFolder.read(tmp_path / "ft" / "model")
    assert tuned.config["train"]["init_from"] == str(served.resolve())
    assert (tmp_path / "ft" / "model" / "spm.model").read_bytes() == (served / "spm.model").read_bytes()


def test_translation_languages_come_from_the_model_folder(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.add(model="multi30k-en-de", input="A dog runs.", output="Ein Hund rennt", correction="Ein Hund läuft.")
    store.add(model="multi30k-en-de", request_id="x", output="Hallo", correction="Hallo")  # speech-less, no input
    [summary] = export_feedback(tmp_path / "feedback.sqlite", tmp_path / "out", model_dirs=[EN_DE])
    folder = tmp_path / "out" / "multi30k-en-de"
    assert (summary.kind, summary.train, summary.dev, summary.skipped) == ("translation", 1, 0, 1)
    assert (folder / "train.en").read_text() == "A dog runs.\n" == (folder / "val.en").read_text()
    assert (folder / "train.de").read_text() == "Ein Hund läuft.\n"
    cfg = yaml.safe_load((folder / "finetune.yaml").read_text())
    assert cfg["decode"]["rerank"] == [] and cfg["decode"]["ensemble"] == []
    parse_config(cfg)


def test_export_picks_models(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path)
    store.add(model="a", input="x", output="y", correction="z")
    store.add(model="b", input="x", output="y", correction="w")
    assert [s.model for s in export_feedback(tmp_path / "feedback.sqlite", tmp_path / "out", models=["b"])] == ["b"]
    assert not (tmp_path / "out" / "a").exists()
    assert [c.correction for c in read_corrections(tmp_path / "feedback.sqlite")] == ["z", "w"]


def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none.sqlite"
    code, _, err = run_cli(["data", "feedback", "--db", str(missing), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and str(missing) in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    code, _, err = run_cli(["data", "feedback", "--db", str(other), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a transduce feedback database" in err and len(err.strip().splitlines()) == 1
    FeedbackStore(tmp_path / "s").add(model="a", input="x", output="y", correction="z")
    code, _, err = run_cli(["data", "feedback", "--db", str(tmp_path / "s" / "feedback.sqlite"), "--out",
                            str(tmp_path / "o"), "--model", "nope"], capsys)
    assert code == 2 and "no corrections of model nope" in err
    code, _, err = run_cli(["data", "feedback", "--db", str(tmp_path / "s" / "feedback.sqlite"), "--out",
                            str(tmp_path / "o"), "--model-dir", str(tmp_path)], capsys)
    assert code == 2 and "not a model folder" in err
