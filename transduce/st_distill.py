"""Sequence-level knowledge distillation for speech translation (Kim and Rush 2016): a text translation model (the
teacher) translates each manifest line's English sentence, and its translations become extra training targets of
an end-to-end model (``data.kd: true``; the manifest key ``translation_kd``, one entry per language).

The teacher reads what it was trained on: the cased, punctuated ``text_original`` of a line when the manifest has
it (``transduce data speech-translation`` writes it), else the normalized transcript.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from transduce.data.speech_translation import read_st_manifest, write_st_manifest
from transduce.translate import Translator


def distill_manifest(manifest: str | Path, out: str | Path, teacher: Translator, *, lang: str | None = None,
                     log: Callable[[str], None] = print, **overrides: object) -> int:
    """Write ``out``: ``manifest``'s lines with the teacher's translation of each line's English sentence under
    "translation_kd" -> ``lang`` (default: the teacher's target language; other languages' entries are kept).
    ``overrides`` are the teacher's DecodeConfig fields. ``out`` may be ``manifest``. Returns the lines written."""
    lang = lang or teacher.config.data.tgt_lang
    rows = read_st_manifest(manifest, None)
    sources = [u.text_original or u.utt.text for u in rows]
    originals = sum(bool(u.text_original) for u in rows)
    hyps = teacher.translate(sources, **overrides)
    write_st_manifest(out, [replace(u, translation_kd={**u.translation_kd, lang: h}) if h.strip() else u
                            for u, h in zip(rows, hyps, strict=True)])  # an empty translation is no target
    log(f"{out}: {len(rows)} {lang} teacher translations ({originals} of the original English sentences, "
        f"{len(rows) - originals} of normalized transcripts)")
    return len(rows)
