"""Text-line images: reading them as pixel columns, and their JSON-lines manifests.

A manifest line is ``{"id", "image", "width", "text", "font"}`` plus optional ``"text_original"`` (the line as
written, before normalization) and ``"translation": {"de": ..., "fr": ..., "cs": ...}``. ``image`` is relative to
the manifest's folder; ``width`` is the image's width in pixels at the dataset's height (images are stored
height-normalized); ``font`` is ``FAMILY/STYLE`` for rendered lines (splits are disjoint by family) and
``import/FOLDER`` for imported ones.

A line image is read as a sequence of pixel columns, like feature frames: (W, H) grayscale values in [0, 1],
columns left to right. Bad files (missing, empty, truncated, not an image, too large) are ``ImageError``\\ s whose
one-line message names the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from transduce.data.batching import pad
from transduce.data.manifest import manifest_paths, read_jsonl_manifest, write_lines_atomic
from transduce.data.speech_batching import SpeechBatch, batch_seed, pad_features
from transduce.data.text import DataError
from transduce.data.tokenizer import PAD

MAX_PIXELS = 40_000_000
"""Larger images are refused before decoding (a photo of one text line needs far fewer)."""
MAX_WIDTH = 8192
"""Widest line accepted once scaled to the model's height (about 500 characters at height 32)."""
_REQUIRED: dict[str, type] = {"id": str, "image": str, "width": int, "text": str, "font": str}


class ImageError(DataError):
    """An image file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ImageLine:
    """One line of an image manifest."""

    id: str
    image: Path
    """Image file; absolute once read from a manifest."""
    width: int
    """Pixels at the dataset's height."""
    text: str
    """Normalized transcript (as ``captions.normalize_text``)."""
    font: str
    """``FAMILY/STYLE`` (rendered) or ``import/FOLDER``."""
    text_original: str = ""
    translation: dict[str, str] = field(default_factory=dict)


def open_image(path: str | Path) -> Image.Image:
    """The decoded image in RGB; an ImageError naming ``path`` if it is missing, empty, not an image, truncated or
    over ``MAX_PIXELS``."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {'a folder, not an image' if path.is_dir() else 'no such file'}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: {width}x{height} pixels is too large (at most {MAX_PIXELS:,} pixels)")
            if width < 1 or height < 1:
                raise ImageError(f"{path}: zero-size image ({width}x{height})")
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (unknown format)") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:  # Pillow: truncated data, broken chunks, bad headers
        why = str(err).splitlines()[0] if str(err) else "corrupt"
        raise ImageError(f"{path}: cannot decode image ({why})") from None


def to_height(image: Image.Image, height: int, where: str | Path = "image") -> Image.Image:
    """``image`` scaled to ``height`` pixels, keeping its aspect ratio (at least 1 pixel wide)."""
    if image.height == height:
        width = image.width
    else:
        width = max(1, round(image.width * height / image.height))
    if width > MAX_WIDTH:
        raise ImageError(f"{where}: {width} pixels wide at height {height} is too wide for one line "
                         f"(at most {MAX_WIDTH}); crop it to a line of text")
    return image if image.height == height else image.resize((width, height), Image.Resampling.BILINEAR)


def columns(image: Image.Image) -> torch.Tensor:
    """An image -> (W, H) float grayscale columns in [0, 1] (column 0 is the leftmost)."""
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0  # (H, W)
    return torch.from_numpy(np.ascontiguousarray(gray.T))  # (W, H)


def load_line_image(path: str | Path, height: int) -> torch.Tensor:
    """A line image file -> (W, H) columns at ``height`` pixels (see ``columns``); ImageError naming the file."""
    return columns(to_height(open_image(path), height, path))


def _parse(line: str, where: str, folder: Path) -> ImageLine:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key, kind in _REQUIRED.items():
        if key not in obj:
            raise DataError(f"{where}: missing key {key!r} (required: {', '.join(_REQUIRED)})")
        if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
            raise DataError(f"{where}: key {key!r} has type {type(obj[key]).__name__}, expected {kind.__name__}")
    if obj["width"] < 1 or not obj["id"] or not obj["image"]:
        raise DataError(f"{where}: 'width' must be positive and 'id', 'image' non-empty")
    translation = obj.get("translation", {})
    if not isinstance(translation, dict) or not all(isinstance(v, str) for v in translation.values()):
        raise DataError(f"{where}: 'translation' must map languages to sentences")
    image = Path(os.path.normpath(folder / obj["image"]))
    return ImageLine(obj["id"], image, obj["width"], obj["text"], obj["font"], str(obj.get("text_original", "")),
                     translation)


def read_image_manifest(path: str | Path, *, check_images: bool = False, height: int = 0) -> list[ImageLine]:
    """All lines of an image manifest; with ``check_images`` each image is opened (and checked to fit at
    ``height``), a bad one an error naming the manifest line and the file."""
    def check(item: ImageLine) -> None:
        image = open_image(item.image)
        to_height(image, height or image.height, item.image)

    return read_jsonl_manifest(path, _parse, check if check_images else None)


def read_image_manifests(folder: str | Path, names: str) -> list[ImageLine]:
    """The lines of one or more comma-separated manifests relative to ``folder``, in order."""
    return [item for path in manifest_paths(folder, names) for item in read_image_manifest(path)]


def write_image_manifest(path: str | Path, lines: Iterable[ImageLine]) -> None:
    """Write ``lines`` as JSON lines, image paths relative to the manifest; atomic (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.resolve().parent
    rows = []
    for item in lines:
        image = Path(os.path.relpath(item.image.resolve(), folder)).as_posix()
        obj: dict[str, object] = {"id": item.id, "image": image, "width": item.width, "text": item.text,
                                  "font": item.font}
        if item.text_original:
            obj["text_original"] = item.text_original
        if item.translation:
            obj["translation"] = item.translation
        rows.append(json.dumps(obj, ensure_ascii=False) + "\n")
    write_lines_atomic(path, rows)


class ImageCollator:
    """Indices -> a ``SpeechBatch`` of line images: feats (B, W, H) pixel columns zero-padded on the right, feat_lens
    the widths; with ``width_jitter`` > 0 each image is stretched along its width by a random factor in
    [1 - jitter, 1 + jitter] (seeded by run seed, epoch and batch, so any number of workers gives the same
    batches). Picklable for worker processes."""

    def __init__(self, lines: Sequence[ImageLine], targets: Sequence[list[int]], *, height: int,
                 width_jitter: float = 0.0, seed: int = 0, epoch: int = 0) -> None:
        self.utts, self.targets, self.height = lines, targets, height
        self.width_jitter, self.seed, self.epoch = width_jitter, seed, epoch

    def image(self, i: int, generator: torch.Generator | None) -> torch.Tensor:
        x = load_line_image(self.utts[i].image, self.height)  # (W, H)
        if generator is None or self.width_jitter <= 0:
            return x
        scale = 1.0 + self.width_jitter * (2 * float(torch.rand((), generator=generator)) - 1)
        width = max(1, round(x.size(0) * scale))
        return F.interpolate(x.T[None, None], size=(self.height, width), mode="bilinear",
                             align_corners=False)[0, 0].T.contiguous()  # (1, 1, H, W) -> (W', H)

    def __call__(self, indices: Sequence[int]) -> SpeechBatch:
        generator = None
        if self.width_jitter > 0:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, self.epoch, indices))
        feats, feat_lens = pad_features([self.image(i, generator) for i in indices])
        targets = [self.targets[i] for i in indices]
        return SpeechBatch(feats=feats, feat_lens=feat_lens, targets=pad(targets, PAD),
                           target_lens=torch.tensor([len(t) for t in targets]), indices=torch.as_tensor(list(indices)))
