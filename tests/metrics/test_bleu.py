"""BLEU and chrF against sacreBLEU, and the Multi30k tokenized-reference convention."""

import gzip
from pathlib import Path

import pytest
import sacrebleu

from transduce.metrics.bleu import mmt_tokenize, sacre_scores, tokenized_bleu

MULTI30K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"

REFS = [
    "A man in a blue shirt is standing on a ladder.",
    "Two dogs play in the snow.",
    "A little girl climbs into a wooden playhouse.",
    "People are walking down a busy city street at night.",
]
HYPS = [
    "A man in a blue shirt stands on a ladder.",
    "Two dogs are playing in snow.",
    "A girl climbs into a wooden house.",
    "People walk down a street in the city at night.",
]


def test_sacre_scores_equal_sacrebleu():
    got = sacre_scores(HYPS, REFS)
    bleu = sacrebleu.corpus_bleu(HYPS, [REFS])
    chrf = sacrebleu.corpus_chrf(HYPS, [REFS])
    assert got["bleu"] == round(bleu.score, 2)
    assert got["chrf"] == round(chrf.score, 2)
    assert 0 < got["bleu"] < 100
    assert str(got["bleu_signature"]).startswith("nrefs:1|")
    assert "tok:13a" in str(got["bleu_signature"])
    assert str(got["chrf_signature"]).startswith("nrefs:1|")


def test_sacre_scores_of_references_are_perfect():
    got = sacre_scores(REFS, REFS)
    assert got["bleu"] == 100.0 and got["chrf"] == 100.0


def test_tokenized_bleu_equals_sacrebleu_on_moses_tokens():
    refs_tok = [mmt_tokenize(r, "en") for r in REFS]
    hyp_tok = [mmt_tokenize(h, "en") for h in HYPS]
    want = sacrebleu.corpus_bleu(hyp_tok, [refs_tok], tokenize="none", force=True).score
    assert tokenized_bleu(HYPS, refs_tok, "en") == round(want, 2)


def test_mmt_tokenize_lowercases_normalizes_and_escapes():
    assert mmt_tokenize('He said "Hi" & left.', "en") == "he said &quot; hi &quot; &amp; left ."


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.mark.parametrize("lang", ["en", "de", "cs"])
def test_mmt_tokenize_reproduces_official_multi30k_references(lang):
    raw_path = MULTI30K / f"test_2016_flickr.{lang}.gz"
    tok_path = MULTI30K / "tok" / f"test_2016_flickr.lc.norm.tok.{lang}"
    if not (raw_path.is_file() and tok_path.is_file()):
        pytest.skip(f"Multi30k test data not found under {MULTI30K}")
    raw, official = _lines(raw_path), _lines(tok_path)
    assert len(raw) == len(official) == 1000
    mismatches = [
        (i + 1, ours, ref)
        for i, (line, ref) in enumerate(zip(raw, official, strict=True))
        if (ours := mmt_tokenize(line, lang)) != ref
    ]
    assert not mismatches, f"{len(mismatches)} lines differ, first: {mismatches[:3]}"
    assert tokenized_bleu(raw, official, lang) == 100.0
