"""Our Tokenizer codes short batches one by one and long ones through SentencePiece's threaded batch call:
both give what SentencePiece gives for each line."""

from __future__ import annotations

from pathlib import Path

import pytest

from transduce.data.tokenizer import THREADED, Tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("count", [0, 1, THREADED - 1, THREADED, 3 * THREADED])
def test_batches_of_every_size_code_each_line_as_sentencepiece_does(count: int) -> None:
    tok = Tokenizer(ROOT / "models" / "multi30k-en-de" / "spm.model")
    words = "a man in an orange hat starring at something . Zwei Männer ¿ 123 ünïcödé".split()
    lines = [" ".join(words[i % len(words) :] + words[: i % 5]) for i in range(count)]
    ids = tok.encode(lines)
    assert ids == [tok.sp.encode(line) for line in lines]
    assert tok.decode(ids) == [tok.sp.decode(row) for row in ids]
