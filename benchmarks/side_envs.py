"""Side environments of peer toolkits, for benchmarks that run them next to transduce on the same data.

Each peer lives in its own virtual environment under ``.peers/`` (git-ignored), created on first use, so
its pins never touch the project's ``.venv``. Run once (several minutes: fairseq builds C extensions):
    .venv/bin/python benchmarks/side_envs.py fairseq
Benchmarks call ``peer_python("fairseq")``: the side environment's interpreter, or None when it is absent
(they then skip the comparison and say how to create it).

fairseq: ``fairseq-fixed==0.12.3.1`` (fairseq 0.12.3 with its packaging fixed for recent Pythons) on the
project's torch (2.13.0, CPU build). Run it with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (its checkpoints
predate ``torch.load(weights_only=True)``) and ``--required-batch-size-multiple 1`` (its default of 8 would
regroup the batches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / ".peers"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

RECIPES: dict[str, list[list[str]]] = {
    "fairseq": [
        ["pip", "install", "--upgrade", "pip"],
        # the CPU build: from pip's configured indexes/find-links, else PyTorch's CPU index
        ["pip", "install", "--retries", "1", "torch==2.13.0+cpu", "--extra-index-url", TORCH_CPU_INDEX],
        ["pip", "install", "cython", "numpy", "wheel", "setuptools"],
        ["pip", "install", "--no-build-isolation", "fairseq-fixed==0.12.3.1"],
    ],
}
PROBES = {"fairseq": "import fairseq, torch; print(fairseq.__version__, torch.__version__)"}


def env_dir(name: str) -> Path:
    return PEERS / name


def peer_python(name: str) -> Path | None:
    """The interpreter of a working side environment ``name``, or None."""
    python = env_dir(name) / "bin" / "python"
    if not python.is_file():
        return None
    probe = subprocess.run([str(python), "-c", PROBES[name]], capture_output=True, text=True)
    return python if probe.returncode == 0 else None


def create(name: str) -> Path:
    """Create (or complete) the side environment ``name``; its interpreter."""
    if name not in RECIPES:
        raise SystemExit(f"unknown peer {name!r}; choose from {', '.join(RECIPES)}")
    folder = env_dir(name)
    if not (folder / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    for step in RECIPES[name]:
        print("+", " ".join(step), flush=True)
        subprocess.run([str(python), "-m", *step], check=True)
    found = peer_python(name)
    if found is None:
        raise SystemExit(f"{folder}: created, but `{PROBES[name]}` fails there")
    print(subprocess.run([str(found), "-c", PROBES[name]], capture_output=True, text=True).stdout.strip())
    return found


# fairseq-train flags of the mt row of benchmarks/train_speed.py: recipes/multi30k-en-de-transformer.yaml post-LN
# (fairseq's default), i.e. Wu et al.'s Transformer-tiny; no validation, no checkpoints
FAIRSEQ_MT_FLAGS = [
    "--arch", "transformer", "--share-all-embeddings", "--encoder-layers", "4", "--decoder-layers", "4",
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
    "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--dropout", "0.3", "--attention-dropout", "0.0", "--activation-dropout", "0.0",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-8", "--lr", "5e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "2000", "--warmup-init-lr", "1e-7",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "4096",
    "--required-batch-size-multiple", "1", "--seed", "1", "--cpu", "--num-workers", "0",
    "--disable-validation", "--no-save", "--log-format", "json",
]


def encode_multi30k(data: Path, spm_model: Path, out: Path) -> None:
    """train/val of Multi30k en-de as SentencePiece pieces, one sentence a line, into ``out``."""
    import sentencepiece as spm
    from common import read_pairs

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    out.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("valid", "val")):
        en, de = read_pairs(data, prefix)
        for lang, lines in (("en", en), ("de", de)):
            pieces = sp.encode(lines, out_type=str)
            (out / f"{split}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces))


def run_fairseq(python: Path, data: Path, spm_model: Path, work: Path, *, updates: int, threads: int,
                log_every: int) -> dict[str, float]:
    """fairseq-train on Multi30k en-de with ``FAIRSEQ_MT_FLAGS``: median target tokens/s (wps) over the log
    windows after the first, and the training loss (base 2) of the last window."""
    bin_dir = python.parent
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    encode_multi30k(data, spm_model, work / "text")
    subprocess.run([str(bin_dir / "fairseq-preprocess"), "--source-lang", "en", "--target-lang", "de",
                    "--trainpref", str(work / "text" / "train"), "--validpref", str(work / "text" / "valid"),
                    "--joined-dictionary", "--destdir", str(work / "bin"), "--workers", "1"],
                   check=True, capture_output=True, env=env)
    proc = subprocess.run([str(bin_dir / "fairseq-train"), str(work / "bin"), *FAIRSEQ_MT_FLAGS,
                           "--max-update", str(updates), "--log-interval", str(log_every)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"fairseq-train failed:\n{proc.stderr[-3000:]}")
    inner = [json.loads(line[line.index("{"):]) for line in (proc.stdout + proc.stderr).splitlines()
             if "train_inner" in line and '"wps"' in line]  # one line per log window
    if not inner:
        raise SystemExit(f"fairseq-train logged no training statistics:\n{proc.stderr[-2000:]}")
    speeds = [float(e["wps"]) for e in inner[1:]] or [float(inner[0]["wps"])]
    return {"tok_s": statistics.median(speeds), "loss": float(inner[-1]["loss"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("peers", nargs="+", choices=sorted(RECIPES), help="side environments to create")
    for name in parser.parse_args().peers:
        existing = peer_python(name)
        print(f"{name}: {existing} (already there)" if existing else f"{name}: created {create(name)}")


if __name__ == "__main__":
    main()
