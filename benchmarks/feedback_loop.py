"""The human-feedback loop, measured (issue 26): adapt the streaming digits model to its dev speaker.

1. The dev speaker's utterances (``--data``/dev.jsonl, FSDD speaker nicolas, unseen in training) are split:
   ``--corrections`` of them are "corrected by a user", the rest measure the speaker's WER.
2. The served model (``Served`` + ``create_app``, through its HTTP API in-process) transcribes each of the
   corrected ones (``POST /v1/transcribe``), and the user posts the reference transcript as the correction
   (``POST /v1/feedback`` with the request id and ``keep_audio: true``).
3. ``transduce data feedback`` exports the corrections with a fine-tuning recipe; ``transduce train`` runs it
   (one command, logged to OUT/train.log).
4. ``transduce evaluate`` (the model's own decoding) before and after, on the speaker's other utterances and on
   the other (training) speakers: new utterances built from their recordings with another seed.

    python benchmarks/feedback_loop.py --data work/data/digits --out work/feedback-loop
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ("george", "jackson", "lucas", "yweweler")


def post_corrections(model: Path, utts: list, data_dir: Path) -> int:
    """Transcribe each utterance through the served API and post its reference as the correction; errors."""
    from fastapi.testclient import TestClient

    from transduce.server.app import Served, create_app

    served = Served.load([model], data_dir=data_dir)
    errors = 0
    with TestClient(create_app(served)) as client:
        for u in utts:
            r = client.post("/v1/transcribe", content=Path(u.audio).read_bytes(), headers={"content-type": "audio/wav"})
            r.raise_for_status()
            out = r.json()
            errors += out["text"] != u.text
            r = client.post("/v1/feedback", json={"model": model.name, "request_id": out["request_id"],
                                                  "output": out["text"], "correction": u.text, "keep_audio": True})
            r.raise_for_status()
    return errors


def cli(*args: str, log: Path | None = None) -> str:
    cmd = [sys.executable, "-m", "transduce", *args]
    print("$ transduce", " ".join(args), flush=True)
    if log is None:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    with log.open("w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return ""


def wer(model: Path, manifest: Path) -> float:
    return json.loads(cli("evaluate", "--model", str(model), "--manifest", str(manifest), "--json"))["wer"]


def main() -> None:
    from transduce.data.digits import prepare_digits
    from transduce.data.manifest import read_manifest, write_manifest

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "work" / "data" / "digits", help="transduce data digits folder")
    p.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared" / "data" / "fsdd", help="FSDD folder")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "digits-hybrid-streaming")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--corrections", type=int, default=50)
    p.add_argument("--others", type=int, default=300, help="utterances of the other speakers")
    p.add_argument("--updates", type=int, default=60, help="fine-tuning updates (transduce data feedback --updates)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="passed to transduce train")
    args = p.parse_args()
    out, model = args.out.resolve(), args.model.resolve()
    started = time.perf_counter()
    dev = read_manifest(args.data / "dev.jsonl")
    random.Random(1).shuffle(dev)
    fixed, rest = dev[:args.corrections], dev[args.corrections:]
    write_manifest(out / "speaker-rest.jsonl", rest)
    if not (out / "others" / "dev.jsonl").is_file():
        prepare_digits(out / "others", source=args.fsdd, seed=2, dev_speakers=OTHERS,
                       utterances={"train": 1, "dev": args.others}, log=lambda _: None)
    wrong = post_corrections(model, fixed, out / "served")
    print(f"{len(fixed)} corrections posted ({wrong} outputs were wrong), speaker {dev[0].speaker}", flush=True)
    cli("data", "feedback", "--db", str(out / "served" / "feedback.sqlite"), "--out", str(out / "feedback"),
        "--model-dir", str(model), "--updates", str(args.updates))
    recipe = out / "feedback" / model.name / "finetune.yaml"
    sets = [a for o in args.overrides for a in ("--set", o)]
    train_started = time.perf_counter()
    cli("train", str(recipe), "--out", str(out / "run"), "--no-progress", *sets, log=out / "train.log")
    train_seconds = time.perf_counter() - train_started
    rows = []
    for name, manifest in (("speaker, other utterances", out / "speaker-rest.jsonl"),
                           ("other speakers", out / "others" / "dev.jsonl")):
        before, after = wer(model, manifest), wer(out / "run" / "model", manifest)
        rows.append((name, len(read_manifest(manifest)), before, after))
    print(f"fine-tuning: {train_seconds:.0f} s ({recipe})")
    print("| set | utterances | WER before | WER after |\n|---|---|---|---|")
    for name, n, before, after in rows:
        print(f"| {name} | {n} | {before:.2f} | {after:.2f} |")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
