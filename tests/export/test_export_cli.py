"""``transduce export`` end to end on the bundled models, exported folders through translate/evaluate, and the
PyTorch int8 path (``--quantize int8``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from testkit import ROOT, run_cli

from transduce.data.batching import pad
from transduce.data.tokenizer import BOS, EOS
from transduce.tasks import load as load_any
from transduce.translate import Translator

MODEL = ROOT / "models" / "multi30k-en-de"
CTC = ROOT / "models" / "digits-conformer-ctc"
DATA = ROOT.parent / "shared" / "data" / "multi30k"
SENTENCES = ["A man rides a bike down the street.", "Two dogs play in the snow.", "A girl.",
             "A woman in a red coat is walking past a shop window with her little son."]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from transduce.cli.main import main

    out = tmp_path_factory.mktemp("export") / "ct2"
    assert main(["export", "--model", str(MODEL), "--format", "ctranslate2", "--out", str(out)]) == 0
    return out


def test_export_then_translate_like_the_source(exported: Path, capsys) -> None:
    assert (exported / "README.md").is_file() and (exported / "export.yaml").is_file()
    assert (exported / "truecase.json").read_bytes() == (MODEL / "truecase.json").read_bytes()  # for cascades
    code, ours, _ = run_cli(["translate", "--model", str(MODEL), *SENTENCES], capsys)
    assert code == 0
    code, theirs, err = run_cli(["translate", "--model", str(exported), *SENTENCES], capsys)
    assert code == 0, err
    assert theirs == ours and len(theirs.splitlines()) == len(SENTENCES)
    code, nbest, _ = run_cli(["translate", "--model", str(exported), "--nbest", "3", SENTENCES[0]], capsys)
    code_ours, nbest_ours, _ = run_cli(["translate", "--model", str(MODEL), "--nbest", "3", SENTENCES[0]], capsys)
    assert code == code_ours == 0
    assert nbest.splitlines()[0].split("\t")[1] == nbest_ours.splitlines()[0].split("\t")[1]
    assert float(nbest.splitlines()[0].split("\t")[0]) == pytest.approx(float(nbest_ours.split("\t")[0]), abs=1e-3)


def test_evaluate_and_python_api_take_the_export(exported: Path, tmp_path: Path, capsys) -> None:
    src, ref = tmp_path / "src.en", tmp_path / "ref.de"
    src.write_text("".join(s + "\n" for s in SENTENCES))
    ref.write_text("Ein Mann fährt mit dem Fahrrad die Straße hinunter.\nZwei Hunde spielen im Schnee.\n"
                   "Ein Mädchen.\nEine Frau in einem roten Mantel geht mit ihrem kleinen Sohn an einem Schaufenster "
                   "vorbei.\n")
    scores = []
    for model in (MODEL, exported):
        code, out, err = run_cli(["evaluate", "--model", str(model), "--src", str(src), "--ref", str(ref)], capsys)
        assert code == 0, err
        scores.append(json.loads(out)["bleu"])
    assert scores[0] == scores[1]
    translator = load_any(exported)
    assert isinstance(translator, Translator) and translator.model.runtime == "ctranslate2"
    assert translator.translate(SENTENCES[:2]) == Translator.load(MODEL).translate(SENTENCES[:2])


def test_ctc_model_to_ctranslate2_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["export", "--model", str(CTC), "--format", "ctranslate2", "--out", str(tmp_path / "x")],
                           capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "a ctc model cannot be exported to ctranslate2" in err and str(CTC) in err
    assert not (tmp_path / "x").exists()


def test_bad_export_arguments_are_one_line_errors(exported: Path, tmp_path: Path, capsys) -> None:
    for argv in (["--format", "ctranslate2", "--out", str(exported)],  # not empty
                 ["--format", "tflite", "--out", str(tmp_path / "y")],
                 ["--format", "ctranslate2", "--out", str(tmp_path / "z"), "--quantize", "int4"]):
        if "int4" in argv:  # argparse's choices: usage and one error line, exit status 2
            with pytest.raises(SystemExit) as stop:
                run_cli(["export", "--model", str(MODEL), *argv], capsys)
            assert stop.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err
            continue
        code, _, err = run_cli(["export", "--model", str(MODEL), *argv], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_missing_file_in_export_is_a_one_line_cli_error(exported: Path, tmp_path: Path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "spm.model").unlink()
    code, _, err = run_cli(["translate", "--model", str(broken), "A dog."], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "spm.model" in err and str(broken) in err


def _teacher_forced(model: torch.nn.Module, src: list[list[int]], tgt: list[list[int]]) -> torch.Tensor:
    """Summed log-probability of each target (EOS included) given its source."""
    lens = torch.tensor([len(s) + 1 for s in src])
    logits = model(pad([s + [EOS] for s in src]), lens, pad([[BOS, *t] for t in tgt]))  # (B, T, V)
    gold = pad([[*t, EOS] for t in tgt])  # (B, T), PAD 0 where shorter
    token_lp = logits.log_softmax(-1).gather(2, gold[:, :, None])[:, :, 0]  # (B, T)
    return token_lp.masked_fill(gold == 0, 0.0).sum(1)


def test_pytorch_int8_is_close_to_float32(capsys) -> None:
    """quantize_dynamic: every Linear is int8, teacher-forced log-probabilities of the float32 translations stay
    within a few hundredths per sentence, and the translations are (nearly all) the same."""
    fp32, int8 = Translator.load(MODEL), Translator.load(MODEL, quantize="int8")
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    assert sum(isinstance(m, quantized) for m in int8.model.modules()) > 20
    lines = [line.strip() for line in gzip.open(DATA / "val.en.gz", "rt")][:40] if DATA.is_dir() else SENTENCES
    outputs = fp32.translate(lines, beam=1)
    src, tgt = fp32.tokenizers.src.encode(lines), fp32.tokenizers.tgt.encode(outputs)
    with torch.inference_mode():
        gap = (_teacher_forced(fp32.model, src, tgt) - _teacher_forced(int8.model, src, tgt)).abs()
    lengths = torch.tensor([len(t) + 1 for t in tgt])
    assert float((gap / lengths).max()) < 0.05, gap / lengths
    same = sum(a == b for a, b in zip(outputs, int8.translate(lines, beam=1), strict=True))
    assert same >= 0.8 * len(lines)
    code, out, err = run_cli(["translate", "--model", str(MODEL), "--quantize", "int8", SENTENCES[1]], capsys)
    assert code == 0 and out.strip(), err


def test_settings_ctranslate2_cannot_follow_are_one_line_cli_errors(exported: Path, capsys) -> None:
    cases = {"--coverage-penalty=0.3": "decode.coverage_penalty", "--plot-attention=plots": "has no PyTorch model",
             "--quantize=int8": "decodes alone"}
    for option, message in cases.items():
        code, _, err = run_cli(["translate", "--model", str(exported), option, "A dog."], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
