"""End to end through the command line: data -> train -> translate -> evaluate -> average."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import run_cli as run
from testkit import set_config

from transduce.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


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


def test_ensemble_of_a_model_with_itself_translates_like_it_and_vocabularies_must_match(
    trained: Path, capsys, tmp_path: Path
) -> None:
    import shutil

    from transduce.data.tokenizer import Tokenizer, train_sentencepiece

    model = trained / "run" / "model"
    _, alone, _ = run(["translate", "--model", str(model), "a b c", "t s r q"], capsys)
    code, doubled, _ = run(["translate", "--model", str(model), "--ensemble", str(model), "a b c", "t s r q"], capsys)
    assert code == 0 and doubled == alone == "c b a\nq r s t\n"
    other = shutil.copytree(model, tmp_path / "other")
    for spm_file in other.glob("*.model"):  # as many pieces (the weights still load), other pieces
        size = len(Tokenizer(spm_file))
        words = " ".join(f"w{i}" for i in range(size - 4))  # + PAD, UNK, BOS, EOS
        assert len(train_sentencepiece([words] * 3, spm_file, vocab_size=size, model_type="word")) == size
    code, _, err = run(["translate", "--model", str(model), "--ensemble", str(other), "a b c"], capsys)
    assert code == 2 and "vocabulary differs" in err and str(other) in err


def _perturbed_copy(model: Path, out: Path, seed: int) -> Path:
    """A copy of a model folder whose weights carry a little noise: same tokenizers, other scores."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, out)
    gen = torch.Generator().manual_seed(seed)
    state = load_file(str(out / "model.safetensors"))
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in state.items()},
              str(out / "model.safetensors"))
    return out


def test_decode_ensemble_in_the_config_is_searched_by_default(trained: Path, capsys, tmp_path: Path) -> None:
    from transduce.decoding.ensemble import Ensemble
    from transduce.translate import Translator

    main_dir = _perturbed_copy(trained / "run" / "model", tmp_path / "main", seed=1)
    partner = _perturbed_copy(trained / "run" / "model", tmp_path / "partner", seed=2)
    sentence = ["a b c d e"]
    nbest = ["--nbest", "3", *sentence]
    _, alone, _ = run(["translate", "--model", str(main_dir), *nbest], capsys)
    _, explicit, _ = run(["translate", "--model", str(main_dir), "--ensemble", str(partner), *nbest], capsys)
    assert alone != explicit  # the partner changes the scores
    set_config(main_dir, "decode.ensemble", ["../partner"])  # resolved in the model folder, not the working directory
    code, default, _ = run(["translate", "--model", str(main_dir), *nbest], capsys)
    assert code == 0 and default == explicit
    assert run(["translate", "--model", str(main_dir), "--ensemble", "none", *nbest], capsys)[1] == alone
    translator = Translator.load(main_dir)
    assert isinstance(translator.model, Ensemble)
    assert translator.config.decode.ensemble == (str(main_dir / "../partner"),)
    assert not isinstance(Translator.load(main_dir, ensemble=()).model, Ensemble)
    data = trained / "data"
    code, out, _ = run(["evaluate", "--model", str(main_dir), "--src", str(data / "test.src"),
                        "--ref", str(data / "test.tgt"), "--lang", "en"], capsys)
    assert code == 0 and json.loads(out)["ensemble"] == [str(main_dir / "../partner")]
    code, out, _ = run(["info", str(main_dir)], capsys)
    assert code == 0 and "ensembled with ../partner" in out


@pytest.mark.parametrize("field", ["ensemble", "rerank"])
def test_decode_members_that_are_not_model_folders_name_the_field(field: str, trained: Path, capsys,
                                                                   tmp_path: Path) -> None:
    import shutil

    main_dir = shutil.copytree(trained / "run" / "model", tmp_path / "main")
    set_config(main_dir, f"decode.{field}", ["missing"])
    code, _, err = run(["translate", "--model", str(main_dir), "a b c"], capsys)
    assert code == 2 and f"config.yaml: decode.{field}: missing is not a model folder" in err


def test_an_ensemble_member_with_an_ensemble_of_its_own_is_refused(trained: Path, capsys, tmp_path: Path) -> None:
    import shutil

    main_dir = shutil.copytree(trained / "run" / "model", tmp_path / "main")
    partner = shutil.copytree(main_dir, tmp_path / "partner")
    set_config(partner, "decode.ensemble", [str(main_dir)])  # names an ensemble of its own
    set_config(main_dir, "decode.ensemble", [str(partner)])
    code, _, err = run(["translate", "--model", str(main_dir), "a b c"], capsys)
    assert code == 2 and "ensemble of its own" in err and str(partner) in err


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
    half = tmp_path / "half"
    code, out, _ = run(["average", str(trained / "run"), "--last", "2", "--out", str(half), "--dtype", "float16"],
                       capsys)
    assert code == 0 and "(float16)" in out
    sizes = [(folder / "model.safetensors").stat().st_size for folder in (half, tmp_path / "avg")]
    assert 0.45 < sizes[0] / sizes[1] < 0.55
    code, out, _ = run(["translate", "--model", str(half), "a b c"], capsys)
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
    for command in ["data", "train", "translate", "evaluate", "align", "average", "info"]:
        result = subprocess.run([sys.executable, "-m", "transduce", command, "--help"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0 and "usage: transduce" in result.stdout


# ---- attention plots, forced alignment, coverage penalty ------------------------------------------
@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory) -> Path:
    """tiny-reverse-rnn after 2 updates: plots need an RNN model, not a good one."""
    from transduce.data.toy import write_toy

    base = tmp_path_factory.mktemp("rnn")
    data = write_toy(base / "data", task="reverse", train=200, valid=10, test=0)
    assert main(["train", str(ROOT / "recipes" / "tiny-reverse-rnn.yaml"), "--out", str(base / "run"),
                 "--no-progress", "--set", f"data.dir={data}", "--set", "train.max_updates=2",
                 "--set", "train.eval_every=2"]) == 0
    return base / "run"


def _assert_pngs(paths: list[Path]) -> None:
    """Each a real PNG (signature, decodes) of a readable size, not blank."""
    from matplotlib.image import imread
    from PIL import Image

    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300, image.size
        pixels = imread(path)  # (H, W, 4) floats in [0, 1]
        assert pixels[..., :3].std() > 0.05


@pytest.mark.parametrize("kind", ["transformer", "rnn"])
def test_plot_attention_writes_one_png_per_sentence(kind: str, request, capsys, tmp_path: Path) -> None:
    model = request.getfixturevalue("trained") / "run" if kind == "transformer" else request.getfixturevalue("rnn_run")
    choice = ["--attention-layer", "0", "--attention-head", "1"] if kind == "transformer" else []
    capsys.readouterr()
    code, plain, _ = run(["translate", "--model", str(model), "a b c", "d e f g h"], capsys)
    code, out, err = run(["translate", "--model", str(model), "--plot-attention", str(tmp_path / "plots"), *choice,
                          "a b c", "d e f g h"], capsys)
    assert code == 0 and out == plain  # plotting does not change the translations
    assert "2 attention plots written" in err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["0001.png", "0002.png"]
    _assert_pngs(sorted((tmp_path / "plots").iterdir()))


def test_align_prints_log_probs_and_writes_pngs_and_text(trained: Path, capsys, tmp_path: Path) -> None:
    """The forced log-probability of the model's own best output equals the beam's (score x length
    with the recipe's length penalty 1.0); text alignments have one row per target piece and EOS."""
    capsys.readouterr()
    code, out, _ = run(["translate", "--model", str(trained / "run"), "--nbest", "2", "a b c d"], capsys)
    score, best = out.splitlines()[0].split("\t")
    (tmp_path / "src").write_text("a b c d\ne f\n")
    (tmp_path / "tgt").write_text(f"{best}\nf e\n")
    code, out, _ = run(["align", "--model", str(trained / "run"), "--src", str(tmp_path / "src"),
                        "--tgt", str(tmp_path / "tgt"), "--out", str(tmp_path / "al")], capsys)
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["1", "2"]
    assert float(rows[0][1]) == pytest.approx(float(score) * (len(best.split()) + 1), abs=2e-3)
    assert float(rows[1][1]) < 0 and len(rows[1][2].split()) == 3  # f, e, EOS: one link each
    names = sorted(p.name for p in (tmp_path / "al").iterdir())
    assert names == ["0001.png", "0001.txt", "0002.png", "0002.txt"]
    _assert_pngs([tmp_path / "al" / "0001.png", tmp_path / "al" / "0002.png"])
    text = (tmp_path / "al" / "0002.txt").read_text().splitlines()
    assert text[0].startswith("# pair 2\tlog_prob ") and len(text) == 3 + 3  # header, then f, e, EOS
    assert [line.split("\t")[1] for line in text[3:]] == ["\u2581f", "\u2581e", "</s>"]


def test_align_text_only_for_an_rnn(rnn_run: Path, capsys, tmp_path: Path) -> None:
    (tmp_path / "src").write_text("a b\n")
    (tmp_path / "tgt").write_text("b a\n")
    code, out, _ = run(["align", "--model", str(rnn_run), "--src", str(tmp_path / "src"), "--tgt",
                        str(tmp_path / "tgt"), "--out", str(tmp_path / "al"), "--format", "txt"], capsys)
    assert code == 0 and len(out.splitlines()) == 1
    assert [p.name for p in (tmp_path / "al").iterdir()] == ["0001.txt"]


def test_attention_and_penalty_usage_errors(trained: Path, rnn_run: Path, capsys, tmp_path: Path) -> None:
    (tmp_path / "one").write_text("a\n")
    (tmp_path / "two").write_text("a\nb\n")
    cases = [
        (["translate", "--model", str(trained / "run"), "--attention-head", "0", "a"], "give --plot-attention"),
        (["translate", "--model", str(trained / "run"), "--plot-attention", str(tmp_path / "p"),
          "--attention-layer", "2", "a"], "attention layer 2 out of range"),
        (["translate", "--model", str(trained / "run"), "--plot-attention", str(tmp_path / "p"),
          "--attention-head", "4", "a"], "attention head 4 out of range"),
        (["align", "--model", str(rnn_run), "--src", str(tmp_path / "one"), "--tgt", str(tmp_path / "one"),
          "--out", str(tmp_path / "a"), "--attention-head", "0"], "single attention"),
        (["align", "--model", str(rnn_run), "--src", str(tmp_path / "one"), "--tgt", str(tmp_path / "two"),
          "--out", str(tmp_path / "a")], "has 1 lines but"),
        (["translate", "--model", str(trained / "run"), "--coverage-penalty", "-1", "a"], "must be >= 0"),
    ]
    for argv, expected in cases:
        code, _, err = run(argv, capsys)
        assert code == 2 and expected in err, (argv, err)
    assert not (tmp_path / "p").exists() and not (tmp_path / "a").exists()


def test_coverage_penalty_flag(trained: Path, capsys, tmp_path: Path) -> None:
    model = str(trained / "run")
    _, plain, _ = run(["translate", "--model", model, "--nbest", "3", "a b c d", "e f g"], capsys)
    _, zero, _ = run(["translate", "--model", model, "--nbest", "3", "--coverage-penalty", "0", "a b c d", "e f g"],
                     capsys)
    code, penalized, _ = run(["translate", "--model", model, "--nbest", "3", "--coverage-penalty", "0.5",
                              "a b c d", "e f g"], capsys)
    assert zero == plain and code == 0
    assert penalized.splitlines()[0].split("\t")[1] == "d c b a"
    scores = [float(line.split("\t")[0]) for line in penalized.splitlines() if line]
    assert scores != [float(line.split("\t")[0]) for line in plain.splitlines() if line]  # the penalty counts
    (tmp_path / "src").write_text("a b c\n")
    (tmp_path / "ref").write_text("c b a\n")
    code, out, _ = run(["evaluate", "--model", model, "--src", str(tmp_path / "src"), "--ref", str(tmp_path / "ref"),
                        "--lang", "en", "--coverage-penalty", "0.2"], capsys)
    assert code == 0 and json.loads(out)["sentences"] == 1


def test_closed_stdout_ends_quietly() -> None:
    """`transduce ... | head` closes the pipe early: no traceback, the status a shell gives a SIGPIPE'd process."""
    proc = subprocess.Popen([sys.executable, "-m", "transduce", "info", str(ROOT / "models" / "multi30k-en-de")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child has imported torch, so its first print meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err
