"""End to end through the command line: data -> train -> translate -> evaluate -> average."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from transduce.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """tiny-copy trained once for the whole module, through the CLI."""
    base = tmp_path_factory.mktemp("tiny")
    assert main(["data", "toy", "--out", str(base / "data")]) == 0
    code = main(["train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(base / "run"),
                 "--no-progress", "--set", f"data.dir={base / 'data'}"])
    assert code == 0
    return base


def test_trained_model_reverses_test_set(trained: Path, capsys) -> None:
    src = (trained / "data" / "test.src").read_text().splitlines()
    tgt = (trained / "data" / "test.tgt").read_text().splitlines()
    capsys.readouterr()
    code, out, _ = run(["translate", "--model", str(trained / "run"), "--input",
                        str(trained / "data" / "test.src")], capsys)
    assert code == 0
    hyps = out.splitlines()
    assert len(hyps) == len(src)
    exact = sum(h == t for h, t in zip(hyps, tgt, strict=False)) / len(tgt)
    assert exact >= 0.95, f"exact match {exact:.3f}"


def test_translate_keeps_order_and_empty_lines(trained: Path, capsys, monkeypatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("a b c\n\nt s r q\n"))
    code, out, _ = run(["translate", "--model", str(trained / "run"), "--beam", "1"], capsys)
    assert code == 0
    assert out.split("\n")[:3] == ["c b a", "", "q r s t"]


def test_nbest_prints_k_scored_lines(trained: Path, capsys) -> None:
    code, out, _ = run(["translate", "--model", str(trained / "run"), "--nbest", "3", "a b c d"], capsys)
    assert code == 0
    rows = [line.split("\t") for line in out.strip().split("\n")]
    assert len(rows) == 3
    scores = [float(score) for score, _ in rows]
    assert scores == sorted(scores, reverse=True)
    assert rows[0][1] == "d c b a"


def test_evaluate_prints_json_with_bleu(trained: Path, capsys) -> None:
    data = trained / "data"
    code, out, _ = run(["evaluate", "--model", str(trained / "run"), "--src", str(data / "test.src"),
                        "--ref", str(data / "test.tgt"), "--lang", "en"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["bleu"] > 90 and result["bleu_tok_lc"] > 90 and result["chrf"] > 90
    assert "nrefs:1" in result["bleu_signature"]


def test_average_and_info(trained: Path, capsys, tmp_path: Path) -> None:
    code, out, _ = run(["average", str(trained / "run"), "--last", "2", "--out", str(tmp_path / "avg")], capsys)
    assert code == 0 and "averaged 2 checkpoints" in out
    code, out, _ = run(["info", str(tmp_path / "avg")], capsys)
    assert code == 0 and "2+2 layers" in out
    code, out, _ = run(["translate", "--model", str(tmp_path / "avg"), "a b c"], capsys)
    assert code == 0 and out.strip() == "c b a"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.dimm=3", "tiny-copy.yaml: model.dimm: unknown key"),
        ("model.dim=big", "tiny-copy.yaml: model.dim: expected int"),
        ("train.precision=7", "train.precision: expected str"),
        ("train.precision=fp8", "train.precision: 'fp8' is not one of fp32, bf16, fp16"),
        ("optim.schedule=cosine", "optim.schedule: unknown schedule 'cosine'"),
        ("modle.dim=3", "--set modle.dim: unknown section"),
        ("lr", "--set lr: expected section.key=value"),
    ],
)
def test_config_errors_are_one_line_exit_2(override: str, expected: str, capsys, tmp_path: Path) -> None:
    code, _, err = run(["train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(tmp_path),
                        "--set", override], capsys)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_recipe_and_bad_yaml(capsys, tmp_path: Path) -> None:
    code, _, err = run(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "nope.yaml: no such recipe file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  dim: [1\n")
    code, _, err = run(["train", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 2 and "bad.yaml: invalid YAML" in err


def test_data_errors_name_the_file(capsys, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.src").write_text("a b\nc d\n")
    (data / "train.tgt").write_text("b a\n")
    (data / "val.src").write_text("a\n")
    (data / "val.tgt").write_text("a\n")
    code, _, err = run(["train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(tmp_path / "run"),
                        "--set", f"data.dir={data}"], capsys)
    assert code == 2
    assert "train.src has 2 lines but" in err and "train.tgt has 1" in err


def test_missing_model_is_a_user_error(capsys, tmp_path: Path) -> None:
    code, _, err = run(["translate", "--model", str(tmp_path), "x"], capsys)
    assert code == 2 and "no model.safetensors" in err


def test_console_script_help() -> None:
    for command in ["data", "train", "translate", "evaluate", "average", "info"]:
        result = subprocess.run([sys.executable, "-m", "transduce", command, "--help"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0 and "usage: transduce" in result.stdout
