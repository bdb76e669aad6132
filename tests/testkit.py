"""Helpers shared by test files (importable as ``testkit``: pyproject sets pytest's ``pythonpath``)."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.data.batching import pad
from transduce.data.tokenizer import BOS, EOS, PAD
from transduce.data.tones import write_tones
from transduce.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def padded_batch(vocab: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Three sources of lengths 5, 2, 4 (padded with PAD) and teacher-forcing targets (3, 6) starting
    with BOS, ordinary tokens drawn from [4, vocab) -> (src, src_lens, tgt_in)."""
    g = torch.Generator().manual_seed(seed)
    src_lens = torch.tensor([5, 2, 4])
    src = torch.randint(4, vocab, (3, 5), generator=g)
    src[torch.arange(5)[None, :] >= src_lens[:, None]] = PAD
    tgt_in = torch.randint(4, vocab, (3, 6), generator=g)
    tgt_in[:, 0] = BOS
    return src, src_lens, tgt_in


def stepwise(model, src: Tensor, src_lens: Tensor, tokens: Tensor,
             reorder: Tensor | None = None) -> tuple[Tensor, list]:
    """Decode ``tokens`` (B, T) one step at a time through ``encode`` / ``init_state`` / ``step`` ->
    (log-probs (B', T, V), the state after each step). With ``reorder`` (B',) the rows of state, memory
    and tokens are re-indexed after step 1, as beam search does (B' = len(reorder)); log-probs of
    steps 0 and 1 are then taken in the new row order too."""
    memory, memory_lens = model.encode(src, src_lens)
    state = model.init_state(memory, memory_lens)
    out, states = [], []
    for t in range(tokens.size(1)):
        lp, state = model.step(tokens[:, t], memory, state)
        out.append(lp)
        states.append(state)
        if t == 1 and reorder is not None:
            state, memory, tokens = state.reorder(reorder), memory[reorder], tokens[reorder]
            out = [lp[reorder] for lp in out]
    return torch.stack(out, dim=1), states


def letter_sentences(letters: str, rng: random.Random, count: int) -> list[str]:
    """``count`` lines of 1 to 9 letters drawn from ``letters``, space-separated (a word-level copy task)."""
    return [" ".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(count)]


def train_copy(model: torch.nn.Module, ids: list[list[int]], steps: int, *, warmup: int = 0) -> None:
    """Teacher-forced cross-entropy of a Transformer copying ``ids`` (batches of 32 drawn with seed 0), Adam
    lr 3e-3 (ramped up linearly over ``warmup`` steps when > 0: post-LN needs it); a few seconds on a CPU.
    A trained copier ends its outputs with EOS, as real models do."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ramp = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(warmup, 1)))
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        batch = rng.sample(ids, 32)
        src = pad([s + [EOS] for s in batch])
        tgt_in, tgt_out = pad([[BOS, *s] for s in batch]), pad([[*s, EOS] for s in batch])
        logits = model(src, torch.tensor([len(s) + 1 for s in batch]), tgt_in)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ramp.step()
    model.eval()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``transduce ARGV`` in this process -> (exit code, stdout, stderr)."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def train_tiny_copy(base: Path, *overrides: str) -> Path:
    """The toy reverse data in ``base/data`` and recipes/tiny-copy.yaml (+ ``--set`` overrides) trained on
    it through the CLI into ``base/run`` -> ``base``."""
    assert main(["data", "toy", "--out", str(base / "data")]) == 0
    sets = [arg for o in (f"data.dir={base / 'data'}", *overrides) for arg in ("--set", o)]
    assert main(["train", str(ROOT / "recipes" / "tiny-copy.yaml"), "--out", str(base / "run"), "--no-progress",
                 *sets]) == 0
    return base


def set_config(model: Path, key: str, value: object) -> None:
    """Rewrite one ``section.field`` (``decode.rerank``) in a model folder's config.yaml."""
    import yaml

    section, field = key.split(".")
    config = yaml.safe_load((model / "config.yaml").read_text())
    config[section][field] = value
    (model / "config.yaml").write_text(yaml.safe_dump(config))


def train_tones(base: Path, recipe: str, *, valid: int) -> Path:
    """Synthetic tone 'speech' (300 training utterances) in ``base/data`` and ``recipes/<recipe>`` trained
    on it into ``base/run`` -> ``base``."""
    write_tones(base / "data", train=300, valid=valid)
    cfg = load_recipe(ROOT / "recipes" / recipe, [f"data.dir={base / 'data'}"])
    Trainer(cfg, base / "run", log=lambda _: None, show_progress=False).fit()
    return base


def collapse(path: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A CTC alignment (blank = 0) -> its label sequence: repeats merged, blanks removed."""
    return tuple(p for i, p in enumerate(path) if p != 0 and (i == 0 or path[i - 1] != p))


def ctc_label_log_probs(log_probs: Tensor) -> dict[tuple[int, ...], float]:
    """log_probs (T, V) -> {label sequence: log of its probability summed over all V^T alignments}."""
    frames, vocab = log_probs.shape
    paths = torch.tensor(list(itertools.product(range(vocab), repeat=frames)))  # (V^T, T)
    totals = log_probs[torch.arange(frames), paths].sum(1)  # (V^T,)
    grouped: defaultdict[tuple[int, ...], list[Tensor]] = defaultdict(list)
    for path, total in zip(paths.tolist(), totals, strict=True):
        grouped[collapse(path)].append(total)
    return {label: torch.stack(s).logsumexp(0).item() for label, s in grouped.items()}
