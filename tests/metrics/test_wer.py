"""WER/CER through jiwer vs our own Levenshtein, empty hypotheses, and the alignment report."""

import math
import random

from transduce.metrics.wer import alignment_report, cer, error_counts, wer


def edit_distance(ref, hyp):
    """Plain Levenshtein distance between two sequences (unit costs)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def reference_rate(hyps, refs, split):
    errors = sum(edit_distance(split(r), split(h)) for h, r in zip(hyps, refs, strict=True))
    return 100.0 * errors / sum(len(split(r)) for r in refs)


def random_corpus(seed, n=20):
    rng = random.Random(seed)
    words = ["a", "cat", "sat", "on", "the", "mat", "dog", "ran"]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(n)]
    hyps = []
    for ref in refs:
        out = []
        for w in ref.split():
            roll = rng.random()
            if roll < 0.15:
                continue  # deletion
            out.append(rng.choice(words) if roll < 0.3 else w)
            if rng.random() < 0.1:
                out.append(rng.choice(words))  # insertion
        hyps.append(" ".join(out))
    return hyps, refs


def test_wer_and_cer_equal_our_levenshtein():
    for seed in range(5):
        hyps, refs = random_corpus(seed)
        assert math.isclose(wer(hyps, refs), reference_rate(hyps, refs, str.split), rel_tol=1e-9)
        assert math.isclose(cer(hyps, refs), reference_rate(hyps, refs, list), rel_tol=1e-9)
        counts = error_counts(hyps, refs)
        assert counts["ref_words"] == sum(len(r.split()) for r in refs)
        errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
        assert math.isclose(100.0 * errors / counts["ref_words"], wer(hyps, refs), rel_tol=1e-9)


def test_empty_hypothesis_is_all_deletions():
    assert wer([""], ["the cat sat"]) == 100.0
    assert error_counts(["", "a b"], ["the cat sat", "a b"]) == {
        "substitutions": 0, "deletions": 3, "insertions": 0, "hits": 2, "ref_words": 5,
    }
    assert "D=3" in alignment_report(["u"], [""], ["the cat sat"])


def test_argument_order_is_hyps_then_refs():
    assert wer(["a b c d"], ["a"]) == 300.0  # three insertions over one reference word
    assert error_counts(["a b c d"], ["a"])["insertions"] == 3


def test_alignment_report_marks_substitutions_insertions_deletions():
    report = alignment_report(
        ["utt1", "utt2"], ["the bat sat on the mat", "a dog ran"], ["the cat sat on mat", "a big dog ran away"]
    )
    blocks = report.strip().split("\n\n")
    assert len(blocks) == 2
    head, ref, hyp, marks = blocks[0].split("\n")
    assert head.startswith("utt1") and "S=1 D=0 I=1" in head
    assert ref.startswith("REF:") and hyp.startswith("HYP:")
    assert sorted(marks.split()) == ["I", "S"]
    head, ref, hyp, marks = blocks[1].split("\n")
    assert "S=0 D=2 I=0" in head and "WER 40.00%" in head
    assert marks.split() == ["D", "D"]
    # columns line up: every mark sits under the start of its word in both lines
    for line in (ref, hyp):
        assert len(line.split()) == 6  # label + 5 aligned columns
    for pos, ch in enumerate(marks):
        if ch != " ":
            assert ref[pos] != " " and hyp[pos] != " " and ref[pos - 1] == " " == hyp[pos - 1]
