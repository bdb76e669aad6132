"""SentencePiece tokenizers (joint or separate vocabularies, BPE or unigram).

Ids: 0 pad, 1 unk, 2 bos, 3 eos in every model we train.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from transduce.errors import ConfigError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
THREADED = 64
"""Batches at least this long go to SentencePiece's threaded batch call; shorter ones are coded one by one
(the thread pool costs ~0.7 ms a call, ~150 times the coding of one sentence: a streaming partial, a served
request)."""


class Tokenizer:
    """A SentencePiece model with the toolkit's special ids."""

    def __init__(self, model_path: str | Path) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such tokenizer model")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as err:  # sentencepiece: "could not parse ModelProto", unreadable file
            raise ConfigError(f"{self.path}: not a SentencePiece model ({' '.join(str(err).split())})") from None
        if (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD, BOS, EOS):
            raise ConfigError(f"{self.path}: expected pad/bos/eos ids {PAD}/{BOS}/{EOS}")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, lines: list[str]) -> list[list[int]]:
        return self.sp.encode(lines) if len(lines) >= THREADED else [self.sp.encode(line) for line in lines]

    def pieces(self, line: str) -> list[str]:
        return self.sp.encode(line, out_type=str)

    def id_to_piece(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids) if len(ids) >= THREADED else [self.sp.decode(row) for row in ids]


def train_sentencepiece(
    lines: list[str], out_path: str | Path, *, vocab_size: int, model_type: str = "bpe",
    character_coverage: float = 1.0, seed_sentences: int = 2_000_000,
) -> Tokenizer:
    """Train a SentencePiece model on ``lines`` and write it to ``out_path`` (a .model file)."""
    if model_type not in ("bpe", "unigram", "char", "word"):
        raise ValueError(f"unknown tokenizer type {model_type!r}")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for line in lines if line.strip()),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
        input_sentence_size=seed_sentences,
        shuffle_input_sentence=True,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(buffer.getvalue())
    return Tokenizer(out_path)


@dataclass
class Tokenizers:
    """A translation model's source and target tokenizers (the same object when the vocabulary is joint)."""

    src: Tokenizer
    tgt: Tokenizer

    @staticmethod
    def files(folder: Path, joint: bool) -> tuple[Path, Path]:
        if joint:
            return folder / "spm.model", folder / "spm.model"
        return folder / "spm.src.model", folder / "spm.tgt.model"

    @classmethod
    def load(cls, folder: str | Path, joint: bool) -> Tokenizers:
        src, tgt = cls.files(Path(folder), joint)
        return cls(Tokenizer(src), Tokenizer(tgt))
