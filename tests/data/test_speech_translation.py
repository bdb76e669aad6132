"""Speech translation data: the Multi30k recipe (a tiny real TTS run), manifest errors, MuST-C and CoVoST imports
on tiny folders written here."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from testkit import run_cli

from transduce.data.captions import RESERVED_VOICES, normalize_text
from transduce.data.speech_translation import parse_langs, prepare_speech_translation, read_st_manifest
from transduce.data.st_import import import_covost, import_mustc, import_st
from transduce.data.text import DataError

EN = {"train": ["A man's bike is red.", "Two men play chess.", "A woman sings.", "A cat sleeps.", "A boy jumps."],
      "val": ["A dog runs on the beach.", "A girl in a red coat.", "People wait for a bus."]}
DE = {"train": ["Das Fahrrad ist rot.", "Zwei Männer spielen Schach.", "Eine Frau singt.", "Eine Katze schläft.",
                "Ein Junge springt."],
      "val": ["Ein Hund rennt am Strand.", "Ein Mädchen in einem roten Mantel.", "Leute warten auf einen Bus."]}
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _write(folder: Path, name: str, lines: list[str]) -> None:
    with gzip.open(folder / name, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture
def m30k(tmp_path: Path) -> Path:
    folder = tmp_path / "m30k"
    folder.mkdir()
    for split in ("train", "val"):
        _write(folder, f"{split}.en.gz", EN[split])
        _write(folder, f"{split}.de.gz", DE[split])
        _write(folder, f"{split}.fr.gz", [f"fr {i} {s}" for i, s in enumerate(EN[split])])
    return folder


@needs_espeak
def test_recipe_pairs_each_utterance_with_its_rows_translations(m30k: Path, tmp_path: Path) -> None:
    out = tmp_path / "st"
    prepare_speech_translation(out, source=m30k, langs=("de", "fr"), train_sentences=3, dev_sentences=2,
                               train_voices=("espeak:en-us",), dev_voices=("espeak:en-gb-x-rp+f4",),
                               log=lambda _: None)
    for split, source in (("train", "train"), ("dev", "val")):
        utts = read_st_manifest(out / f"{split}.jsonl", ["de", "fr"], check_audio=True)
        assert len(utts) == (3 if split == "train" else 2)
        for st in utts:
            row = EN[source].index(st.text_original)  # the original sentence, cased and punctuated
            assert st.utt.text == normalize_text(EN[source][row])  # what the voice says
            assert st.translation == {"de": DE[source][row], "fr": f"fr {row} {EN[source][row]}"}
            assert st.utt.speaker not in RESERVED_VOICES and sf.info(str(st.utt.audio)).duration > 0.3
    lines = [json.loads(line) for line in (out / "dev.jsonl").read_text().splitlines()]
    assert all(not Path(obj["audio"]).is_absolute() for obj in lines)  # relative to the manifest
    assert [obj["speaker"] for obj in lines] == ["espeak:en-gb-x-rp+f4"] * 2


def test_recipe_refuses_a_missing_language_and_reserved_voices(m30k: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no train\.cs\[\.gz\]"):
        prepare_speech_translation(tmp_path / "o", source=m30k, langs=("de", "cs"), log=lambda _: None)
    with pytest.raises(ValueError, match="RESERVED"):
        prepare_speech_translation(tmp_path / "o", source=m30k, langs=("de",), train_voices=("flite:awb",),
                                   log=lambda _: None)
    with pytest.raises(ValueError, match="named twice"):
        parse_langs("de,fr,de")
    assert parse_langs("de, cs") == ("de", "cs")


def _manifest(path: Path, rows: list[dict]) -> Path:
    wav = path.parent / "a.wav"
    sf.write(str(wav), np.zeros(1600, dtype=np.float32), 16000)
    base = {"audio": "a.wav", "duration": 0.1, "text": "a dog", "speaker": "s"}
    path.write_text("".join(json.dumps({"id": f"u{i}", **base, **row}) + "\n" for i, row in enumerate(rows)))
    return path


@pytest.mark.parametrize("rows, message", [
    ([{"translation": {"de": "Ein Hund."}}, {"translation": {"fr": "Un chien."}}],
     r"m\.jsonl:2: no 'de' translation \(this line has: fr\)"),
    ([{}], r"m\.jsonl:1: missing key 'translation'"),
    ([{"translation": {"de": ""}}], r"m\.jsonl:1: the 'de' translation must be a non-empty string"),
    ([{"translation": {"de": "x"}, "text_original": 3}], r"m\.jsonl:1: key 'text_original' has type int"),
])
def test_manifest_errors_name_file_and_line(tmp_path: Path, rows: list[dict], message: str) -> None:
    path = _manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError, match=message):
        read_st_manifest(path, ["de"])


def test_manifest_reads_requested_languages_only(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "m.jsonl", [{"translation": {"de": "Ein Hund.", "cs": "Pes."}}])
    [st] = read_st_manifest(path, ["cs"])
    assert st.translation == {"cs": "Pes."} and st.utt.audio == tmp_path / "a.wav" and st.text_original == ""


def _mustc(root: Path, split: str = "tst") -> tuple[Path, dict[str, np.ndarray]]:
    """Two talks (8 kHz and 16 kHz ramps: every sample is distinct), three segments, in YAML order."""
    folder = root / split
    (folder / "wav").mkdir(parents=True)
    (folder / "txt").mkdir()
    waves = {"ted_1": np.linspace(-0.5, 0.5, 16000, dtype=np.float32),
             "ted_2": np.linspace(0.5, -0.5, 8000, dtype=np.float32)}
    sf.write(str(folder / "wav" / "ted_1.wav"), waves["ted_1"], 16000, subtype="FLOAT")
    sf.write(str(folder / "wav" / "ted_2.wav"), waves["ted_2"], 8000, subtype="FLOAT")
    segs = ("- {duration: 0.25, offset: 0.5, speaker_id: spk.1, wav: ted_1.wav}\n"
            "- {duration: 0.5, offset: 0.25, speaker_id: spk.2, wav: ted_2.wav}\n"
            "- {duration: 0.125, offset: 0.0, speaker_id: spk.1, wav: ted_1.wav}\n")
    (folder / "txt" / f"{split}.yaml").write_text(segs)
    (folder / "txt" / f"{split}.en").write_text("Hello there.\nSecond talk.\nFirst words.\n")
    (folder / "txt" / f"{split}.de").write_text("Hallo.\nZweiter Vortrag.\nErste Worte.\n")
    return folder, waves


def test_mustc_import_cuts_the_segments_exactly(tmp_path: Path) -> None:
    folder, waves = _mustc(tmp_path / "data")
    utts = import_mustc(folder, tmp_path / "out", tgt_lang="de")
    assert [u.utt.id for u in utts] == ["ted_1_0", "ted_2_0", "ted_1_1"]  # YAML order, numbered per talk
    assert [u.utt.speaker for u in utts] == ["spk.1", "spk.2", "spk.1"]
    assert [u.translation["de"] for u in utts] == ["Hallo.", "Zweiter Vortrag.", "Erste Worte."]
    expected = [waves["ted_1"][8000:12000], waves["ted_2"][2000:6000], waves["ted_1"][0:2000]]
    for st, reference in zip(utts, expected, strict=True):
        data, rate = sf.read(str(st.utt.audio), dtype="float32")
        assert st.utt.duration == pytest.approx(len(reference) / rate)
        np.testing.assert_allclose(data, reference, atol=1 / 32768)  # 16-bit PCM of the same samples
    again = read_st_manifest(tmp_path / "out" / "tst.jsonl", ["de"], check_audio=True)
    assert [(a.utt.id, a.utt.text) for a in again] == [(u.utt.id, u.utt.text) for u in utts]


def test_mustc_errors(tmp_path: Path) -> None:
    folder, _ = _mustc(tmp_path / "data")
    (folder / "txt" / "tst.de").write_text("Hallo.\n")
    with pytest.raises(DataError, match=r"tst\.de has 1 lines but .*tst\.yaml has 3 segments"):
        import_mustc(folder, tmp_path / "out", tgt_lang="de")
    (folder / "txt" / "tst.de").write_text("a\nb\nc\n")
    (folder / "txt" / "tst.yaml").write_text("- {duration: 2.0, offset: 0.5, wav: ted_1.wav}\n")
    (folder / "txt" / "tst.en").write_text("a\n")
    (folder / "txt" / "tst.de").write_text("a\n")
    with pytest.raises(DataError, match=r"segment ted_1_0 ends at 2\.50 s but .*ted_1\.wav lasts 1\.00 s"):
        import_mustc(folder, tmp_path / "out", tgt_lang="de")
    (folder / "txt" / "tst.yaml").write_text("- {offset: 0.5, wav: ted_1.wav}\n")
    with pytest.raises(DataError, match=r"tst\.yaml: segment 1: key 'duration' is missing"):
        import_mustc(folder, tmp_path / "out", tgt_lang="de")
    with pytest.raises(DataError, match=r"txt/test_mustc_errors0\.yaml: no such file \(a MuST-C split folder"):
        import_mustc(tmp_path, tmp_path / "out", tgt_lang="de")


def _covost(root: Path) -> Path:
    (root / "clips").mkdir(parents=True)
    for name, seconds in (("c1", 0.5), ("c2", 0.25), ("c3", 1.0)):
        sf.write(str(root / "clips" / f"{name}.wav"), np.zeros(int(16000 * seconds), dtype=np.float32), 16000)
    rows = ["path\tsentence\ttranslation\tclient_id\tsplit", "c1.wav\tHello.\tHallo.\tspk_a\ttrain",
            "c2.wav\tA \"quote\".\tEin Zitat.\tspk_b\tdev", "c3.wav\tBye.\tTschüss.\tspk_a\ttrain"]
    (root / "covost.tsv").write_text("\n".join(rows) + "\n")
    return root / "covost.tsv"


def test_covost_import_by_split(tmp_path: Path) -> None:
    tsv = _covost(tmp_path / "cv")
    assert import_st(tsv, tmp_path / "out", tgt_lang="de", splits=("train", "dev")) == {"train": 2, "dev": 1}
    train = read_st_manifest(tmp_path / "out" / "train.jsonl", ["de"], check_audio=True)
    assert [(u.utt.id, u.utt.text, u.utt.speaker, u.translation["de"]) for u in train] == [
        ("c1", "Hello.", "spk_a", "Hallo."), ("c3", "Bye.", "spk_a", "Tschüss.")]
    assert [u.utt.duration for u in train] == [0.5, 1.0]
    [dev] = read_st_manifest(tmp_path / "out" / "dev.jsonl", ["de"])
    assert dev.utt.text == 'A "quote".'  # CoVoST quotes are text, not CSV quoting


def test_covost_errors(tmp_path: Path) -> None:
    tsv = _covost(tmp_path / "cv")
    (tmp_path / "cv" / "clips" / "c3.wav").unlink()
    with pytest.raises(DataError, match=r"covost\.tsv:4: .*c3\.wav"):
        import_covost(tsv, tmp_path / "cv" / "clips", tmp_path / "o.jsonl", tgt_lang="de")
    tsv.write_text("path\tsentence\nc1.wav\tHello.\n")
    with pytest.raises(DataError, match=r"covost\.tsv:1: header lacks column\(s\) translation"):
        import_covost(tsv, tmp_path / "cv" / "clips", tmp_path / "o.jsonl", tgt_lang="de")


def test_cli_imports_and_reports_errors_in_one_line(tmp_path: Path, capsys) -> None:
    _mustc(tmp_path / "data", "dev")
    _mustc(tmp_path / "data", "tst")
    code, out, _ = run_cli(["data", "st-import", "--from", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                            "--tgt-lang", "de"], capsys)
    assert code == 0 and out.splitlines() == [f"dev: 3 utterances written to {tmp_path / 'o'}/dev.jsonl",
                                              f"tst: 3 utterances written to {tmp_path / 'o'}/tst.jsonl"]
    (tmp_path / "data" / "dev" / "txt" / "dev.yaml").write_text("- [1, 2]\n")
    code, out, err = run_cli(["data", "st-import", "--from", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                              "--tgt-lang", "de"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "dev.yaml: segment 1: expected a mapping" in err


@pytest.mark.skipif(not all(shutil.which(b) for b in ("espeak-ng", "flite")), reason="espeak-ng or flite missing")
def test_cli_recipe_dev_only_and_a_missing_language(m30k: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "st"
    code, _, _ = run_cli(["data", "speech-translation", "--from", str(m30k), "--out", str(out), "--langs", "fr",
                          "--train-sentences", "0", "--dev-sentences", "2"], capsys)
    assert code == 0 and not (out / "train.jsonl").exists()  # no split rather than an empty manifest
    assert [u.translation["fr"][:4] for u in read_st_manifest(out / "dev.jsonl", ["fr"])] in (
        [["fr 0", "fr 1"], ["fr 0", "fr 2"], ["fr 1", "fr 2"]])
    code, _, err = run_cli(["data", "speech-translation", "--from", str(m30k), "--out", str(out), "--langs", "de,cs"],
                           capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "no train.cs[.gz]" in err
