"""Import real speech translation corpora into speech translation manifests (:mod:`transduce.data.speech_translation`).

MuST-C style (one folder per split, as ``en-de/data/tst-COMMON``)::

    SPLIT/wav/TALK.wav                  long recordings
    SPLIT/txt/SPLIT.yaml                one segment per item: {wav, offset, duration, speaker_id}
    SPLIT/txt/SPLIT.en, SPLIT/txt/SPLIT.de   one line per segment, in the YAML's order

Segments are cut out of the recordings into ``OUT/audio/SPLIT/ID.wav`` (ID: ``TALK_N``, N counting the talk's
segments from 0, as fairseq's MuST-C preparation names them), because a manifest line is one whole file.

CoVoST style (Common Voice clips and a CoVoST TSV)::

    clips/CLIP.mp3                      one clip per utterance, read in place
    covost_v2.en_de.tsv (or SPLIT.tsv)  tab-separated with a header: path, sentence, translation,
                                        optional client_id (the speaker) and split

Either way the manifest's ``text`` is the English transcript as the corpus gives it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from transduce.data.audio import AudioError, audio_duration, write_wav
from transduce.data.manifest import Utterance
from transduce.data.speech_translation import STUtterance, write_st_manifest
from transduce.data.text import DataError, read_lines

_SEGMENT_KEYS: dict[str, type | tuple[type, ...]] = {"wav": str, "offset": (int, float), "duration": (int, float)}


def _segments(path: Path) -> list[dict]:
    """The items of a MuST-C segment YAML, each checked for wav/offset/duration."""
    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"{path}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: expected a non-empty YAML list of segments")
    for number, item in enumerate(items, start=1):
        where = f"{path}: segment {number}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a mapping with wav, offset and duration")
        for key, kind in _SEGMENT_KEYS.items():
            if not isinstance(item.get(key), kind) or isinstance(item.get(key), bool):
                raise DataError(f"{where}: key {key!r} is missing or not a {'string' if key == 'wav' else 'number'}")
        if item["offset"] < 0 or item["duration"] <= 0:
            raise DataError(f"{where}: offset must be >= 0 and duration > 0, got {item['offset']}, {item['duration']}")
    return items


def _cut(recording: Path, items: list[tuple[str, dict]], out: Path, where: str) -> list[float]:
    """Cut ``(id, segment)`` pairs out of one recording into ``out/ID.wav``; their durations in seconds."""
    try:
        with sf.SoundFile(str(recording)) as f:
            rate, frames = f.samplerate, f.frames
            durations = []
            for utt_id, seg in items:
                start, stop = round(seg["offset"] * rate), round((seg["offset"] + seg["duration"]) * rate)
                if stop > frames:
                    raise DataError(f"{where}: segment {utt_id} ends at {stop / rate:.2f} s but {recording} lasts "
                                    f"{frames / rate:.2f} s")
                f.seek(start)
                data = f.read(stop - start, dtype="float32", always_2d=True)  # (N, C)
                write_wav(out / f"{utt_id}.wav", torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))), rate)
                durations.append(len(data) / rate)
    except (sf.SoundFileError, RuntimeError) as err:
        raise DataError(f"{where}: cannot read {recording} ({str(err).splitlines()[0]})") from None
    return durations


def import_mustc(split_dir: str | Path, out: str | Path, *, tgt_lang: str, src_lang: str = "en") -> list[STUtterance]:
    """A MuST-C style split folder -> ``OUT/SPLIT.jsonl`` with cut audio under ``OUT/audio/SPLIT``."""
    split_dir, out = Path(split_dir), Path(out)
    split = split_dir.name
    txt = split_dir / "txt"
    if not (txt / f"{split}.yaml").is_file():
        raise DataError(f"{txt / (split + '.yaml')}: no such file (a MuST-C split folder has wav/ and "
                        f"txt/{split}.yaml, txt/{split}.{src_lang}, txt/{split}.{tgt_lang})")
    segments = _segments(txt / f"{split}.yaml")
    texts = {lang: read_lines(txt / f"{split}.{lang}") for lang in (src_lang, tgt_lang)}
    for lang, lines in texts.items():
        if len(lines) != len(segments):
            raise DataError(f"{txt / f'{split}.{lang}'} has {len(lines)} lines but {txt / f'{split}.yaml'} has "
                            f"{len(segments)} segments: one line per segment, in order")
    by_talk: dict[str, list[int]] = {}
    for i, seg in enumerate(segments):
        by_talk.setdefault(seg["wav"], []).append(i)
    rows: dict[int, STUtterance] = {}
    for wav, indices in by_talk.items():
        recording = split_dir / "wav" / wav
        ids = [(f"{Path(wav).stem}_{n}", segments[i]) for n, i in enumerate(indices)]
        where = f"{txt / f'{split}.yaml'}: segment {indices[0] + 1}"
        if not recording.is_file():
            raise DataError(f"{where}: no such recording {recording}")
        durations = _cut(recording, ids, out / "audio" / split, where)
        for i, (utt_id, seg), duration in zip(indices, ids, durations, strict=True):
            speaker = str(seg.get("speaker_id", Path(wav).stem))
            utt = Utterance(utt_id, out / "audio" / split / f"{utt_id}.wav", duration, texts[src_lang][i].strip(),
                            speaker)
            rows[i] = STUtterance(utt, {tgt_lang: texts[tgt_lang][i].strip()})
    ordered = [rows[i] for i in range(len(segments))]
    write_st_manifest(out / f"{split}.jsonl", ordered)
    return ordered


def _tsv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a TSV with a header; the columns CoVoST needs checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    reader = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = [c for c in ("path", "sentence", "translation") if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)} (CoVoST TSVs have path, sentence, "
                        "translation[, client_id, split])")
    return [(number, row) for number, row in enumerate(reader, start=2)]


def import_covost(tsv: str | Path, clips: str | Path, out_manifest: str | Path, *, tgt_lang: str,
                  split: str | None = None) -> list[STUtterance]:
    """A CoVoST style TSV (+ its clips folder) -> a manifest at ``out_manifest``; with ``split``, only the rows
    whose ``split`` column says so. The clips are referenced where they are (soundfile reads mp3)."""
    tsv, clips = Path(tsv), Path(clips)
    rows = _tsv_rows(tsv)
    if split is not None:
        if rows and "split" not in rows[0][1]:
            raise DataError(f"{tsv}:1: no 'split' column to pick split {split!r} from")
        rows = [(n, r) for n, r in rows if r["split"] == split]
    out: list[STUtterance] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        where = f"{tsv}:{number}"
        if not row["path"] or row["translation"] is None or not row["translation"].strip():
            raise DataError(f"{where}: empty path or translation")
        utt_id = Path(row["path"]).stem
        if utt_id in seen:
            raise DataError(f"{where}: duplicate clip {row['path']!r} (first on line {seen[utt_id]})")
        seen[utt_id] = number
        audio = clips / row["path"]
        try:
            duration = audio_duration(audio)
        except AudioError as err:
            raise DataError(f"{where}: {err}") from None
        utt = Utterance(utt_id, audio, duration, (row["sentence"] or "").strip(), row.get("client_id") or utt_id)
        out.append(STUtterance(utt, {tgt_lang: row["translation"].strip()}))
    if not out:
        raise DataError(f"{tsv}: no rows{f' in split {split!r}' if split else ''}")
    write_st_manifest(out_manifest, out)
    return out


def import_st(source: str | Path, out: str | Path, *, tgt_lang: str, splits: Sequence[str] = (),
              clips: str | Path | None = None) -> dict[str, int]:
    """Import a MuST-C language-pair ``data`` folder (its split folders, or only ``splits``) or a single split
    folder into ``out/SPLIT.jsonl``; or a CoVoST TSV (clips in ``clips``, default ``TSV's folder/clips``) into
    ``out/SPLIT.jsonl`` for each of ``splits`` (default: ``out/NAME.jsonl`` with every row). {split: utterances}."""
    source, out = Path(source), Path(out)
    if source.is_file() and source.suffix == ".tsv":
        clip_dir = Path(clips) if clips is not None else source.parent / "clips"
        if not splits:
            return {source.stem: len(import_covost(source, clip_dir, out / f"{source.stem}.jsonl", tgt_lang=tgt_lang))}
        return {s: len(import_covost(source, clip_dir, out / f"{s}.jsonl", tgt_lang=tgt_lang, split=s))
                for s in splits}
    if not source.is_dir():
        raise DataError(f"{source}: neither a MuST-C folder nor a CoVoST .tsv file")
    if (source / "txt").is_dir():
        folders = [source]
    else:
        folders = sorted(p for p in source.iterdir() if (p / "txt").is_dir() and (p / "wav").is_dir())
        if splits:
            folders = [source / s for s in splits]
    if not folders:
        raise DataError(f"{source}: no MuST-C split folders (SPLIT/wav and SPLIT/txt) inside")
    return {f.name: len(import_mustc(f, out, tgt_lang=tgt_lang)) for f in folders}
