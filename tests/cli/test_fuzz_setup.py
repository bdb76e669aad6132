"""Bad setup never shows a traceback: recipes, ``--set`` overrides, model folders and checkpoints, fuzzed
(the property and the runner: ``fuzzkit.py``; the input data: ``test_fuzz.py``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fuzzkit import EXAMPLES, FUZZ, SPEECH, TRANSLATION, WAV, Run, cli
from hypothesis import given, settings
from hypothesis import strategies as st

# --- recipes and --set overrides ----------------------------------------------------------------------------

SECTIONS = ["task", "data", "model", "optim", "train", "decode"]
SCALAR = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=6))
FIELDS = st.sampled_from(["dim", "lr", "beam", "dir", "max_updates", "vocab_size", "mode", "bogus", "1"])
RECIPE = st.one_of(
    st.text(max_size=60).map(str.encode),
    st.binary(max_size=60),
    st.sampled_from([b"- a\n- b\n", b"42\n", b"a: [\n", b"{1: 2, a: 3}\n", b"x: 2024-13-01\n", b"[" * 1200,
                     b"data: 5\n", b"task: 7\n", b"task: nope\n", b"? [a]\n: 1\n"]),
    st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=4),
                    SCALAR | st.dictionaries(FIELDS, SCALAR | st.lists(SCALAR, max_size=2), max_size=3),
                    max_size=3).map(lambda d: yaml.safe_dump(d).encode()),
)
OVERRIDE = st.one_of(
    st.text(max_size=20),
    st.tuples(st.sampled_from(SECTIONS + ["x", ""]), FIELDS, st.text(max_size=8) | st.sampled_from(["[", "{a", "!!x"]))
    .map(lambda t: f"{t[0]}.{t[1]}={t[2]}"),
)


@settings(FUZZ, max_examples=5 * EXAMPLES)  # cheap: every example stops before training
@given(recipe=RECIPE, overrides=st.lists(OVERRIDE, max_size=2))
def test_train_bad_recipe_or_override_names_the_file_or_key(recipe: bytes, overrides: list[str],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(recipe)
    data_dir = tmp_path / "no-data"  # a valid recipe stops at its data: training never starts here
    sets = [f"--set={text}" for text in (*overrides, f"data.dir={data_dir}")]
    run = cli("train", path, "--out", tmp_path / "run", "--no-progress", *sets)
    assert run.clean(str(path), "--set", str(data_dir)).code == 2, (recipe, overrides, run)


# --- model folders ------------------------------------------------------------------------------------------

def _corrupt(folder: Path, how: str) -> None:
    weights, config = folder / "model.safetensors", folder / "config.yaml"
    if how == "no-weights":
        weights.unlink()
    elif how == "empty-weights":
        weights.write_bytes(b"")
    elif how == "half-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "random-weights":
        weights.write_bytes(os.urandom(4096))
    elif how == "no-config":
        config.unlink()
    elif how == "garbage-config":
        config.write_bytes(b"\xff\xfe: [\n\x00")
    elif how == "list-config":
        config.write_text("- 1\n- 2\n")
    elif how in ("unknown-key", "wrong-type", "wrong-shape"):
        cfg = yaml.safe_load(config.read_text())
        key, value = {"unknown-key": ("bogus", 1), "wrong-type": ("dim", "big"), "wrong-shape": ("dim", 64)}[how]
        cfg["model"][key] = value
        config.write_text(yaml.safe_dump(cfg))
    elif how == "no-spm":
        (folder / "spm.model").unlink()
    elif how == "garbage-spm":
        (folder / "spm.model").write_bytes(os.urandom(300))
    elif how == "garbage-card":
        (folder / "card.json").write_bytes(b"{\xff")


CORRUPTIONS = ["no-weights", "empty-weights", "half-weights", "random-weights", "no-config", "garbage-config",
               "list-config", "unknown-key", "wrong-type", "wrong-shape", "no-spm", "garbage-spm", "garbage-card"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_model_folders_are_named(how: str, tmp_path: Path) -> None:
    (tmp_path / "ok.wav").write_bytes(WAV)
    (tmp_path / "src.txt").write_text("ein Hund\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "ok.wav", "duration": 0.4, "text": "one",
                                                  "speaker": "s"}) + "\n")
    for original in (TRANSLATION, SPEECH):
        model = shutil.copytree(original, tmp_path / original.name, ignore=shutil.ignore_patterns("*.png", "*.gz"))
        _corrupt(model, how)
        use = (["translate", "--model", model, "--beam", "1", "ein Hund"] if original == TRANSLATION
               else ["transcribe", "--model", model, tmp_path / "ok.wav"])
        evaluate = (["--src", tmp_path / "src.txt", "--ref", tmp_path / "src.txt"] if original == TRANSLATION
                    else ["--manifest", tmp_path / "m.jsonl"])
        for argv in (use, ["info", model], ["evaluate", "--model", model, "--beam", "1", *evaluate]):
            run = cli(*argv).clean(str(model))
            if how in ("garbage-card",):
                continue  # the card is for people: whether it is read depends on the command
            assert run.code == 2, run


@FUZZ
@given(config=RECIPE)
def test_any_model_config_yaml_is_named(config: bytes, tmp_path: Path) -> None:
    model = tmp_path / "model"
    if not model.is_dir():  # tmp_path is shared by the examples: copy once
        shutil.copytree(TRANSLATION, model, ignore=shutil.ignore_patterns("*.png"))
    (model / "config.yaml").write_bytes(config)
    for argv in (["info", model], ["translate", "--model", model, "--beam", "1", "ein Hund"]):
        assert cli(*argv).clean(str(model)).code == 2, config


@pytest.mark.parametrize("checkpoint", [b"", b"PK\x03\x04garbage", b"\x80\x02}q\x00."])
def test_average_of_unreadable_checkpoints_names_them(checkpoint: bytes, tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_1.pt").write_bytes(checkpoint)
    run = cli("average", tmp_path / "run", "--out", tmp_path / "avg").clean(str(tmp_path / "run"))
    assert run.code == 2
    assert cli("average", tmp_path / "missing", "--out", tmp_path / "avg").clean("missing").code == 2


def test_output_paths_inside_a_file_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    assert cli("data", "toy", "--out", out).clean(str(out)).code == 2
    run = cli("translate", "--model", TRANSLATION, "--beam", "1", "--plot-attention", out, "ein Hund")
    assert run.clean(str(out)).code == 2


# --- real processes -----------------------------------------------------------------------------------------

def test_real_exit_codes_and_stderr(tmp_path: Path) -> None:
    """The cases that printed tracebacks before, as a user runs them (C locale stdin, so bytes pass through)."""
    (tmp_path / "ok.wav").write_bytes(WAV)
    env = {**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": ""}
    runs = {
        "stdin": (["translate", "--model", str(TRANSLATION)], b"ein Hund\n\xff\xfe\n", "<stdin>:2: invalid UTF-8"),
        "stream": (["transcribe", "--model", str(SPEECH), "--stream", str(tmp_path / "ok.wav")], b"", "stream"),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "transduce", *argv], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
             for name, (argv, _, _) in runs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(runs[name][1], timeout=120)
        Run(runs[name][0], proc.returncode, out.decode(), err.decode()).clean(runs[name][2])
        assert proc.returncode == 2, (name, err)
