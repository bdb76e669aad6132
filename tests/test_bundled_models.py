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
    assert wer(rec.transcribe(wavs, ensemble=()), refs) < 20.0
    captions, _ = examples("captions")
    fused = rec.transcribe(captions)
    plain = rec.transcribe(captions, beam=1, lm_weight=0.0, ensemble=())
    assert all(fused) and all(set(text.split()) <= DIGITS for text in fused), fused
    assert any(not set(text.split()) <= DIGITS for text in plain), plain


def test_bundled_digits_model_votes_with_two_word_unit_models() -> None:
    """The digits model's default search pools its n-best with those of a word-unit CTC model in its folder
    and of models/digits-hybrid-streaming, and ranks by the sum of the three CTC log-likelihoods: each
    winner's score is that sum (and the examples decode to digit words, WER < 20%)."""
    from transduce.decoding.ctc_ensemble import ctc_log_likelihoods

    model = ROOT / "models" / "digits-conformer-ctc"
    rec = Recognizer.load(model)
    assert rec.config.decode.ensemble == (str(model / "words"), str(ROOT / "models" / "digits-hybrid-streaming"))
    members = [rec] + [rec.partner(name) for name in rec.config.decode.ensemble]
    assert [len(m.tokenizer) for m in members] == [20, 14, 14]  # characters, then the ten words
    wavs, refs = examples("digits")
    best = [nbest[0] for nbest in rec.search(wavs)]
    assert wer([b.text for b in best], refs) < 20.0 and all(set(b.text.split()) <= DIGITS for b in best)
    for wav, hyp in zip(wavs, best, strict=True):
        scores = []
        for member in members:
            log_probs, lens = member.log_probs([member.features(wav)], chunk_size=0)
            ids = member.tokenizer.encode([hyp.text])
            scores.append(float(ctc_log_likelihoods(log_probs[0, : int(lens[0])], ids)[0]))
        assert abs(hyp.score - sum(scores)) < 1e-3, (hyp.score, scores)


def test_bundled_image_cascade_reads_and_translates_the_example_photos(capsys) -> None:
    """models/multi30k-image reads the example photos (validation fonts) nearly letter-perfect, and translates
    exactly what it read (restored by the translation model's truecaser)."""
    from transduce.cascade import Cascade
    from transduce.data.captions import normalize_text
    from transduce.metrics.wer import cer
    from transduce.tasks import load

    folder = ROOT / "examples" / "photos"
    rows = [line.split("\t") for line in (folder / "lines.tsv").read_text(encoding="utf-8").splitlines()]
    photos = [str(folder / name) for name, _ in rows]
    cascade = load(ROOT / "models" / "multi30k-image")
    assert isinstance(cascade, Cascade)
    read = cascade.recognizer.transcribe(photos)
    assert cer(read, [normalize_text(text) for _, text in rows]) < 5.0
    restored = cascade.transcribe(photos)
    assert [normalize_text(t) for t in restored] == [normalize_text(t) for t in read]
    assert cascade.translate(photos, "de") == cascade.translator.translate(restored)
    assert main(["transcribe", "--model", str(ROOT / "models" / "multi30k-image"), photos[0]]) == 0
    assert capsys.readouterr().out == f"{photos[0]}\t{read[0]}\n"


def test_bundled_unified_model_transcribes_and_translates_speech_and_text(capsys) -> None:
    """models/multi30k-unified: one model transcribes the example recordings (unseen voices) and translates them
    and text into German, French and Czech; the CLI gives what the API gives; a language it lacks is one line."""
    from transduce.metrics.bleu import sacre_scores
    from transduce.unified import Unified

    model_dir = str(ROOT / "models" / "multi30k-unified")
    m = Unified.load(model_dir)
    assert m.inputs == ("speech", "text") and m.jobs == ("asr", "st", "mt")
    wavs, refs = examples("captions")
    heard = m.transcribe(wavs)
    assert wer(heard, refs) < 75.0, heard  # a 2,000-update CPU checkpoint (card: dev WER ~50)
    folder = ROOT / "examples" / "captions"
    rows = [line.split("\t") for line in (folder / "translations.tsv").read_text(encoding="utf-8").splitlines()]
    for k, lang in enumerate(("de", "fr", "cs")):
        hyps = m.translate_audio(wavs, lang)
        assert sacre_scores(hyps, [row[1 + k] for row in rows])["bleu"] > 2.0, (lang, hyps)
    assert main(["translate", "--model", model_dir, "--tgt-lang", "fr", str(wavs[0])]) == 0
    assert capsys.readouterr().out == f"{wavs[0]}\t{m.translate_audio(wavs[:1], 'fr')[0]}\n"
    assert main(["translate", "--model", model_dir, "--tgt-lang", "cs", "A dog runs on the beach."]) == 0
    assert capsys.readouterr().out.splitlines() == m.translate(["A dog runs on the beach."], "cs")
    assert main(["translate", "--model", model_dir, "--tgt-lang", "es", "A dog."]) == 2
    assert capsys.readouterr().err.strip().endswith("--tgt-lang es: this model's translate task produces de, fr, cs")
