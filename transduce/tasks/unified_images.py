"""The unified task's image data: text-line image manifests (``transduce data text-images``:
``{"id", "image", "width", "text", "font", "translation": {...}}``) give an OCR example (image -> its "text" in the
source language, ``<transcribe> <en>``) and one image translation example per language (``<translate> <xx>``).
"""

from __future__ import annotations

from transduce.data.images import ImageCollator, ImageLine
from transduce.data.tokenizer import Tokenizer
from transduce.data.unified_batching import Example
from transduce.models.unified import Tags
from transduce.tasks.unified_data import UnifiedDataConfig


def image_examples(data: UnifiedDataConfig, lines: list[ImageLine], tok: Tokenizer, tags: Tags, *, subsampling: int,
                   limit: int, per_task: int = 0) -> list[Example]:
    """OCR examples, then image translation examples grouped by language (lines without that language's
    translation left out); targets over ``limit`` pieces left out; ``per_task`` keeps the first ones of each
    (task, language). Cost: image columns / subsampling, or the target + tags if longer."""
    tasks = data.tasks
    jobs = [("ocr", data.src_lang, "transcribe")] if "ocr" in tasks else []
    jobs += [("imt", lang, "translate") for lang in data.langs] if "imt" in tasks else []
    out: list[Example] = []
    for job, lang, tag in (j for j in jobs if f"{j[0]}:{j[1]}" not in data.without):
        chosen = [x for x in lines if job == "ocr" or lang in x.translation]
        texts = [x.text if job == "ocr" else x.translation[lang] for x in chosen]
        kept = 0
        for line, text, target in zip(chosen, texts, tok.encode(texts), strict=True):
            if not 0 < len(target) <= limit or (per_task and kept == per_task):
                continue
            cost = max(line.width // subsampling, len(target) + 2)
            out.append(Example(tasks.index(job), None, [], [], tuple(tags.prefix(tag, lang)), target, lang, text,
                               cost, image=line))
            kept += 1
    return out


def image_collator(examples: list[Example], height: int, *, jitter: float, seed: int, epoch: int
                   ) -> ImageCollator | None:
    """Reads the image examples of ``examples`` (in their order) at ``height``; None when there are none."""
    shown = [e for e in examples if e.image is not None]
    if not shown:
        return None
    return ImageCollator([e.image for e in shown], [e.target for e in shown],  # type: ignore[misc]
                         height=height, width_jitter=jitter, seed=seed, epoch=epoch)
