"""Speech manifests: one JSON object per line, ``{"id", "audio", "duration", "text", "speaker"}``.

``audio`` is relative to the manifest's folder (absolute paths are accepted when reading);
``duration`` is in seconds. All five keys are required: ``speaker`` has no default, because
speaker-disjoint splits and per-speaker statistics silently break when it is missing (the Kaldi
importer follows Kaldi's convention instead: without ``utt2spk`` each utterance is its own speaker).
Extra keys are ignored, so other tools may add fields. Importers for Kaldi data folders and Lhotse
CutSets convert existing corpora; Lhotse Shar directories are streamed without conversion.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import soxr
import torch

from transduce.data.audio import AudioError, audio_duration
from transduce.data.text import DataError, iter_lines

if TYPE_CHECKING:
    from lhotse.cut import Cut

_KEYS: dict[str, type | tuple[type, ...]] = {"id": str, "audio": str, "duration": (int, float), "text": str,
                                            "speaker": str}


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path
    """Audio file; absolute once read from a manifest."""
    duration: float
    """Seconds."""
    text: str
    speaker: str


@dataclass(frozen=True)
class SharUtterance:
    """An utterance streamed from a Lhotse Shar directory: its audio lives inside a tar shard."""

    id: str
    duration: float
    text: str
    speaker: str


@dataclass(frozen=True)
class SplitSummary:
    split: str
    utterances: int
    hours: float
    speakers: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.split}: {self.utterances} utterances, {self.hours:.2f} h, speakers {', '.join(self.speakers)}"


def summarize(split: str, utts: list[Utterance]) -> SplitSummary:
    """Counts, hours and sorted speakers of one split."""
    hours = sum(u.duration for u in utts) / 3600
    return SplitSummary(split, len(utts), hours, tuple(sorted({u.speaker for u in utts})))


def _parse_line(line: str, where: str, folder: Path) -> Utterance:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: invalid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key, kind in _KEYS.items():
        if key not in obj:
            raise DataError(f"{where}: missing key {key!r} (required: {', '.join(_KEYS)})")
        if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
            raise DataError(f"{where}: key {key!r} has type {type(obj[key]).__name__}, expected "
                            f"{'number' if key == 'duration' else 'string'}")
        if isinstance(obj[key], str) and _has_lone_surrogate(obj[key]):
            raise DataError(f"{where}: key {key!r} holds a lone UTF-16 surrogate escape (not a character)")
    if not math.isfinite(obj["duration"]) or obj["duration"] <= 0:
        raise DataError(f"{where}: duration must be a positive number of seconds, got {obj['duration']}")
    if not obj["id"] or not obj["audio"]:
        raise DataError(f"{where}: 'id' and 'audio' must not be empty")
    audio = Path(os.path.normpath(folder / obj["audio"]))  # absolute: folder is resolved
    return Utterance(obj["id"], audio, float(obj["duration"]), obj["text"], obj["speaker"])


def _has_lone_surrogate(text: str) -> bool:
    """JSON's ``\\ud800`` escapes decode to code points that no UTF-8 output can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (``.gz`` decompressed); an unreadable file or gzip stream is a DataError naming it."""
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # unreadable; gzip: bad magic number, truncated, bad CRC
        raise DataError(f"{path}: cannot read ({err or type(err).__name__})") from None


class HasId(Protocol):
    """A manifest row: its id is unique within the manifest."""

    @property
    def id(self) -> str: ...


Row = TypeVar("Row", bound=HasId)


def read_jsonl_manifest(path: str | Path, parse: Callable[[str, str, Path], Row],
                        check: Callable[[Row], None] | None = None) -> list[Row]:
    """The rows of a JSON-lines manifest (``.gz`` allowed) in file order: ``parse(line, "FILE:LINE", folder)`` makes
    each (paths relative to the manifest's ``folder``), ``check(row)`` vets it when given (a DataError it raises is
    reported with the manifest line). Blank lines are skipped; a repeated id or an empty file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    folder = path.resolve().parent
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(iter_lines(_read_bytes(path), str(path)), start=1):
        if not line.strip():
            continue
        row = parse(line, f"{path}:{number}", folder)
        if row.id in first_line:
            raise DataError(f"{path}:{number}: duplicate id {row.id!r} (first on line {first_line[row.id]})")
        if check is not None:
            try:
                check(row)
            except DataError as err:
                raise DataError(f"{path}:{number}: {err}") from None
        first_line[row.id] = number
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: manifest is empty")
    return rows


def manifest_paths(folder: str | Path, names: str) -> list[Path]:
    """``names`` comma-separated and relative to ``folder`` (``train.jsonl,../more/train.jsonl``) -> their paths."""
    parts = [n.strip() for n in names.split(",")]
    if not all(parts):
        raise DataError(f"manifest list {names!r} has an empty name")
    return [Path(folder) / part for part in parts]


def _check_audio(utt: Utterance) -> None:
    try:
        audio_duration(utt.audio)
    except AudioError as err:
        raise DataError(f"audio {err}") from None


def read_manifest(path: str | Path, *, check_audio: bool = False) -> list[Utterance]:
    """All utterances of a JSON-lines manifest (``.gz`` allowed). The audio is not read unless ``check_audio``:
    then each file's header is (it exists, is readable, non-empty, complete), and a bad one is an error naming
    the manifest line as well as the file."""
    return read_jsonl_manifest(path, _parse_line, _check_audio if check_audio else None)


def read_manifests(folder: str | Path, names: str) -> list[Utterance]:
    """The utterances of one or more manifests, ``names`` comma-separated and relative to ``folder``
    (``train.jsonl,../more/train.jsonl``), in that order. Ids need only be unique within each manifest."""
    return [utt for path in manifest_paths(folder, names) for utt in read_manifest(path)]


def write_manifest(path: str | Path, utts: Iterable[Utterance],
                   extras: Iterable[Mapping[str, object]] | None = None) -> None:
    """Write ``utts`` as JSON lines, audio paths relative to the manifest's folder; atomic (temp file + rename).
    ``extras``: more keys for each row, in ``utts``' order (a speech translation manifest's "translation")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.resolve().parent
    lines = []
    rows = zip(utts, extras, strict=True) if extras is not None else ((u, {}) for u in utts)
    for u, extra in rows:
        audio = os.path.relpath(os.path.abspath(u.audio), folder)
        obj = {"id": u.id, "audio": Path(audio).as_posix(), "duration": u.duration, "text": u.text,
               "speaker": u.speaker, **extra}
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    write_lines_atomic(path, lines)


def write_lines_atomic(path: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` (whose folder exists) through a temp file and a rename: readers never see half
    a file."""
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _kaldi_table(path: Path, *, require_value: bool = True) -> dict[str, tuple[str, int]]:
    """``key rest-of-line`` rows of a Kaldi table file -> {key: (rest, line number)}."""
    table: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(iter_lines(_read_bytes(path), str(path)), start=1):
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if require_value and not rest:
            raise DataError(f"{path}:{number}: expected 'ID VALUE', got only {key!r}")
        if key in table:
            raise DataError(f"{path}:{number}: duplicate id {key!r} (first on line {table[key][1]})")
        table[key] = (rest, number)
    if not table:
        raise DataError(f"{path}: file is empty")
    return table


def import_kaldi(folder: str | Path) -> list[Utterance]:
    """Utterances of a Kaldi data folder: ``wav.scp`` (plain ``ID PATH`` lines; relative paths are relative
    to the current directory, as in Kaldi recipes), ``text``, optional ``utt2spk``. Durations come from the
    audio headers."""
    folder = Path(folder)
    if (folder / "segments").exists():
        raise DataError(f"{folder / 'segments'}: Kaldi segments are unsupported; cut the recordings into "
                        "one file per utterance first (e.g. with lhotse) and remove 'segments'")
    for name in ("wav.scp", "text"):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: no such file (a Kaldi data folder needs wav.scp and text)")
    wavs = _kaldi_table(folder / "wav.scp")
    texts = _kaldi_table(folder / "text", require_value=False)
    spk_path = folder / "utt2spk"
    speakers = _kaldi_table(spk_path) if spk_path.is_file() else {}
    utts = []
    for utt_id, (target, number) in wavs.items():
        where = f"{folder / 'wav.scp'}:{number}"
        if target.endswith("|"):
            raise DataError(f"{where}: piped commands in wav.scp are unsupported; convert the audio to files "
                            "and write 'ID PATH' lines")
        if re.search(r"\.ark:\d+$", target):
            raise DataError(f"{where}: archive offsets (.ark:N) are unsupported; write 'ID PATH' lines")
        if utt_id not in texts:
            raise DataError(f"{where}: utterance {utt_id!r} has no line in {folder / 'text'}")
        if speakers and utt_id not in speakers:
            raise DataError(f"{where}: utterance {utt_id!r} has no line in {spk_path}")
        audio = Path(target).resolve()
        try:
            duration = audio_duration(audio)
        except AudioError as err:
            raise DataError(f"{where}: {err}") from None
        speaker = speakers[utt_id][0] if speakers else utt_id
        utts.append(Utterance(utt_id, audio, duration, " ".join(texts[utt_id][0].split()), speaker))
    for utt_id, (_, number) in texts.items():
        if utt_id not in wavs:
            raise DataError(f"{folder / 'text'}:{number}: utterance {utt_id!r} has no line in wav.scp")
    return utts


def _check_cut(cut: Cut, where: str) -> None:
    if cut.num_channels != 1:
        raise DataError(f"{where}: cut {cut.id!r} has {cut.num_channels} channels; only mono cuts are supported")
    if len(cut.supervisions) != 1:
        raise DataError(f"{where}: cut {cut.id!r} has {len(cut.supervisions)} supervisions, expected exactly 1")


def import_lhotse(path: str | Path) -> list[Utterance]:
    """Utterances of a Lhotse CutSet manifest (``.jsonl``/``.jsonl.gz``): mono cuts, one supervision each,
    each covering a whole single-file recording."""
    from lhotse import CutSet  # imported here: lhotse is slow to import and only these importers need it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        cuts = CutSet.from_file(path)
    except Exception as err:  # lhotse raises many kinds for malformed manifests
        raise DataError(f"{path}: not a readable Lhotse CutSet ({type(err).__name__}: {err})") from None
    utts = []
    for number, cut in enumerate(cuts, start=1):
        where = f"{path}:{number}"
        _check_cut(cut, where)
        rec = cut.recording
        if rec is None or len(rec.sources) != 1 or rec.sources[0].type != "file":
            raise DataError(f"{where}: cut {cut.id!r} needs a recording with one 'file' source")
        if cut.start > 0 or abs(cut.duration - rec.duration) > 1e-3:
            raise DataError(f"{where}: cut {cut.id!r} covers {cut.start:.3f}-{cut.end:.3f} s of a "
                            f"{rec.duration:.3f} s recording; only whole-recording cuts are supported")
        sup = cut.supervisions[0]
        utts.append(Utterance(cut.id, Path(rec.sources[0].source).resolve(), float(cut.duration),
                              sup.text or "", sup.speaker or ""))
    if not utts:
        raise DataError(f"{path}: CutSet is empty")
    return utts


def iter_lhotse_shar(folder: str | Path, *, sample_rate: int = 16000) -> Iterator[tuple[SharUtterance, torch.Tensor]]:
    """Lazily yield (utterance, waveform (N,) float32 at ``sample_rate``) from a Lhotse Shar directory."""
    from lhotse import CutSet

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.glob("cuts.*.jsonl*")):
        raise DataError(f"{folder}: not a Lhotse Shar directory (no cuts.*.jsonl[.gz] shards)")
    cuts = CutSet.from_shar(in_dir=folder)
    for number, cut in enumerate(cuts, start=1):
        _check_cut(cut, f"{folder} (cut {number})")
        wave = cut.load_audio()[0]  # (N,) of the (C, N) array
        if cut.sampling_rate != sample_rate:
            wave = soxr.resample(wave, cut.sampling_rate, sample_rate, quality="HQ")
        sup = cut.supervisions[0]
        utt = SharUtterance(cut.id, float(cut.duration), sup.text or "", sup.speaker or "")
        yield utt, torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def convert_to_manifest(source: str | Path, out_path: str | Path) -> int:
    """Convert a Kaldi data folder or a Lhotse CutSet file to our manifest at ``out_path``; number of utterances."""
    source = Path(source)
    if source.is_dir() and (source / "wav.scp").exists():
        utts = import_kaldi(source)
    elif source.is_file() and source.name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        utts = import_lhotse(source)
    elif source.is_dir() and any(source.glob("cuts.*.jsonl*")):
        raise DataError(f"{source}: a Lhotse Shar directory keeps audio inside tar shards; stream it with "
                        "iter_lhotse_shar instead of converting it")
    else:
        raise DataError(f"{source}: neither a Kaldi data folder (with wav.scp) nor a Lhotse CutSet file "
                        "(.jsonl or .jsonl.gz)")
    write_manifest(out_path, utts)
    return len(utts)
