"""The bundled captions model decodes real (TTS, unseen-voice) speech with the n-gram LM its config names."""

from __future__ import annotations

from pathlib import Path

from transduce.cli.main import main
from transduce.metrics.wer import wer
from transduce.recognize import Recognizer

ROOT = Path(__file__).resolve().parents[1]


def test_bundled_captions_model_uses_its_lm_and_the_lm_helps() -> None:
    folder = ROOT / "examples" / "captions"
    rows = [line.split("\t") for line in (folder / "transcripts.tsv").read_text().splitlines()]
    wavs, refs = [folder / name for name, _ in rows], [text for _, text in rows]
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
