"""The bundled speech models decode real speech with the n-gram LM (and lexicon) their configs name."""

from __future__ import annotations

from pathlib import Path

from transduce.cli.main import main
from transduce.metrics.wer import wer
from transduce.recognize import Recognizer

ROOT = Path(__file__).resolve().parents[1]


def examples(name: str) -> tuple[list[Path], list[str]]:
    """The recordings of ``examples/NAME`` and their reference transcripts (``transcripts.tsv``)."""
    folder = ROOT / "examples" / name
    rows = [line.split("\t") for line in (folder / "transcripts.tsv").read_text().splitlines()]
    return [folder / wav for wav, _ in rows], [text for _, text in rows]


def test_bundled_captions_model_uses_its_lm_and_the_lm_helps() -> None:
    wavs, refs = examples("captions")
    rec = Recognizer.load(ROOT / "models" / "captions-conformer-ctc")
    decode = rec.config.decode
    assert Path(decode.lm) == ROOT / "models" / "captions-conformer-ctc" / "lm.arpa.gz"
    assert decode.beam > 1 and decode.lm_weight > 0
    fused = wer(rec.transcribe(wavs), refs)
    plain = wer(rec.transcribe(wavs, lm_weight=0.0), refs)
    assert fused < 20.0 and fused < plain, (fused, plain)


def test_info_names_the_default_search(capsys) -> None:
    assert main(["info", str(ROOT / "models" / "captions-conformer-ctc")]) == 0
    assert "decodes by default with CTC prefix beam 20 (8 tokens per frame) + n-gram LM lm.arpa.gz" in (
        capsys.readouterr().out)


DIGITS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def test_bundled_digits_model_decodes_with_its_digit_grammar() -> None:
    """The digits model's LM and lexicon act as a digit grammar: even on speech that is not digits (a caption)
    its default search writes digit words only, where plain greedy search writes misspelt non-words."""
    model = ROOT / "models" / "digits-conformer-ctc"
    rec = Recognizer.load(model)
    assert Path(rec.config.decode.lm) == model / "lm.arpa.gz"
    assert Path(rec.config.decode.lexicon) == model / "words.txt"
    wavs, refs = examples("digits")
    assert wer(rec.transcribe(wavs), refs) == 0.0
    captions, _ = examples("captions")
    fused = rec.transcribe(captions)
    plain = rec.transcribe(captions, beam=1, lm_weight=0.0)
    assert all(fused) and all(set(text.split()) <= DIGITS for text in fused), fused
    assert any(not set(text.split()) <= DIGITS for text in plain), plain
