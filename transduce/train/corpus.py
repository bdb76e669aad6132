"""Turning a recipe's data section into tokenized, filtered training and dev sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transduce.config import DataConfig
from transduce.data.text import DataError, filter_pairs, read_parallel
from transduce.data.tokenizer import Tokenizers, train_sentencepiece


@dataclass
class Corpus:
    """Tokenized training pairs (without specials), and raw + tokenized dev pairs."""

    tokenizers: Tokenizers
    train_src: list[list[int]]
    train_tgt: list[list[int]]
    valid_src_text: list[str]
    valid_tgt_text: list[str]
    valid_src: list[list[int]]
    valid_tgt: list[list[int]]
    reverse_target: bool = False
    """Target ids are right to left (``DataConfig.reverse_target``); searches flip them back."""


def _find(folder: Path, prefix: str, lang: str) -> Path:
    for name in (f"{prefix}.{lang}", f"{prefix}.{lang}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}/{prefix}.{lang}: no such file (data.dir={folder})")


def read_training_pairs(cfg: DataConfig) -> tuple[list[str], list[str]]:
    """The training pairs of ``cfg.train``: one prefix, or several comma-separated (``train,train.kd``:
    the real pairs, then e.g. an ensemble's translations of the same sources) read one after another."""
    prefixes = [p.strip() for p in cfg.train.split(",")]
    if not all(prefixes):
        raise DataError(f"data.train={cfg.train!r} has an empty prefix")
    folder = Path(cfg.dir)
    src: list[str] = []
    tgt: list[str] = []
    for prefix in prefixes:
        s, t = read_parallel(_find(folder, prefix, cfg.src_lang), _find(folder, prefix, cfg.tgt_lang))
        src += s
        tgt += t
    return src, tgt


def train_tokenizers(cfg: DataConfig, src: list[str], tgt: list[str], out: Path) -> Tokenizers:
    """Train SentencePiece on the training text (joint or per side) into ``out``."""
    src_path, tgt_path = Tokenizers.files(out, cfg.joint_vocab)
    opts = dict(vocab_size=cfg.vocab_size, model_type=cfg.tokenizer,
                character_coverage=cfg.character_coverage)
    if cfg.joint_vocab:
        tok = train_sentencepiece(src + tgt, src_path, **opts)  # type: ignore[arg-type]
        return Tokenizers(tok, tok)
    return Tokenizers(train_sentencepiece(src, src_path, **opts),  # type: ignore[arg-type]
                      train_sentencepiece(tgt, tgt_path, **opts))  # type: ignore[arg-type]


def load_corpus(cfg: DataConfig, run_dir: Path, log=print) -> Corpus:
    """Read, tokenize (training the tokenizer into ``run_dir`` the first time) and filter."""
    folder = Path(cfg.dir)
    train = read_training_pairs(cfg)
    valid = read_parallel(_find(folder, cfg.valid, cfg.src_lang), _find(folder, cfg.valid, cfg.tgt_lang))
    if all(p.is_file() for p in Tokenizers.files(run_dir, cfg.joint_vocab)):
        toks = Tokenizers.load(run_dir, cfg.joint_vocab)
    else:
        toks = train_tokenizers(cfg, *train, run_dir)
        log(f"trained {cfg.tokenizer} tokenizer(s): {len(toks.src)} source / {len(toks.tgt)} target pieces")
    src_ids, tgt_ids = toks.src.encode(train[0]), toks.tgt.encode(train[1])
    keep, report = filter_pairs(src_ids, tgt_ids, max_len=cfg.max_len, max_ratio=cfg.max_len_ratio)
    log(report.summary("train"))
    valid_tgt = toks.tgt.encode(valid[1])
    if cfg.reverse_target:
        tgt_ids, valid_tgt = [t[::-1] for t in tgt_ids], [t[::-1] for t in valid_tgt]
    return Corpus(
        tokenizers=toks,
        train_src=[src_ids[i] for i in keep],
        train_tgt=[tgt_ids[i] for i in keep],
        valid_src_text=valid[0], valid_tgt_text=valid[1],
        valid_src=toks.src.encode(valid[0]), valid_tgt=valid_tgt,
        reverse_target=cfg.reverse_target,
    )
