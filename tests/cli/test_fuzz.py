"""Bad input never shows a traceback: property-based fuzzing of the command line's inputs (hypothesis).

The property, for every run: exit status 0 with a well-formed result, or exit status 2 with exactly one line on
stderr (``transduce CMD: error: ...``) that names the file, line or field at fault; never a traceback and never
a Python exception escaping ``main``. Inputs: stdin and ``--input`` bytes for ``translate`` (random, invalid
UTF-8, NUL, very long lines, empty); audio files for ``transcribe`` (random, truncated, empty, lying WAV
headers, folders, missing files, ``--stream`` with models that cannot stream); manifests for ``evaluate`` and
``train``. Recipes, ``--set`` overrides, model folders and checkpoints are fuzzed in ``test_fuzz_setup.py``;
the property and the runner are in ``fuzzkit.py``. Text rule under test: input is UTF-8, lines end at ``\\n``
(``\\r\\n`` too); an undecodable line is an error naming ``SOURCE:LINE``, never repaired or replaced.

Runs are in-process (``main(argv)``), derandomized so CI sees the same examples; a few subprocess runs check the
real exit codes. A failing example is printed by hypothesis and repeated in the assertion message.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fuzzkit import ALONE, FUZZ, ROOT, SPEECH, STREAMING, TRANSLATION, WAV, cli, wav
from hypothesis import given
from hypothesis import strategies as st


def _remembering(load: Callable[..., Any]) -> Callable[..., Any]:
    loaded: dict[str, Any] = {}

    def remembered(*args: Any, **kwargs: Any) -> Any:
        key = repr((str(args[0]), args[1:], sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = load(*args, **kwargs)
        return loaded[key]

    return remembered


@pytest.fixture(scope="module")
def loaded_once() -> Iterator[None]:
    """Translator.load and Recognizer.load remember what they loaded, so the many examples that fuzz the
    inputs do not reload the same model (the folder-corruption tests below load for real)."""
    from transduce.recognize import Recognizer
    from transduce.translate import Translator

    with pytest.MonkeyPatch.context() as patch:
        for cls in (Translator, Recognizer):
            patch.setattr(cls, "load", staticmethod(_remembering(cls.load)))
        yield


# --- translate: stdin and --input bytes --------------------------------------------------------------------

BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xc0\xaf"]
LINE = st.one_of(
    st.text(max_size=30).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=30),
    st.lists(st.sampled_from([b"\x00", b"\r", b"\xef\xbb\xbf", b"ein Hund", b" ", *BAD_UTF8]), max_size=5)
    .map(b"".join),
)
STDIN = st.lists(LINE, max_size=5).map(b"\n".join) | st.sampled_from([b"", b"\n", b"\n\n", b"\r\n"])


def expected_lines(data: bytes) -> tuple[int, int | None]:
    """(number of lines, first line that is not UTF-8 or None) under the documented rule."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return len(lines), number
    return len(lines), None


@pytest.mark.usefixtures("loaded_once")
@FUZZ
@given(data=STDIN)
def test_translate_stdin_is_translated_line_for_line_or_names_the_bad_line(data: bytes) -> None:
    run = cli("translate", "--model", TRANSLATION, "--beam", "1", stdin=data).clean()
    count, bad = expected_lines(data)
    if bad is None:
        assert run.code == 0 and run.out.count("\n") == count, (data, run)
    else:
        assert run.code == 2 and f"<stdin>:{bad}: invalid UTF-8" in run.err, (data, run)


@pytest.mark.usefixtures("loaded_once")
@FUZZ
@given(data=STDIN.filter(lambda d: d.strip(b"\r\n") != b""))
def test_translate_input_file_names_file_and_line(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    run = cli("translate", "--model", TRANSLATION, "--beam", "1", "--input", path).clean(str(path))
    count, bad = expected_lines(data)
    if bad is None:
        assert run.code == 0 and run.out.count("\n") == count, (data, run)
    else:
        assert run.code == 2 and f"{path}:{bad}: invalid UTF-8" in run.err, (data, run)


@pytest.mark.usefixtures("loaded_once")
def test_translate_very_long_line_names_it_and_short_lines_still_translate(tmp_path: Path) -> None:
    long = ("ein Hund läuft " * 7000)[:100_000].encode()
    cli("translate", "--model", TRANSLATION, stdin=b"ein Hund\n" + long + b"\n").clean("<stdin>:2: too long")
    path = tmp_path / "long.txt"
    path.write_bytes(b"ein Hund\n\n" + long)
    cli("translate", "--model", TRANSLATION, "--input", path).clean(f"{path}:3: too long")
    run = cli("translate", "--model", TRANSLATION, "--beam", "1", stdin=b"\x00\x00\nein Hund\x00\n\n").clean()
    assert run.code == 0 and run.out.count("\n") == 3


@pytest.mark.usefixtures("loaded_once")
def test_translate_input_paths_that_are_not_text_files(tmp_path: Path) -> None:
    (tmp_path / "gz.gz").write_bytes(b"\x1f\x8b\x08garbage")
    (tmp_path / "empty.txt").write_bytes(b"")
    for name in ("gz.gz", "empty.txt", "missing.txt", "."):
        cli("translate", "--model", TRANSLATION, "--input", tmp_path / name).clean(str(tmp_path / name))


# --- transcribe: audio files --------------------------------------------------------------------------------

HEADER_FIELDS = [(4, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"), (32, "<H"), (34, "<H"), (40, "<I")]
"""RIFF size, format, channels, sample rate, byte rate, block align, bits per sample, data size."""


@st.composite
def audio_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "lying", "riff", "flac", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=3000))
    if kind == "truncated":
        return WAV[: draw(st.integers(0, len(WAV) - 1))]
    if kind == "riff":
        return b"RIFF" + draw(st.binary(min_size=4, max_size=8)) + b"WAVE" + draw(st.binary(max_size=400))
    if kind == "flac":
        buffer = io.BytesIO()
        sf.write(buffer, np.zeros(4000, np.float32), 16000, format="FLAC")
        return buffer.getvalue()[: draw(st.integers(0, len(buffer.getvalue())))]
    wav = bytearray(WAV)
    for _ in range(draw(st.integers(1, 3)) if kind == "lying" else 0):
        offset, fmt = draw(st.sampled_from(HEADER_FIELDS))
        top = 2 ** (8 * struct.calcsize(fmt)) - 1
        value = draw(st.integers(0, top) | st.sampled_from([0, 1, 2, 3, 8, 24, 32, 999, 8000, 48000, 192000, top]))
        struct.pack_into(fmt, wav, offset, min(value, top))
    return bytes(wav)


@pytest.mark.usefixtures("loaded_once")
@FUZZ
@given(data=audio_bytes())
def test_transcribe_any_audio_bytes_transcribes_or_names_the_file(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "audio.wav"
    path.write_bytes(data)
    run = cli("transcribe", "--model", SPEECH, *ALONE, path).clean(str(path))
    if run.code == 0:
        assert len(run.out.splitlines()) == 1 and run.out.startswith(f"{path}\t"), (data, run)
    if data == WAV:
        assert run.code == 0
    stream = cli("transcribe", "--model", STREAMING, "--stream", "--beam", "1", path).clean(str(path))
    assert stream.code == run.code, (data, run, stream)  # the same file reader decides
    assert all(line.startswith(f"{path}\t") for line in stream.out.splitlines()), (data, stream)


@pytest.mark.usefixtures("loaded_once")
def test_transcribe_paths_that_are_not_audio_files(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "folder.wav").mkdir()
    for name in ("empty.wav", "folder.wav", "missing.wav"):
        cli("transcribe", "--model", SPEECH, *ALONE, tmp_path / name).clean(str(tmp_path / name))
        cli("transcribe", "--model", STREAMING, "--stream", tmp_path / name).clean(str(tmp_path / name))


@pytest.mark.usefixtures("loaded_once")
def test_audio_too_short_for_one_frame_transcribes_as_nothing_alone_as_in_a_batch(tmp_path: Path) -> None:
    (tmp_path / "short.wav").write_bytes(wav(seconds=0.002))
    (tmp_path / "ok.wav").write_bytes(WAV)
    alone = cli("transcribe", "--model", SPEECH, *ALONE, tmp_path / "short.wav").clean()
    batch = cli("transcribe", "--model", SPEECH, *ALONE, tmp_path / "short.wav", tmp_path / "ok.wav").clean()
    assert alone.code == batch.code == 0
    assert alone.out == batch.out.splitlines(keepends=True)[0] == f"{tmp_path / 'short.wav'}\t\n"


@pytest.mark.parametrize("model, names", [
    (SPEECH, ("config.yaml", "stream")),
    (ROOT / "models" / "captions-conformer-ctc", ("config.yaml", "stream")),
    (TRANSLATION, (str(TRANSLATION),)),
])
def test_stream_with_a_model_that_cannot_stream_is_one_line(model: Path, names: tuple[str, ...],
                                                           tmp_path: Path) -> None:
    (tmp_path / "ok.wav").write_bytes(WAV)
    run = cli("transcribe", "--model", model, "--stream", tmp_path / "ok.wav").clean(*names)
    assert run.code == 2


# --- manifests ----------------------------------------------------------------------------------------------

WRONG = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(), st.lists(st.integers(),
                                                                                                 max_size=2))
KEYS = ("id", "audio", "duration", "text", "speaker")


@st.composite
def manifest_line(draw: st.DrawFn, number: int) -> tuple[bytes, bool]:
    """(one manifest line, whether it is bad); good lines point at ok.wav in the manifest's folder."""
    entry: dict[str, object] = {"id": f"u{number}", "audio": "ok.wav", "duration": 0.4, "text": "one",
                                "speaker": "s"}
    kind = draw(st.sampled_from(["good", "good", "blank", "json", "not-object", "missing", "type", "duration",
                                 "no-audio", "bad-audio", "folder-audio", "utf8", "surrogate", "nested"]))
    if kind == "blank":
        return draw(st.sampled_from([b"", b"  ", b"\r"])), False
    if kind == "json":
        return draw(st.text(max_size=20).filter(lambda s: s.strip() and not _is_json(s))).encode(), True
    if kind == "not-object":
        return json.dumps(draw(st.one_of(WRONG, st.text(max_size=5)))).encode(), True
    if kind == "missing":
        del entry[draw(st.sampled_from(KEYS))]
    elif kind == "type":
        key = draw(st.sampled_from(KEYS))
        entry[key] = draw(st.text(max_size=3) if key == "duration" else WRONG)
    elif kind == "duration":
        entry["duration"] = draw(st.sampled_from([0, -1, -0.5, float("nan"), float("inf"), 1e400]))
    elif kind in ("no-audio", "bad-audio", "folder-audio"):
        entry["audio"] = {"no-audio": "missing.wav", "bad-audio": "bad.wav", "folder-audio": "."}[kind]
    elif kind == "surrogate":
        return json.dumps(entry).replace('"one"', '"\\udc80"').encode(), True
    elif kind == "nested":
        return b"[" * 100_000, True
    line = json.dumps(entry, allow_nan=True).encode()
    return (line.replace(b"one", b"\xff\xfe") if kind == "utf8" else line), kind != "good"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@st.composite
def manifests(draw: st.DrawFn) -> tuple[bytes, int | None, bool]:
    """(manifest bytes, first bad line or None, whether any line is an utterance)."""
    lines = [draw(manifest_line(number)) for number in range(draw(st.integers(1, 5)))]
    bad = next((number for number, (_, is_bad) in enumerate(lines, start=1) if is_bad), None)
    return b"\n".join(line for line, _ in lines), bad, any(line.strip() for line, _ in lines)


@pytest.mark.usefixtures("loaded_once")
@FUZZ
@given(case=manifests())
def test_evaluate_manifest_names_the_first_bad_line(case: tuple[bytes, int | None, bool], tmp_path: Path) -> None:
    data, bad, any_lines = case
    (tmp_path / "ok.wav").write_bytes(WAV)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEgarbage")
    path = tmp_path / "m.jsonl"
    path.write_bytes(data)
    run = cli("evaluate", "--model", SPEECH, *ALONE, "--manifest", path, "--json").clean()
    if bad is not None:
        assert run.code == 2 and f"{path}:{bad}: " in run.err, (data, run)
    elif not any_lines:
        assert run.code == 2 and f"{path}: manifest is empty" in run.err, (data, run)
    else:
        assert run.code == 0 and "wer" in json.loads(run.out), (data, run)


def test_manifest_and_kaldi_files_that_are_not_utf8_text_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "ok.wav").write_bytes(WAV)
    (tmp_path / "m.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    run = cli("evaluate", "--model", SPEECH, "--manifest", tmp_path / "m.jsonl.gz")
    assert run.clean(f"{tmp_path / 'm.jsonl.gz'}: cannot read").code == 2
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_bytes(f"a {tmp_path / 'ok.wav'}\n".encode() + b"b \xff.wav\n")
    (kaldi / "text").write_text("a one\nb two\n")
    run = cli("data", "manifest", "--from", kaldi, "--out", tmp_path / "out.jsonl")
    assert run.clean(f"{kaldi / 'wav.scp'}:2: invalid UTF-8").code == 2


def test_train_on_a_bad_manifest_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "ok.wav").write_bytes(WAV)
    good = json.dumps({"id": "a", "audio": "ok.wav", "duration": 0.4, "text": "one", "speaker": "s"})
    (tmp_path / "dev.jsonl").write_text(good + "\n")
    (tmp_path / "train.jsonl").write_text(good + "\n" + good.replace('"a"', '"b"').replace("0.4", "-3") + "\n")
    recipe = ROOT / "recipes" / "tiny-tones-ctc.yaml"
    run = cli("train", recipe, "--out", tmp_path / "run", f"--set=data.dir={tmp_path}",
              "--set=data.train=train.jsonl", "--set=data.valid=dev.jsonl", "--no-progress")
    assert run.clean(f"{tmp_path / 'train.jsonl'}:2: duration").code == 2
