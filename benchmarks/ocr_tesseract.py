"""CER/WER and speed of our OCR model against the Tesseract OCR engine (Debian tesseract-ocr 5, eng data) on the
same text-line images, side by side in one run.

Run (trained OCR model, validation fonts of ``transduce data text-images``):
    nice -n 10 .venv/bin/python benchmarks/ocr_tesseract.py --model work/runs/multi30k-ocr/model \\
        --manifest work/data/text-images/dev.jsonl
Quick check:
    nice -n 10 .venv/bin/python benchmarks/ocr_tesseract.py --model DIR --manifest M.jsonl --limit 20

Both systems read the same image files (the first --limit lines of the manifest, default 200; 0 = all), and both
timings include reading them. Our model transcribes in batches of --batch-size with --threads torch threads,
greedy (and with --beam B > 1 also a CTC prefix beam row), after a warm-up on the first images; Tesseract runs
once over a list file of all images (one process, its model loaded once; ``--psm 7``: each image is one text
line; ``--oem 1``: the LSTM engine; single-threaded, OMP_THREAD_LIMIT=1), its pages split at form feeds.
--tesseract-scale S feeds Tesseract copies upscaled S times (it prefers taller glyphs than our 32-pixel lines;
the copies are made before its clock starts). Every hypothesis is normalized as the manifests' ``text``
(lowercase, no punctuation: ``captions.normalize_text``) before CER/WER. Tesseract's row is the baseline of the
ratio column; the target of issue 29 is a CER at most half of Tesseract's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from transduce.data.captions import normalize_text  # noqa: E402
from transduce.data.images import ImageLine, read_image_manifest  # noqa: E402
from transduce.metrics.wer import cer, wer  # noqa: E402


@dataclass
class Row:
    name: str
    hyps: list[str]
    seconds: float


def parse_tesseract(stdout: str, count: int) -> list[str]:
    """Tesseract's stdout for a list of ``count`` images -> one normalized text per image. Pages are separated by
    form feeds (Tesseract 5.3 ends every page but the last with one; a trailing one is accepted too); an image
    without text gives an empty page; the lines of a page are joined."""
    pages = stdout.split("\f")
    if len(pages) == count + 1 and not pages[-1].strip():
        pages = pages[:-1]  # a form feed after the last page
    if len(pages) != count:
        raise ValueError(f"tesseract printed {len(pages)} pages for {count} images")
    return [normalize_text(" ".join(page.split())) for page in pages]


def run_tesseract(paths: list[Path], binary: str = "tesseract", psm: int = 7) -> tuple[list[str], float]:
    """Texts of ``paths`` from one Tesseract process over a list file, and its wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "images.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in paths))
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        started = time.perf_counter()
        done = subprocess.run([binary, str(listing), "stdout", "--psm", str(psm), "--oem", "1", "-l", "eng"],
                              capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{binary} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse_tesseract(done.stdout, len(paths)), seconds


def scaled_copies(lines: list[ImageLine], scale: float, folder: Path) -> list[Path]:
    """The images (scale 1) or PNG copies upscaled ``scale`` times in ``folder``."""
    if scale == 1:
        return [x.image for x in lines]
    from PIL import Image

    paths = []
    for x in lines:
        with Image.open(x.image) as image:
            size = (round(image.width * scale), round(image.height * scale))
            paths.append(folder / f"{x.id}.png")
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(paths[-1])
    return paths


def ours(model: str, paths: list[Path], beam: int, batch_size: int) -> list[Row]:
    from transduce.read_images import ImageRecognizer

    recognizer = ImageRecognizer.load(model)
    recognizer.transcribe(paths[:4], beam=1)  # warm-up
    rows = []
    for width in sorted({1, beam}):
        started = time.perf_counter()
        hyps = recognizer.transcribe(paths, beam=width, batch_size=batch_size, mode="ctc")
        rows.append(Row(f"ours, CTC {'greedy' if width == 1 else f'beam {width}'}", [normalize_text(h) for h in hyps],
                        time.perf_counter() - started))
    return rows


def print_table(rows: list[Row], refs: list[str], baseline: Row | None) -> None:
    base = cer(baseline.hyps, refs) if baseline is not None else None
    print(f"{'system':<24} {'CER %':>7} {'WER %':>7} {'images/s':>9} {'CER / tesseract':>16}")
    for row in rows:
        c = cer(row.hyps, refs)
        ratio = f"{c / base:.2f}x" if base else "-"
        print(f"{row.name:<24} {c:>7.2f} {wer(row.hyps, refs):>7.2f} {len(refs) / row.seconds:>9.1f} {ratio:>16}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="OCR model folder (task ocr)")
    p.add_argument("--manifest", required=True, help="image manifest (validation fonts)")
    p.add_argument("--limit", type=int, default=200, help="first N images (0 = all)")
    p.add_argument("--beam", type=int, default=1, help="also a CTC prefix beam row of this width (1 = greedy only)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads for our model")
    p.add_argument("--tesseract", default="tesseract", help="the tesseract binary")
    p.add_argument("--tesseract-scale", type=float, default=1.0, help="upscale the images Tesseract reads")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    lines = read_image_manifest(args.manifest)
    lines = lines[: args.limit] if args.limit else lines
    refs = [x.text for x in lines]
    rows = ours(args.model, [x.image for x in lines], args.beam, args.batch_size)
    tess = None
    if shutil.which(args.tesseract) is None:
        print(f"note: {args.tesseract} not found (apt-get install tesseract-ocr tesseract-ocr-eng); ours only")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            hyps, seconds = run_tesseract(scaled_copies(lines, args.tesseract_scale, Path(tmp)), args.tesseract)
        scale = f", x{args.tesseract_scale:g}" if args.tesseract_scale != 1 else ""
        tess = Row(f"tesseract 5 (psm 7{scale})", hyps, seconds)
        rows.append(tess)
    print(f"{len(lines)} images of {args.manifest}; {machine_line(args.threads)}")
    print_table(rows, refs, tess)


if __name__ == "__main__":
    main()
