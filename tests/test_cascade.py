"""The cascade (speech recognition, then translation) and the truecaser between them, through the library and
the CLI, against the two models run one after the other in the test; manifest and usage errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from testkit import run_cli, set_config

from transduce.cascade import Cascade, Truecaser
from transduce.data.captions import normalize_text
from transduce.metrics.bleu import sacre_scores
from transduce.recognize import Recognizer
from transduce.translate import Translator

REPO = Path(__file__).resolve().parents[1]
ASR, MT = REPO / "models" / "captions-conformer-ctc", REPO / "models" / "multi30k-en-de"
CLIPS = [REPO / "examples" / "captions" / f"dev-0000{i}.wav" for i in (3, 4, 7)]
GERMAN = ["Ein Junge mit Kopfhörern sitzt auf den Schultern einer Frau.",
          "Zwei Männer bauen auf einem zugefrorenen See eine blaue Eisfischerhütte auf.",
          "Ein brauner Hund rennt dem schwarzen Hund hinterher."]
CORPUS = ["A man in a t-shirt walks in New York.", "Two men in T-shirts.", "A girl in a t-shirt and a hat.",
          "A woman in New York sings.", "A dog runs", "The man in the blue t-shirt.", "New York at night.",
          "A t shirt.", "Two women, one in a hat, and a dog.", "Women, one of them old.", "A hat, and a dog."]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def asr(tmp_path_factory) -> Path:
    """The bundled captions model with a greedy search and no LM: the cascade, not the search, is under test."""
    folder = tmp_path_factory.mktemp("asr")
    for name in ("config.yaml", "model.safetensors", "spm.model", "card.json"):
        shutil.copy(ASR / name, folder / name)
    set_config(folder, "decode.beam", 1)
    set_config(folder, "decode.lm", "")
    set_config(folder, "decode.lm_weight", 0.0)
    return folder


@pytest.fixture(scope="module")
def models(asr: Path) -> tuple[Recognizer, Translator]:
    return Recognizer.load(asr), Translator.load(MT)


def _manifest(tmp_path: Path, rows: list[dict] | None = None) -> Path:
    shutil.copy(CLIPS[0], tmp_path / "a.wav")
    shutil.copy(CLIPS[1], tmp_path / "b.wav")
    rows = rows if rows is not None else [
        {"id": "b", "audio": "b.wav", "translation": {"de": GERMAN[1], "fr": "Deux hommes."}},
        {"id": "a", "audio": "a.wav", "translation": {"de": GERMAN[0]}}]
    lines = [json.dumps({"duration": 3.0, "text": "x", "speaker": "s", **row}, ensure_ascii=False) for row in rows]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


def test_truecaser_learns_casing_compounds_and_final_punctuation(tmp_path: Path) -> None:
    tc = Truecaser.learn(CORPUS)
    assert tc.final == "."  # 9 of 11 sentences end with a period
    assert tc.forms["women one"] == "women, one" and tc.forms["hat and"] == "hat, and"  # commas between words
    assert not any(form.endswith(",") for form in tc.forms.values())  # ... never after a span's last word
    assert tc.forms["t shirt"] == "t-shirt"  # 4 hyphenated against 1 spaced
    assert tc.forms["new"] == "New" and tc.forms["york"] == "York" and "new york" not in tc.forms  # no redundant span
    assert "a" not in tc.forms and "man" not in tc.forms  # first words do not vote for a capital
    assert tc("a woman in a t shirt in new york") == "A woman in a t-shirt in New York."
    assert tc("") == ""
    tc.save(tmp_path / "tc.json")
    assert Truecaser.from_text(tmp_path / "tc.json") == tc
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json: not a truecaser"):
        Truecaser.from_text(tmp_path / "bad.json")
    assert Truecaser.learn(["no final punctuation", "here either", "but here."]).final == ""
    for line in CORPUS:  # restoring a corpus sentence's normalized form keeps its words' normalized identity
        assert normalize_text(tc(normalize_text(line))) == normalize_text(line)


def test_cascade_equals_the_translator_on_the_recognizers_output(models) -> None:
    recognizer, translator = models
    transcripts = recognizer.transcribe(CLIPS)
    assert all(transcripts)
    cascade = Cascade(recognizer, translator)
    assert cascade.translate(CLIPS) == translator.translate(transcripts)
    tc = Truecaser.learn(CORPUS)
    restored = Cascade(recognizer, translator, truecaser=tc)
    assert restored.transcribe(CLIPS) == [tc(t) for t in transcripts]
    assert restored.translate(CLIPS, beam=2) == translator.translate([tc(t) for t in transcripts], beam=2)
    nbest = restored.translate_nbest(CLIPS[:1], 2)
    assert nbest == translator.translate_nbest([tc(transcripts[0])], 2)


def test_cli_translates_a_manifest_in_order_and_audio_files(models, asr: Path, tmp_path: Path, capsys) -> None:
    recognizer, translator = models
    manifest = _manifest(tmp_path)
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    code, out, _ = run_cli(["translate", "--model", str(MT), "--asr", str(asr), "--manifest", str(manifest),
                            "--truecase", str(tmp_path / "corpus.txt")], capsys)
    tc = Truecaser.learn(CORPUS)
    expected = translator.translate([tc(t) for t in recognizer.transcribe([tmp_path / "b.wav", tmp_path / "a.wav"])])
    assert code == 0 and [json.loads(line) for line in out.splitlines()] == [
        {"id": "b", "text": expected[0]}, {"id": "a", "text": expected[1]}]
    files = [str(c) for c in CLIPS[:2]]
    code, out, _ = run_cli(["translate", "--model", str(MT), "--asr", str(asr), "--truecase", "none", *files], capsys)
    expected = translator.translate(recognizer.transcribe(files))
    assert code == 0 and out.splitlines() == [f"{f}\t{t}" for f, t in zip(files, expected, strict=True)]
    code, out, _ = run_cli(["translate", "--model", str(MT), "--asr", str(asr), *files], capsys)  # the MT's own
    bundled = Truecaser.from_text(MT / "truecase.json")
    expected = translator.translate([bundled(t) for t in recognizer.transcribe(files)])
    assert code == 0 and out.splitlines() == [f"{f}\t{t}" for f, t in zip(files, expected, strict=True)]


def test_cli_evaluate_scores_the_cascade_against_the_manifest(models, asr: Path, tmp_path: Path, capsys) -> None:
    recognizer, translator = models
    manifest = _manifest(tmp_path)
    code, out, _ = run_cli(["evaluate", "--model", str(MT), "--asr", str(asr), "--manifest", str(manifest),
                            "--tgt-lang", "de", "--json", "--output", str(tmp_path / "hyps.txt")], capsys)
    assert code == 0
    result = json.loads(out)
    bundled = Truecaser.from_text(MT / "truecase.json")  # the translation model's own truecaser, by default
    hyps = translator.translate([bundled(t) for t in recognizer.transcribe([tmp_path / "b.wav", tmp_path / "a.wav"])])
    assert (tmp_path / "hyps.txt").read_text().splitlines() == hyps
    reference = sacre_scores(hyps, [GERMAN[1], GERMAN[0]])
    assert result["bleu"] == reference["bleu"] and result["chrf"] == reference["chrf"]
    assert result["utterances"] == 2 and result["tgt_lang"] == "de" and 0 < result["rtf"] < 5
    assert 0 <= result["bleu_tok_lc"] <= 100


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--tgt-lang", "fr", "--manifest", "{m}"], "--tgt-lang fr: .* translates into de"),
    (["evaluate", "--tgt-lang", "de", "--manifest", "{bad}"],
     r"bad\.jsonl:2: no 'de' translation \(this line has: fr\)"),
    (["translate", "--manifest", "{m}", "{m}"], "audio files given as arguments or the utterances of --manifest"),
    (["translate", "--nbest", "2", "--manifest", "{m}"], "leave out --nbest"),
])
def test_cli_errors_are_one_line(asr: Path, tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    manifest = _manifest(tmp_path)
    (tmp_path / "sub").mkdir()
    bad = _manifest(tmp_path / "sub", [{"id": "a", "audio": "a.wav", "translation": {"de": "Hallo."}},
                                       {"id": "b", "audio": "b.wav", "translation": {"fr": "Salut."}}])
    bad = bad.rename(bad.with_name("bad.jsonl"))
    args = [a.format(m=manifest, bad=bad) for a in argv]
    code, _, err = run_cli([args[0], "--model", str(MT), "--asr", str(asr), *args[1:]], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_cascade_options_need_asr(tmp_path: Path, capsys) -> None:
    manifest = _manifest(tmp_path)
    code, _, err = run_cli(["translate", "--model", str(MT), "--manifest", str(manifest)], capsys)
    assert code != 0 and "--manifest goes with --asr DIR" in err
    code, _, err = run_cli(["evaluate", "--model", str(MT), "--manifest", str(manifest), "--tgt-lang", "de"], capsys)
    assert code != 0 and "--tgt-lang goes with --asr DIR" in err


def _cascade_folder(asr: Path, tmp_path: Path) -> Path:
    """A bundled cascade like models/multi30k-st: cascade.json naming its two model folders."""
    folder = tmp_path / "st"
    shutil.copytree(asr, folder / "speech")
    shutil.copytree(MT, folder / "text")
    (folder / "cascade.json").write_text(json.dumps({"asr": "speech", "mt": "text"}))
    return folder


def test_a_cascade_folder_is_one_model_for_the_cli_and_the_library(models, asr: Path, tmp_path: Path,
                                                                    capsys) -> None:
    from transduce.tasks import load

    recognizer, translator = models
    folder = _cascade_folder(asr, tmp_path)
    bundled = Truecaser.from_text(MT / "truecase.json")
    files = [str(c) for c in CLIPS[:2]]
    expected = translator.translate([bundled(t) for t in recognizer.transcribe(files)])
    cascade = load(folder)
    assert isinstance(cascade, Cascade) and cascade.langs == ("de",)
    assert cascade.translate(files, "de") == expected
    with pytest.raises(ValueError, match="translates into de, not 'fr'"):
        cascade.translate(files, "fr")
    code, out, _ = run_cli(["translate", "--model", str(folder), *files], capsys)
    assert code == 0 and out.splitlines() == [f"{f}\t{t}" for f, t in zip(files, expected, strict=True)]
    code, out, _ = run_cli(["evaluate", "--model", str(folder), "--manifest", str(_manifest(tmp_path)), "--json"],
                           capsys)
    assert code == 0 and json.loads(out)["tgt_lang"] == "de"
    code, out, _ = run_cli(["info", str(folder)], capsys)
    assert code == 0 and "speech translation cascade" in out and "translation model" in out
    code, _, err = run_cli(["translate", "--model", str(folder), "--tgt-lang", "fr", *files], capsys)
    assert code != 0 and err.strip().endswith(f"--tgt-lang fr: {folder / 'text'} translates into de")
    code, out, _ = run_cli(["transcribe", "--model", str(folder), *files], capsys)  # its recognizer's transcripts
    assert code == 0 and out.splitlines() == [f"{f}\t{t}" for f, t in
                                              zip(files, recognizer.transcribe(files), strict=True)]


@pytest.mark.parametrize("content, message", [
    ("not json", r"cascade\.json: not JSON"),
    ('{"asr": "speech"}', r"cascade\.json: key 'mt' must name a model folder"),
    ('{"asr": "speech", "mt": "gone"}', r"cascade\.json: mt folder .*gone does not exist"),
])
def test_a_broken_cascade_folder_is_a_one_line_error(asr: Path, tmp_path: Path, capsys, content: str,
                                                     message: str) -> None:
    folder = _cascade_folder(asr, tmp_path)
    (folder / "cascade.json").write_text(content)
    code, _, err = run_cli(["translate", "--model", str(folder), str(CLIPS[0])], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
