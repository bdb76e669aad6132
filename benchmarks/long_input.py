"""Time and peak memory against input length: long audio through the bundled streaming Conformer with full
attention, blockwise local attention, Transformer-XL segment memory and cutting at pauses; and source
sentences of 100 to 2,000 tokens through the MT Transformer encoder (full attention).

Run:
    nice -n 19 .venv/bin/python benchmarks/long_input.py                       # 1 5 15 30 60 minutes
    nice -n 19 .venv/bin/python benchmarks/long_input.py --minutes 1 5 15 --tokens 100 500 --threads 1

Every point runs in a fresh Python process, which reports its own peak resident memory (``getrusage``
maxrss: tracemalloc does not see torch's allocations) and the seconds from the loaded model to the
transcript (features, encoder, CTC greedy search; model loading and the recording's synthesis excluded).
Recordings are synthetic (``data.digits.write_long_recording``: one FSDD speaker's digit strings and
pauses, at FSDD's 8 kHz). Full attention is skipped where its score matrices alone would exceed --max-gb;
the line says how much they would need. Printed: a table, the growth ratio (seconds per audio minute at the
longest length over the same at 5 minutes: 1.0 means linear) and a plot saved as docs/img/long_input.png.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO.parent / "shared" / "data" / "fsdd"
MODEL = REPO / "models" / "digits-hybrid-streaming"
AUDIO_MODES = ("full", "local", "memory", "segmented")
FRAMES_PER_MINUTE = 60 * 100 // 4  # encoder frames: 10 ms features, subsampling 4


def full_attention_gb(minutes: float, heads: int = 4) -> float:
    """What full self-attention over the whole recording needs for its scores: the (H, T', T') float32 positional
    scores and the masked copy that goes to SDPA, both alive at once."""
    frames = minutes * FRAMES_PER_MINUTE
    return 2 * heads * frames**2 * 4 / 1e9


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def audio_point(mode: str, path: str) -> dict[str, float]:
    """One recording, one way, in this process -> seconds and peak MB."""
    import torch

    from transduce.data.tokenizer import PAD
    from transduce.decoding.ctc import ctc_greedy
    from transduce.long_audio import encode_with_memory, transcribe_long
    from transduce.recognize import Recognizer

    recognizer = Recognizer.load(MODEL)
    started = time.perf_counter()
    if mode == "segmented":
        tokens = sum(len(p.transcript.tokens) for p in transcribe_long(recognizer, path,
                                                                       overrides={"mode": "ctc", "beam": 1}))
    elif mode == "memory":  # best path per block: only (T',) argmax ids are kept, not the encoder output
        best = torch.cat([recognizer.model.ctc_log_probs(out)[0].argmax(-1)
                          for out in encode_with_memory(recognizer, path, segment=32, memory=8)])
        tokens = int((best.unique_consecutive() != PAD).sum())  # CTC best path: repeats merged, blanks (PAD) out
    else:
        feats = recognizer.features(path)
        settings = {"window": 0} if mode == "full" else {"window_after": 0.0}
        log_probs, lens = recognizer.log_probs([feats], **settings)
        tokens = len(ctc_greedy(log_probs, lens)[0].tokens)
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_mb(), "tokens": tokens}


def text_point(tokens: int) -> dict[str, float]:
    """The MT recipe's Transformer encoder (random weights) over one source of ``tokens`` tokens."""
    from dataclasses import replace

    import torch
    from common import recipe_config

    from transduce.models.transformer import build

    model = build(replace(recipe_config(), max_positions=max(512, tokens + 2)), 8000, 8000).eval()
    src = torch.randint(4, 8000, (1, tokens))
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(5):
            model.encode(src, torch.tensor([tokens]))
    return {"seconds": (time.perf_counter() - started) / 5, "peak_mb": peak_mb()}


SEARCHES = {"CTC greedy": {"mode": "ctc", "beam": 1}, "CTC prefix beam 8": {"mode": "ctc", "beam": 8},
            "two-pass: CTC beam 8 + attention rescoring": {"mode": "rescore", "beam": 8},
            "one pass: joint CTC/attention beam 8": {"mode": "joint", "beam": 8}}


def decoding_point(path: str, truth_path: str) -> dict[str, dict[str, float]]:
    """Coarse-to-fine (hierarchical) decoding of one recording: cut at pauses once (timed apart), then each
    search over the same pieces: its seconds and WER."""
    from transduce.long_audio import speech_pieces
    from transduce.metrics.wer import wer
    from transduce.recognize import Recognizer

    recognizer = Recognizer.load(MODEL)
    truth = " ".join(text for *_, text in json.loads(Path(truth_path).read_text()))
    started = time.perf_counter()
    pieces = [wave for _, wave in speech_pieces(recognizer, path)]
    results = {"cutting at pauses (silero-vad)": {"seconds": time.perf_counter() - started}}
    for name, settings in SEARCHES.items():
        started = time.perf_counter()
        found = " ".join(recognizer.transcribe(pieces, **settings))
        results[name] = {"seconds": time.perf_counter() - started, "wer": wer([found], [truth])}
    return results


def run_point(args: argparse.Namespace, *point: str) -> dict[str, float]:
    """A point in a fresh interpreter (niced like this one), its JSON result; an error becomes {"error": ...}."""
    command = [sys.executable, __file__, "--threads", str(args.threads), "--point", *point]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO / "benchmarks")
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def audio_table(args: argparse.Namespace, folder: Path) -> dict[str, dict[float, dict[str, float]]]:
    results: dict[str, dict[float, dict[str, float]]] = {mode: {} for mode in args.modes}
    from transduce.data.digits import write_long_recording

    for minutes in args.minutes:
        path = folder / f"{minutes:g}min.wav"
        write_long_recording(FSDD, path, seconds=minutes * 60)
        for mode in args.modes:
            need = full_attention_gb(minutes)
            if mode == "full" and need > args.max_gb:
                print(f"{minutes:>6g} min  {mode:<9}  skipped (would need {need:,.0f} GB for the attention scores)",
                      flush=True)
                continue
            result = results[mode][minutes] = run_point(args, "audio", mode, str(path))
            shown = result.get("error") or (f"{result['seconds']:8.1f} s  {result['seconds'] / minutes:6.2f} s/min  "
                                            f"peak {result['peak_mb']:7.0f} MB  {result['tokens']} words")
            print(f"{minutes:>6g} min  {mode:<9}  {shown}", flush=True)
        path.unlink()
    return results


def growth(points: dict[float, dict[str, float]]) -> str:
    """Seconds per minute at the longest length over the same at 5 minutes (or the shortest)."""
    ok = {m: r for m, r in points.items() if "seconds" in r}
    if len(ok) < 2:
        return "n/a"
    top = max(ok)
    base = 5.0 if 5.0 in ok and top > 5.0 else min(ok)
    ratio = (ok[top]["seconds"] / top) / (ok[base]["seconds"] / base)
    return f"{ratio:.2f} (s/min at {top:g} min over {base:g} min)"


def plot(audio: dict[str, dict[float, dict[str, float]]], text: dict[int, dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, mem_ax, text_ax) = plt.subplots(1, 3, figsize=(15, 4.2))
    for mode, points in audio.items():
        ok = sorted((m, r) for m, r in points.items() if "seconds" in r)
        if ok:
            time_ax.plot([m for m, _ in ok], [r["seconds"] for _, r in ok], "o-", label=mode)
            mem_ax.plot([m for m, _ in ok], [r["peak_mb"] / 1024 for _, r in ok], "o-", label=mode)
    time_ax.set(xlabel="audio minutes", ylabel="seconds", title="time (features + encoder + CTC)")
    mem_ax.set(xlabel="audio minutes", ylabel="peak RSS (GB)", title="peak memory")
    ok_text = sorted((n, r) for n, r in text.items() if "seconds" in r)
    if ok_text:
        text_ax.plot([n for n, _ in ok_text], [1000 * r["seconds"] for _, r in ok_text], "o-", label="ms per source")
        twin = text_ax.twinx()
        twin.plot([n for n, _ in ok_text], [r["peak_mb"] for _, r in ok_text], "s--", color="gray", label="peak MB")
        twin.set_ylabel("peak RSS (MB)")
    text_ax.set(xlabel="source tokens", ylabel="ms per encoder pass", title="MT Transformer encoder (full attention)")
    for ax in (time_ax, mem_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def decoding_table(args: argparse.Namespace) -> None:
    """Seconds, real-time factor and WER of each search over the pieces of one recording cut at pauses (the
    cutting timed on its own line; every search row includes features and encoder)."""
    from common import machine_line

    from transduce.data.digits import write_long_recording

    print(machine_line(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        path, truth = Path(tmp) / "rec.wav", Path(tmp) / "truth.json"
        truth.write_text(json.dumps(write_long_recording(FSDD, path, seconds=args.decoding * 60,
                                                         speaker=args.speaker)))
        results = run_point(args, "decoding", str(path), str(truth))
    base = results.get("CTC greedy", {}).get("seconds")
    for name, r in results.items():
        ratio = f"{r['seconds'] / base:5.2f}x greedy" if base and "wer" in r else " " * 12
        wer = f"WER {r['wer']:.2f}" if "wer" in r else ""
        print(f"{name:<45} {r['seconds']:7.1f} s  RTF {r['seconds'] / (args.decoding * 60):.4f}  {ratio}  {wer}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="*", default=[1, 5, 15, 30, 60])
    parser.add_argument("--modes", nargs="*", choices=AUDIO_MODES, default=list(AUDIO_MODES))
    parser.add_argument("--tokens", type=int, nargs="*", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip full attention needing more (default 6)")
    parser.add_argument("--plot", default=str(REPO / "docs" / "img" / "long_input.png"))
    parser.add_argument("--results", default=str(REPO / "docs" / "results" / "long_input.json"))
    parser.add_argument("--merge", action="store_true", help="keep --results' points that this run does not redo")
    parser.add_argument("--decoding", type=float, metavar="MINUTES",
                        help="instead: the cost of each search (two-pass rescoring too) on a recording this long")
    parser.add_argument("--speaker", default="nicolas",
                        help="--decoding: the FSDD speaker (default nicolas, unseen in the model's training)")
    parser.add_argument("--point", nargs="+", help=argparse.SUPPRESS)  # internal: one point in this process
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.point:
        kind, *rest = args.point
        points = {"audio": lambda: audio_point(*rest), "text": lambda: text_point(int(rest[0])),
                  "decoding": lambda: decoding_point(*rest)}
        print(json.dumps(points[kind]()))
        return
    if args.decoding:
        return decoding_table(args)
    from common import machine_line

    print(machine_line(args.threads))
    saved = json.loads(Path(args.results).read_text()) if args.merge and Path(args.results).is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        audio = audio_table(args, Path(tmp))
    for mode, points in saved.get("audio", {}).items():  # earlier runs' points this run did not redo
        for minutes, result in points.items():
            audio.setdefault(mode, {}).setdefault(float(minutes), result)
    text = {int(n): r for n, r in saved.get("text", {}).items()}
    for tokens in args.tokens:
        text[tokens] = result = run_point(args, "text", str(tokens))
        shown = result.get("error") or f"{1000 * result['seconds']:8.1f} ms  peak {result['peak_mb']:6.0f} MB"
        print(f"{tokens:>6} tokens  MT encoder  {shown}", flush=True)
    for mode, points in audio.items():
        print(f"growth {mode:<9} {growth(points)}")
    plot(audio, text, Path(args.plot))
    Path(args.results).write_text(json.dumps({"audio": audio, "text": text}, indent=1) + "\n")
    print(f"plot: {args.plot}, results: {args.results}")


if __name__ == "__main__":
    main()
