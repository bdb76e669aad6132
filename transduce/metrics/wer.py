"""Word and character error rates through jiwer (4.x), and a per-utterance alignment report.

Arguments are always (hypotheses, references), matching ``metrics/bleu.py``; jiwer takes the
reference first. Rates are percentages over the whole corpus (errors / reference words).
Empty hypotheses and references are allowed; a corpus without reference words divides by 1
(jiwer's convention).
"""

from __future__ import annotations

import jiwer


def wer(hyps: list[str], refs: list[str]) -> float:
    """Corpus word error rate in percent: 100 * (S + D + I) / reference words."""
    return 100.0 * jiwer.wer(list(refs), list(hyps))


def cer(hyps: list[str], refs: list[str]) -> float:
    """Corpus character error rate in percent (spaces count as characters)."""
    return 100.0 * jiwer.cer(list(refs), list(hyps))


def error_counts(hyps: list[str], refs: list[str]) -> dict[str, int]:
    """Corpus word-level substitutions, deletions, insertions, hits and reference words."""
    out = jiwer.process_words(list(refs), list(hyps))
    return {
        "substitutions": out.substitutions, "deletions": out.deletions, "insertions": out.insertions,
        "hits": out.hits, "ref_words": out.hits + out.substitutions + out.deletions,
    }


def _columns(ref: list[str], hyp: list[str], chunks: list[jiwer.AlignmentChunk]) -> list[tuple[str, str, str]]:
    """Aligned (ref word, hyp word, mark) triples; '*' fills the missing side, mark is S, D, I or ''."""
    cols: list[tuple[str, str, str]] = []
    for c in chunks:
        r, h = ref[c.ref_start_idx : c.ref_end_idx], hyp[c.hyp_start_idx : c.hyp_end_idx]
        if c.type == "equal":
            cols += [(a, b, "") for a, b in zip(r, h, strict=True)]
        elif c.type == "substitute":
            cols += [(a, b, "S") for a, b in zip(r, h, strict=True)]
        elif c.type == "delete":
            cols += [(a, "*" * len(a), "D") for a in r]
        else:  # insert
            cols += [("*" * len(b), b, "I") for b in h]
    return cols


def alignment_report(ids: list[str], hyps: list[str], refs: list[str]) -> str:
    """One block per utterance: id with S/D/I counts, then aligned REF, HYP and mark lines::

        utt1  S=1 D=1 I=0  WER 50.00%
        REF:  the cat sat on
        HYP:  the bat sat **
                  S       D
    """
    if not len(ids) == len(hyps) == len(refs):
        raise ValueError(f"got {len(ids)} ids, {len(hyps)} hypotheses and {len(refs)} references")
    out = jiwer.process_words(list(refs), list(hyps))
    blocks = []
    for utt, ref, hyp, chunks in zip(ids, out.references, out.hypotheses, out.alignments, strict=True):
        cols = _columns(ref, hyp, chunks)
        widths = [max(len(r), len(h)) for r, h, _ in cols]
        counts = {m: sum(mark == m for _, _, mark in cols) for m in "SDI"}
        rate = 100.0 * sum(counts.values()) / max(len(ref), 1)
        lines = [
            f"{utt}  S={counts['S']} D={counts['D']} I={counts['I']}  WER {rate:.2f}%",
            "REF:  " + " ".join(r.ljust(w) for (r, _, _), w in zip(cols, widths, strict=True)),
            "HYP:  " + " ".join(h.ljust(w) for (_, h, _), w in zip(cols, widths, strict=True)),
            "      " + " ".join(m.ljust(w) for (_, _, m), w in zip(cols, widths, strict=True)),
        ]
        blocks.append("\n".join(line.rstrip() for line in lines))
    return "\n\n".join(blocks) + "\n"
