"""Manifests: round trip, errors naming file:line, Kaldi and Lhotse importers checked against lhotse's own writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from transduce.data.manifest import (
    Utterance,
    convert_to_manifest,
    import_kaldi,
    import_lhotse,
    iter_lhotse_shar,
    read_manifest,
    read_manifests,
    write_manifest,
)
from transduce.data.text import DataError


def _wav(path: Path, seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    wave = (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype="PCM_16")
    return wave


def _corpus(folder: Path) -> list[Utterance]:
    specs = [("a1", 0.5, "one two", "alice"), ("a2", 0.25, "three", "alice"), ("b1", 0.75, "", "bob")]
    utts = []
    for i, (uid, seconds, text, spk) in enumerate(specs):
        _wav(folder / "wav" / f"{uid}.wav", seconds, seed=i)
        utts.append(Utterance(uid, (folder / "wav" / f"{uid}.wav").resolve(), seconds, text, spk))
    return utts


def test_round_trip_relative_paths(tmp_path: Path) -> None:
    utts = _corpus(tmp_path / "corpus")
    path = tmp_path / "corpus" / "m" / "train.jsonl"
    write_manifest(path, utts)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["audio"] == "../wav/a1.wav"
    assert read_manifest(path) == utts
    assert not list(path.parent.glob("*.tmp"))
    # absolute audio paths are accepted too
    path.write_text(json.dumps({**first, "audio": str(utts[0].audio)}) + "\n")
    assert read_manifest(path) == utts[:1]


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "audio": "a.wav", "duration": 1.0, "text": "t"', r"m\.jsonl:2: invalid JSON"),
    ('{"id": "x", "audio": "a.wav", "duration": 1.0, "text": "t"}', r"m\.jsonl:2: missing key 'speaker'"),
    ('{"id": "x", "audio": "a.wav", "duration": "1", "text": "t", "speaker": "s"}', r":2: key 'duration' has type str"),
    ('{"id": "x", "audio": "a.wav", "duration": -1, "text": "t", "speaker": "s"}', r":2: duration must be positive"),
    ('{"id": 3, "audio": "a.wav", "duration": 1, "text": "t", "speaker": "s"}', r":2: key 'id' has type int"),
    ('{"id": "a", "audio": "a.wav", "duration": 1, "text": "t", "speaker": "s"}', r":2: duplicate id 'a' \(first on"),
    ('[1, 2]', r":2: expected a JSON object"),
])
def test_manifest_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"id": "a", "audio": "a.wav", "duration": 1, "text": "t", "speaker": "s"}'
    path = tmp_path / "m.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=message.replace("positive", "a positive number")):
        read_manifest(path)


def test_several_manifests_read_in_order(tmp_path: Path) -> None:
    utts = _corpus(tmp_path / "corpus")
    write_manifest(tmp_path / "a" / "train.jsonl", utts[:2])
    write_manifest(tmp_path / "b" / "train.jsonl", utts[1:])  # shares id a2 with the first: allowed
    both = read_manifests(tmp_path / "a", "train.jsonl, ../b/train.jsonl")
    assert both == utts[:2] + utts[1:]
    assert read_manifests(tmp_path / "a", "train.jsonl") == utts[:2]
    with pytest.raises(DataError, match=r"b/missing\.jsonl: no such file"):
        read_manifests(tmp_path / "a", "train.jsonl,../b/missing.jsonl")
    with pytest.raises(DataError, match="empty name"):
        read_manifests(tmp_path / "a", "train.jsonl,")


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"m\.jsonl: manifest is empty"):
        read_manifest(tmp_path / "m.jsonl")


def _kaldi_dir(tmp_path: Path, utts: list[Utterance], *, spk: bool = True) -> Path:
    folder = tmp_path / "kaldi"
    folder.mkdir()
    (folder / "wav.scp").write_text("".join(f"{u.id} {u.audio}\n" for u in utts))
    (folder / "text").write_text("".join(f"{u.id} {u.text}\n" for u in utts))
    if spk:
        (folder / "utt2spk").write_text("".join(f"{u.id} {u.speaker}\n" for u in utts))
    return folder


def test_import_kaldi(tmp_path: Path) -> None:
    utts = _corpus(tmp_path)
    folder = _kaldi_dir(tmp_path, utts)
    assert import_kaldi(folder) == utts
    assert convert_to_manifest(folder, tmp_path / "out.jsonl") == 3
    assert read_manifest(tmp_path / "out.jsonl") == utts
    (folder / "utt2spk").unlink()  # Kaldi's convention: each utterance is its own speaker
    assert [u.speaker for u in import_kaldi(folder)] == ["a1", "a2", "b1"]


def test_kaldi_errors(tmp_path: Path) -> None:
    utts = _corpus(tmp_path)
    folder = _kaldi_dir(tmp_path, utts)
    scp = folder / "wav.scp"
    scp.write_text(f"a1 {utts[0].audio}\na2 sox {utts[1].audio} -t wav - |\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: piped commands in wav\.scp are unsupported"):
        import_kaldi(folder)
    scp.write_text(f"a1 {utts[0].audio}\na2 {tmp_path}/missing.wav\nb1 {utts[2].audio}\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: .*missing\.wav: no such file"):
        import_kaldi(folder)
    scp.write_text(f"a1 {utts[0].audio}\n")
    with pytest.raises(DataError, match=r"text:2: utterance 'a2' has no line in wav\.scp"):
        import_kaldi(folder)
    (folder / "segments").write_text("s1 a1 0 1\n")
    with pytest.raises(DataError, match=r"segments: Kaldi segments are unsupported"):
        import_kaldi(folder)


def _lhotse_cuts(utts: list[Utterance]):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs = RecordingSet.from_recordings(Recording.from_file(u.audio, recording_id=u.id) for u in utts)
    sups = SupervisionSet.from_segments(
        SupervisionSegment(u.id, u.id, 0.0, u.duration, text=u.text, speaker=u.speaker) for u in utts)
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    return cuts.modify_ids(lambda cut_id: cut_id.rsplit("-", 1)[0])  # from_manifests names cuts "RECORDING-N"


def test_import_lhotse_cutset(tmp_path: Path) -> None:
    utts = _corpus(tmp_path)
    cuts = _lhotse_cuts(utts)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    got = import_lhotse(tmp_path / "cuts.jsonl.gz")
    assert [(u.id, u.audio, u.text, u.speaker) for u in got] == [(u.id, u.audio, u.text, u.speaker) for u in utts]
    assert [u.duration for u in got] == pytest.approx([u.duration for u in utts])
    assert convert_to_manifest(tmp_path / "cuts.jsonl.gz", tmp_path / "m.jsonl") == 3
    cuts.truncate(max_duration=0.1, offset_type="start").to_file(tmp_path / "short.jsonl.gz")
    with pytest.raises(DataError, match=r"short\.jsonl\.gz:1: .*only whole-recording cuts"):
        import_lhotse(tmp_path / "short.jsonl.gz")


def test_iter_lhotse_shar(tmp_path: Path) -> None:
    utts = _corpus(tmp_path)
    waves = {u.id: torch.from_numpy(sf.read(u.audio, dtype="float32")[0]) for u in utts}
    (tmp_path / "shar").mkdir()
    _lhotse_cuts(utts).to_shar(tmp_path / "shar", fields={"recording": "wav"}, shard_size=2)
    got = list(iter_lhotse_shar(tmp_path / "shar"))
    assert [(u.id, u.text, u.speaker) for u, _ in got] == [(u.id, u.text, u.speaker) for u in utts]
    for u, wave in got:
        assert wave.dtype == torch.float32 and torch.allclose(wave, waves[u.id], atol=1e-4)
    with pytest.raises(DataError, match="stream it with iter_lhotse_shar"):
        convert_to_manifest(tmp_path / "shar", tmp_path / "m.jsonl")
