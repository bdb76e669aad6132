"""Multi30k English captions rendered as photos of text lines (``transduce data text-images``), and imported
folders of real line images (``transduce data text-images-import``).

Each caption is drawn with Pillow in a random font of its split (Debian fonts-dejavu-core, fonts-liberation,
fonts-freefont-ttf, fonts-noto-core), size and colours, on a textured background, rotated by a few degrees,
blurred, noised and JPEG-compressed, then scaled to a fixed height (width variable). The image shows the caption
as written (cased, punctuated: ``text_original``); ``text`` is normalized as the speech captions
(``captions.normalize_text``), so OCR and ASR transcripts are alike and one cascade serves both.

Splits are disjoint by font FAMILY, and by look: families that are metric clones of each other (Liberation Sans
and FreeSans are both Helvetica/Arial shapes) count as one, as the captions count kal/kal16 as one speaker.
RESERVED families (Noto Serif) are never used for training or dev; only :func:`prepare_text_images` with
``heldout=True`` renders them, into a folder of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from transduce.data.captions import normalize_text
from transduce.data.images import ImageLine, open_image, to_height, write_image_manifest
from transduce.data.speech_translation import LANGS
from transduce.data.text import DataError, read_lines

FONT_DIR = Path("/usr/share/fonts/truetype")
FAMILIES: dict[str, tuple[str, ...]] = {
    "dejavu-sans": ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSans-Oblique.ttf",
                    "dejavu/DejaVuSansCondensed.ttf", "dejavu/DejaVuSansCondensed-Bold.ttf"),
    "dejavu-serif": ("dejavu/DejaVuSerif.ttf", "dejavu/DejaVuSerif-Bold.ttf", "dejavu/DejaVuSerif-Italic.ttf",
                     "dejavu/DejaVuSerifCondensed.ttf"),
    "dejavu-mono": ("dejavu/DejaVuSansMono.ttf", "dejavu/DejaVuSansMono-Bold.ttf"),
    "liberation-sans": ("liberation/LiberationSans-Regular.ttf", "liberation/LiberationSans-Bold.ttf",
                        "liberation/LiberationSans-Italic.ttf", "liberation/LiberationSansNarrow-Regular.ttf"),
    "freesans": ("freefont/FreeSans.ttf", "freefont/FreeSansBold.ttf", "freefont/FreeSansOblique.ttf"),
    "liberation-mono": ("liberation/LiberationMono-Regular.ttf", "liberation/LiberationMono-Bold.ttf"),
    "freemono": ("freefont/FreeMono.ttf", "freefont/FreeMonoBold.ttf"),
    "liberation-serif": ("liberation/LiberationSerif-Regular.ttf", "liberation/LiberationSerif-Bold.ttf",
                         "liberation/LiberationSerif-Italic.ttf"),
    "freeserif": ("freefont/FreeSerif.ttf", "freefont/FreeSerifBold.ttf", "freefont/FreeSerifItalic.ttf"),
    "noto-sans": ("noto/NotoSans-Regular.ttf", "noto/NotoSans-Bold.ttf", "noto/NotoSans-Italic.ttf"),
    "noto-serif": ("noto/NotoSerif-Regular.ttf", "noto/NotoSerif-Bold.ttf", "noto/NotoSerif-Italic.ttf"),
}
"""Font family -> its style files under ``FONT_DIR``."""
LOOKS = {"freesans": "liberation-sans", "freemono": "liberation-mono", "freeserif": "liberation-serif"}
"""Families drawn like another one (metric clones): a split takes both or neither."""
TRAIN_FAMILIES = ("dejavu-sans", "dejavu-serif", "dejavu-mono", "liberation-sans", "freesans", "liberation-mono",
                  "freemono", "noto-sans")
DEV_FAMILIES = ("liberation-serif", "freeserif")  # a Times-like serif unseen in training
RESERVED_FAMILIES = ("noto-serif",)
DIGIT_WORDS = {"de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
               "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf")}
INSTALL = "apt-get install fonts-dejavu-core fonts-liberation fonts-freefont-ttf fonts-noto-core (make system-deps)"


@dataclass(frozen=True)
class RenderItem:
    """One caption to draw: what, in which font file, with which random seed, to which file."""

    id: str
    text_original: str
    font: str
    """``FAMILY/STYLE``."""
    seed: tuple[int, ...]
    path: Path


def look(family: str) -> str:
    return LOOKS.get(family, family)


def font_file(font: str) -> Path:
    """``FAMILY/STYLE`` -> the font file; a DataError naming the family and the install command if missing."""
    family, _, style = font.partition("/")
    path = next((FONT_DIR / f for f in FAMILIES.get(family, ()) if Path(f).stem == style), None)
    if path is None:
        raise DataError(f"font {font!r}: unknown (families: {', '.join(FAMILIES)})")
    if not path.is_file():
        raise DataError(f"font {font!r}: {path} is missing; install the fonts: {INSTALL}")
    return path


def check_families(train: Sequence[str], dev: Sequence[str], *, heldout: bool = False) -> None:
    """Known families, train and dev disjoint by look, RESERVED ones only ``heldout``; ValueError otherwise."""
    for family in (*train, *dev):
        if family not in FAMILIES:
            raise ValueError(f"font family {family!r}: unknown (known: {', '.join(FAMILIES)})")
        if family in RESERVED_FAMILIES and not heldout:
            raise ValueError(f"font family {family!r} is RESERVED for held-out evaluation and never used for train "
                             "or dev; render a held-out set with heldout=True (--heldout)")
    shared = sorted({look(f) for f in train} & {look(f) for f in dev})
    if shared:
        raise ValueError(f"train and dev font families must be disjoint, both draw {', '.join(shared)} "
                         f"(clones count as one: {', '.join(f'{a}={b}' for a, b in LOOKS.items())})")


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(background, ink) RGB with a luminance difference of at least 90 (dark on light mostly, sometimes light on
    dark)."""
    while True:
        bg, ink = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
        if rng.random() < 0.8:
            bg, ink = 255 - (255 - bg) // 4, ink // 2  # light paper, dark ink
        luma = np.array([0.299, 0.587, 0.114])
        if abs(float(luma @ bg) - float(luma @ ink)) >= 90:
            return tuple(int(c) for c in bg), tuple(int(c) for c in ink)


def _background(size: tuple[int, int], colour: tuple[int, ...], rng: np.random.Generator) -> Image.Image:
    """A textured background: the colour, a linear gradient, low-frequency blotches and a few faint lines."""
    w, h = size
    base = np.array(colour, np.float32)[None, None, :] * np.ones((h, w, 1), np.float32)  # (H, W, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(w, h)  # (H, W) in about [-1, 1]
    base += rng.uniform(-30, 30) * ramp[..., None]
    coarse = rng.normal(0, rng.uniform(2, 12), size=(max(2, h // 8), max(2, w // 8), 1)).astype(np.float32)
    blotch = np.asarray(Image.fromarray(coarse[..., 0]).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    image = Image.fromarray(np.clip(base + blotch[..., None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        shade = tuple(int(c) for c in np.clip(np.array(colour) + rng.integers(-40, 41), 0, 255))
        y = int(rng.integers(0, h))
        draw.line([(0, y), (w, y + int(rng.integers(-h // 4, h // 4 + 1)))], fill=shade, width=1)
    return image


def render_line(text: str, font: Path, height: int, seed: Sequence[int]) -> Image.Image:
    """``text`` drawn in ``font`` with the random look of ``seed``, scaled to ``height`` pixels (RGB)."""
    rng = np.random.default_rng(list(seed))
    size = int(rng.integers(24, 49))
    face = ImageFont.truetype(str(font), size)
    left, top, right, bottom = (int(v) for v in face.getbbox(text))
    pad_x, pad_y = int(rng.integers(2, size // 2 + 3)), int(rng.integers(2, size // 3 + 3))
    canvas = (right - left + 2 * pad_x, bottom - top + 2 * pad_y)
    bg, ink = _colours(rng)
    image = _background(canvas, bg, rng)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=face, fill=ink)
    # up to 3 degrees, less for long lines: the line drifts at most 30% of its height from end to end
    limit = min(3.0, math.degrees(math.atan(0.3 * canvas[1] / canvas[0])))
    angle = float(rng.uniform(-limit, limit))
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=bg)
    image = to_height(image, height)
    blur = float(rng.choice([0.0, rng.uniform(0.2, 0.9)]))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    noise = rng.normal(0, rng.uniform(0, 10), size=(image.height, image.width, 1))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def _render(item: RenderItem, height: int) -> int:
    """Draw and save one item as JPEG (random quality); its width."""
    image = render_line(item.text_original, font_file(item.font), height, item.seed)
    quality = int(np.random.default_rng([*item.seed, 7]).integers(35, 96))
    item.path.parent.mkdir(parents=True, exist_ok=True)
    image.save(item.path, format="JPEG", quality=quality)
    return image.width


def _styles(families: Sequence[str]) -> list[str]:
    return [f"{family}/{Path(f).stem}" for family in families for f in FAMILIES[family]]


def _plan(split: str, lines: list[str], count: int, families: Sequence[str], seed: int, out: Path,
          exclude: frozenset[str] = frozenset()) -> list[tuple[int, RenderItem]]:
    """``count`` random usable captions (in line order), each with a random font of ``families``:
    (line index, item)."""
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    pool = [i for i, line in enumerate(lines) if normalize_text(line) and normalize_text(line) not in exclude]
    if count > len(pool):
        raise DataError(f"{split}: asked for {count} sentences but only {len(pool)} are usable")
    fonts = _styles(families)
    plan = []
    for i in sorted(rng.choice(len(pool), size=count, replace=False)):
        index = pool[i]
        item_id = f"{split}-{index + 1:05d}"
        font = fonts[int(rng.integers(len(fonts)))]
        plan.append((index, RenderItem(item_id, lines[index].strip(), font, (seed, index, sum(map(ord, split))),
                                       out / "images" / split / f"{item_id}.jpg")))
    return plan


def _write_split(out: Path, split: str, plan: list[tuple[int, RenderItem]], translations: dict[str, list[str]],
                 height: int, workers: int) -> list[ImageLine]:
    for _, item in plan[:1]:
        font_file(item.font)  # missing fonts fail before any work
    items = [item for _, item in plan]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        widths = list(pool.map(_render, items, [height] * len(items), chunksize=16))
    lines = [ImageLine(item.id, item.path, width, normalize_text(item.text_original), item.font, item.text_original,
                       {lang: rows[index].strip() for lang, rows in translations.items()})
             for (index, item), width in zip(plan, widths, strict=True)]
    write_image_manifest(out / f"{split}.jsonl", lines)
    return lines


def _source_lines(source: Path, split: str) -> tuple[list[str], dict[str, list[str]]]:
    """English lines of a Multi30k split and the de/fr/cs lines that exist beside them."""
    def read(lang: str) -> list[str]:
        gz = source / f"{split}.{lang}.gz"
        return read_lines(gz if gz.is_file() else source / f"{split}.{lang}")

    english = read("en")
    others = {}
    for lang in LANGS:
        if (source / f"{split}.{lang}.gz").is_file() or (source / f"{split}.{lang}").is_file():
            others[lang] = read(lang)
            if len(others[lang]) != len(english):
                raise DataError(f"{source}/{split}.{lang}: {len(others[lang])} lines, but {len(english)} English")
    return english, others


def prepare_text_images(
    out: str | Path, source: str | Path, *, seed: int = 1, train_sentences: int = 10000, dev_sentences: int = 500,
    height: int = 32, workers: int = 1, train_families: Sequence[str] = TRAIN_FAMILIES,
    dev_families: Sequence[str] = DEV_FAMILIES, log: Callable[[str], None] = print,
) -> dict[str, list[ImageLine]]:
    """Write ``out/{train,dev}.jsonl`` and ``out/images/{split}/ID.jpg``: Multi30k train captions (val for dev, none
    of them also a train caption) in the split's font families; the lines of each split."""
    check_families(train_families, dev_families)
    out, source = Path(out), Path(source)
    val, val_tr = _source_lines(source, "val")
    train, train_tr = _source_lines(source, "train")
    held = frozenset(normalize_text(s) for s in val)
    result = {}
    for split, lines, tr, count, families, exclude in (
            ("train", train, train_tr, train_sentences, train_families, held),
            ("dev", val, val_tr, dev_sentences, dev_families, frozenset[str]())):
        plan = _plan(split, lines, count, families, seed, out, exclude)
        result[split] = _write_split(out, split, plan, tr, height, workers)
        log(f"text-images {split}: {len(plan)} lines, families {', '.join(families)}")
    return result


def prepare_heldout_images(out: str | Path, source: str | Path, *, heldout: bool = False, seed: int = 1,
                           sentences: int = 500, height: int = 32, workers: int = 1,
                           families: Sequence[str] = RESERVED_FAMILIES) -> list[ImageLine]:
    """A held-out ``out/test.jsonl`` from Multi30k test_2016_flickr in the RESERVED families. Evaluation only:
    requires ``heldout=True`` and refuses a folder that holds train or dev data."""
    if heldout is not True:
        raise ValueError("the held-out set uses the RESERVED font families; pass heldout=True to confirm it is "
                         "used for evaluation only, never for training or tuning")
    out = Path(out)
    for name in ("train.jsonl", "dev.jsonl"):
        if (out / name).exists():
            raise ValueError(f"{out / name} exists: write held-out images to their own folder")
    check_families(families, (), heldout=True)
    lines, tr = _source_lines(Path(source), "test_2016_flickr")
    return _write_split(out, "test", _plan("test", lines, sentences, families, seed, out), tr, height, workers)


def import_line_images(listing: str | Path, out: str | Path, *, height: int = 32) -> list[ImageLine]:
    """An ``image<TAB>text`` list (IAM/ICDAR style; images relative to the list's folder) -> ``out/NAME.jsonl``
    (NAME = the list's stem) with each image scaled to ``height`` and saved as PNG under ``out/images/NAME/``.
    Errors name the list line (and the image)."""
    listing, out = Path(listing), Path(out)
    name = listing.stem
    items: list[ImageLine] = []
    for number, row in enumerate(read_lines(listing), start=1):
        if not row.strip():
            continue
        where = f"{listing}:{number}"
        path, tab, text = row.partition("\t")
        if not tab or not path.strip() or not text.strip():
            raise DataError(f"{where}: expected IMAGE<TAB>TEXT, got {row[:60]!r}")
        source = listing.parent / path.strip()
        try:
            image = to_height(open_image(source), height, source)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        target = out / "images" / name / f"{number:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG")
        items.append(ImageLine(f"{name}-{number:06d}", target, image.width, normalize_text(text), f"import/{name}",
                               text.strip()))
    if not items:
        raise DataError(f"{listing}: no IMAGE<TAB>TEXT lines")
    write_image_manifest(out / f"{name}.jsonl", items)
    return items



def prepare_digit_images(out: str | Path, *, train: int = 300, dev: int = 40, seed: int = 1,
                         height: int = 32) -> dict[str, list[ImageLine]]:
    """A toy OCR and image translation set for smoke tests: random digit strings (3 to 6 digits) drawn with Pillow's
    built-in font (no system fonts needed) at random sizes and offsets, dark on light, with pixel noise, their
    "translations" the digits' German and French names; ``out/{train,dev}.jsonl``."""
    out = Path(out)
    result = {}
    for split, count in (("train", train), ("dev", dev)):
        rng = np.random.default_rng([seed, len(split)])
        lines = []
        for k in range(count):
            digits = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 7))))
            face = ImageFont.load_default(size=int(rng.integers(22, 29)))
            left, top, right, bottom = (int(v) for v in face.getbbox(digits))
            x, y = int(rng.integers(1, 6)), int(rng.integers(1, 5))
            shade = int(rng.integers(200, 256))
            image = Image.new("L", (right - left + x + int(rng.integers(1, 6)), bottom - top + y + 3), shade)
            ImageDraw.Draw(image).text((x - left, y - top), digits, font=face, fill=int(rng.integers(0, 60)))
            pixels = np.asarray(to_height(image, height), np.float32) + rng.normal(0, 8, size=(height, 1))
            path = out / "images" / split / f"{split}-{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            words = {lang: " ".join(names[int(d)] for d in digits) for lang, names in DIGIT_WORDS.items()}
            lines.append(ImageLine(f"{split}-{k:05d}", path, Image.open(path).width, digits, "builtin/toy",
                                   digits, words))
        write_image_manifest(out / f"{split}.jsonl", lines)
        result[split] = lines
    return result
