"""Pieces shared by the benchmark scripts: paths, the recipe model size, Multi30k text, a joint
SentencePiece tokenizer, and a line describing the machine. Not a benchmark itself."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from transduce.data.text import DataError, read_lines
from transduce.data.tokenizer import Tokenizer, train_sentencepiece
from transduce.models.transformer import TransformerConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "multi30k"


def recipe_config() -> TransformerConfig:
    """The model of recipes/multi30k-en-de-transformer.yaml: Wu et al. (2021) sizes, pre-LN."""
    return TransformerConfig(
        dim=128, heads=4, ffn_dim=256, encoder_layers=4, decoder_layers=4, dropout=0.3,
        pre_norm=True, share_embeddings=True, tie_output=True,
    )


def wu_tiny_config() -> TransformerConfig:
    """fairseq's ``transformer_tiny_wu2021``: the recipe sizes, post-LN (fairseq's default)."""
    return replace(recipe_config(), pre_norm=False)


def text_file(folder: Path, name: str) -> Path:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / name}[.gz]: no such file (pass --data)")


def read_pairs(folder: Path, prefix: str = "train") -> tuple[list[str], list[str]]:
    """English and German sides of a Multi30k split."""
    en = read_lines(text_file(folder, f"{prefix}.en"))
    de = read_lines(text_file(folder, f"{prefix}.de"))
    if len(en) != len(de):
        raise DataError(f"{folder}/{prefix}: {len(en)} English vs {len(de)} German lines")
    return en, de


def joint_tokenizer(en: list[str], de: list[str], spm_path: str | None, workdir: Path,
                    vocab_size: int = 8000) -> Tokenizer:
    """``spm_path`` if given, else a joint BPE trained on both sides into ``workdir``."""
    if spm_path:
        return Tokenizer(spm_path)
    started = time.perf_counter()
    tok = train_sentencepiece(en + de, workdir / "spm.model", vocab_size=vocab_size)
    print(f"trained a joint BPE of {len(tok)} pieces on {len(en)} pairs in "
          f"{time.perf_counter() - started:.0f} s (--spm FILE reuses a trained one)")
    return tok


def machine_line(threads: int) -> str:
    """torch build, CPU capability, threads, and how busy the machine is right now."""
    load = os.getloadavg()[0]
    busy = " (other processes compete: expect noise)" if load > 0.5 else ""
    return (f"torch {torch.__version__}, CPU {torch.backends.cpu.get_cpu_capability()}, "
            f"{threads} threads, load average {load:.1f} on {os.cpu_count()} CPUs{busy}")
