"""Speech translation data: English speech with its transcript and its translations.

A manifest line is a speech manifest line (:mod:`transduce.data.manifest`) plus the targets::

    {"id", "audio", "duration", "text", "speaker", "translation": {"de": ..., "fr": ..., "cs": ...}}

optionally with ``"text_original"``: the English sentence before ASR-style normalization (cased and
punctuated, as a text MT model reads it). A reader asks for the languages it needs; a line without one of
them is an error naming the file and line.

:func:`prepare_speech_translation` makes the Multi30k recipe: the English captions spoken by the TTS voices
of ``transduce data captions`` (same voices, same voice-disjoint splits, same sentence choice for a seed:
:func:`transduce.data.captions.prepare_captions` writes the audio), with the German, French and Czech lines
of the same Multi30k rows as targets. The RESERVED voices are never used (captions refuses them).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transduce.data.captions import DEV_VOICES, TRAIN_VOICES, CaptionsReport, prepare_captions
from transduce.data.manifest import Utterance, read_manifest, write_manifest
from transduce.data.text import DataError, iter_lines, read_lines

LANGS = ("de", "fr", "cs")
"""Multi30k's target languages, in the default order (the first is a multilingual model's default)."""


@dataclass(frozen=True)
class STUtterance:
    """One utterance of a speech translation manifest."""

    utt: Utterance
    translation: dict[str, str]
    """{language: target sentence}; read with the requested languages only."""
    text_original: str = ""
    """The English sentence before normalization ('' when the manifest has none)."""
    translation_kd: dict[str, str] = field(default_factory=dict)
    """{language: a teacher translation model's translation of the sentence} (sequence-level knowledge
    distillation, ``transduce data st-kd``); {} when the manifest has none."""


def parse_langs(text: str | Sequence[str], where: str = "--langs") -> tuple[str, ...]:
    """``de,fr,cs`` -> ('de', 'fr', 'cs'): non-empty, no repeats; a ValueError naming ``where`` otherwise."""
    langs = tuple(x.strip() for x in text.split(",")) if isinstance(text, str) else tuple(text)
    if not langs or not all(langs):
        raise ValueError(f"{where}: expected comma-separated language codes like de,fr,cs, got {text!r}")
    if len(set(langs)) != len(langs):
        raise ValueError(f"{where}: a language is named twice in {text!r}")
    return langs


def _translation(obj: dict, langs: Sequence[str] | None, where: str, key: str = "translation") -> dict[str, str]:
    """The ``key`` object's ``langs`` sentences (None: all of them)."""
    found = obj.get(key)
    if not isinstance(found, dict):
        raise DataError(f"{where}: missing key {key!r} (a {{language: sentence}} object)")
    for lang in found if langs is None else langs:
        if lang not in found:
            has = ", ".join(sorted(found)) or "none"
            raise DataError(f"{where}: no {lang!r} translation (this line has: {has})")
        if not isinstance(found[lang], str) or not found[lang].strip():
            raise DataError(f"{where}: the {lang!r} {key} must be a non-empty string")
    return {lang: found[lang] for lang in (found if langs is None else langs)}


def read_st_manifest(path: str | Path, langs: Sequence[str] | None, *, check_audio: bool = False
                     ) -> list[STUtterance]:
    """The utterances of a speech translation manifest with their ``langs`` translations (None: every line's
    own), in file order. The speech keys are checked as :func:`read_manifest` checks them; ``langs`` must all be
    on every line. Teacher translations ("translation_kd") are read when a line has them."""
    path = Path(path)
    utts = read_manifest(path, check_audio=check_audio)  # the speech keys, ids, the file itself
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    rows = []
    for number, line in enumerate(iter_lines(raw, str(path)), start=1):
        if line.strip():
            obj = json.loads(line)  # read_manifest parsed every line already
            rows.append((obj, f"{path}:{number}"))
    out = []
    for utt, (obj, where) in zip(utts, rows, strict=True):
        original = obj.get("text_original", "")
        if not isinstance(original, str):
            raise DataError(f"{where}: key 'text_original' has type {type(original).__name__}, expected string")
        kd = _translation(obj, None, where, "translation_kd") if "translation_kd" in obj else {}
        out.append(STUtterance(utt, _translation(obj, langs, where), original, kd))
    return out


def write_st_manifest(path: str | Path, utts: Iterable[STUtterance]) -> None:
    """Write ``utts`` as JSON lines (``write_manifest``'s rows with "translation" and, when known,
    "text_original"), audio relative to the manifest's folder; atomic."""
    rows = list(utts)
    extras = [{"translation": dict(st.translation), **({"text_original": st.text_original} if st.text_original else {}),
               **({"translation_kd": dict(st.translation_kd)} if st.translation_kd else {})} for st in rows]
    write_manifest(path, [st.utt for st in rows], extras)


def _multi30k_file(folder: Path, split: str, lang: str) -> Path:
    gz = folder / f"{split}.{lang}.gz"
    return gz if gz.is_file() else folder / f"{split}.{lang}"


def _source(source: str | Path | None, langs: Sequence[str]) -> Path:
    """The Multi30k folder: ``source``, or a download (English and ``langs``) into the user's cache."""
    if source is not None:
        return Path(source)
    from transduce.data.multi30k import prepare_multi30k

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transduce" / "multi30k"
    missing = [lang for lang in ("en", *langs) if not (cache / f"val.{lang}").is_file()]
    if missing:
        prepare_multi30k(cache, langs=tuple(missing))
    return cache


def _line_number(utt_id: str, manifest: Path) -> int:
    """``dev-00042`` -> 42: captions ids carry the 1-based line of the Multi30k split they were read from."""
    try:
        return int(utt_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise DataError(f"{manifest}: id {utt_id!r} does not end in a Multi30k line number") from None


def _add_translations(manifest: Path, folder: Path, split: str, langs: Sequence[str]) -> int:
    """Rewrite a captions manifest (from Multi30k ``split``) as a speech translation manifest; its size."""
    english = read_lines(_multi30k_file(folder, split, "en"))
    targets = {lang: read_lines(_multi30k_file(folder, split, lang)) for lang in langs}
    for lang, lines in targets.items():
        if len(lines) != len(english):
            raise DataError(f"{_multi30k_file(folder, split, lang)} has {len(lines)} lines but "
                            f"{_multi30k_file(folder, split, 'en')} has {len(english)}: the files must be line-aligned")
    utts = read_manifest(manifest)
    rows = []
    for utt in utts:
        line = _line_number(utt.id, manifest)
        rows.append(STUtterance(utt, {lang: lines[line - 1] for lang, lines in targets.items()}, english[line - 1]))
    write_st_manifest(manifest, rows)
    return len(rows)


def prepare_speech_translation(
    out: str | Path, *, source: str | Path | None = None, langs: Sequence[str] = LANGS, seed: int = 1,
    train_sentences: int = 10000, dev_sentences: int = 500, train_voices: Sequence[str] = TRAIN_VOICES,
    dev_voices: Sequence[str] = DEV_VOICES, workers: int = 1, log: Callable[[str], None] = print,
) -> CaptionsReport:
    """Write ``out/{train,dev}.jsonl`` (a split of 0 sentences is left out) and ``out/audio/{split}/ID.wav``:
    Multi30k train (val for dev) captions, each spoken by one random voice of its split, with their ``langs``
    translations. ``source`` holds the Multi30k files (default: download)."""
    langs = parse_langs(langs, "langs")
    folder = _source(source, langs)
    for lang in langs:
        for split in ("train", "val"):
            if not _multi30k_file(folder, split, lang).is_file():
                raise DataError(f"{folder}: no {split}.{lang}[.gz] (Multi30k has de, fr and cs targets)")
    out = Path(out)
    report = prepare_captions(out, source=folder, seed=seed, train_voices=train_voices, dev_voices=dev_voices,
                              train_sentences=train_sentences, dev_sentences=dev_sentences, workers=workers, log=log)
    for split, multi30k_split in (("train", "train"), ("dev", "val")):
        manifest = out / f"{split}.jsonl"
        if manifest.stat().st_size == 0:  # 0 sentences asked for: no manifest rather than an unreadable one
            manifest.unlink()
            continue
        count = _add_translations(manifest, folder, multi30k_split, langs)
        log(f"speech translation {split}: {count} utterances with {', '.join(langs)} targets in {manifest}")
    return report
