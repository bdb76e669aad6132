"""Long recordings offline: block-by-block reading, cutting at pauses with audio kept only for the piece in
progress, transcripts with times in the file, the CLI's ``--segment``, and local attention picked for long
inputs (the blockwise band itself is tested against full attention in tests/nn/test_local_attention.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from testkit import run_cli

from transduce.data.audio import audio_blocks, audio_duration, load_audio
from transduce.data.digits import write_long_recording
from transduce.errors import ConfigError
from transduce.long_audio import LONG_AUDIO_SECONDS, default_cuts, encode_with_memory, speech_pieces, transcribe_long
from transduce.metrics.wer import wer
from transduce.nn.local_attention import LocalWindow
from transduce.recognize import BLOCKWISE_SECONDS, Recognizer
from transduce.streaming.endpoint import iter_segments

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd"
MODEL = ROOT / "models" / "digits-hybrid-streaming"
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason="../shared/data/fsdd not available")]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float, str]]]:
    """About 100 s of one FSDD speaker's digit strings and pauses, at FSDD's 8 kHz (so reading resamples)."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    return path, write_long_recording(FSDD, path, seconds=100.0)


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.load(MODEL)


def test_blocks_are_the_whole_waveform(recording: tuple[Path, list]) -> None:
    path, _ = recording
    blocks = list(audio_blocks(path, 16000, seconds=0.37))
    assert len(blocks) > 100
    torch.testing.assert_close(torch.cat(blocks), load_audio(path, 16000), atol=1e-6, rtol=0)


def test_features_of_a_long_file_are_made_block_by_block_and_equal_the_whole_signal_ones(
        recording: tuple[Path, list], recognizer: Recognizer) -> None:
    path, _ = recording
    assert audio_duration(path) > BLOCKWISE_SECONDS
    torch.testing.assert_close(recognizer.features(path), recognizer.fbank(load_audio(path, 16000)), atol=1e-5,
                               rtol=0)


def test_pieces_are_cut_lazily_and_hold_their_own_samples(recording: tuple[Path, list],
                                                          recognizer: Recognizer) -> None:
    path, _ = recording
    wave = load_audio(path, 16000)
    read = []

    def chunks() -> Iterator[torch.Tensor]:
        for block in wave.split(8000):
            read.append(block.numel())
            yield block

    pieces = speech_pieces(recognizer, chunks())
    first, samples = next(pieces)
    assert sum(read) < wave.numel() / 4  # found long before the end: the recording is never held whole
    rest = list(pieces)
    segments = [first] + [s for s, _ in rest]
    for segment, audio in [(first, samples), *rest]:
        torch.testing.assert_close(audio, wave[round(segment.start * 16000) : round(segment.end * 16000)])
    assert segments == list(iter_segments(wave.split(8000), recognizer.voice_detector(), default_cuts()))


def test_transcripts_match_the_utterances_and_their_times(recording: tuple[Path, list],
                                                          recognizer: Recognizer) -> None:
    path, truth = recording
    found = list(transcribe_long(recognizer, path, overrides={"batch_size": 4, "mode": "ctc", "beam": 1}))
    assert len(found) == len(truth)
    for piece, (start, end, _) in zip(found, truth, strict=True):
        assert abs(piece.start - start) < 0.4 and abs(piece.end - end) < 0.4
        assert all(piece.start <= t <= piece.end for t in piece.transcript.times)
    assert wer([p.text for p in found], [text for *_, text in truth]) < 5.0
    alone = recognizer.transcribe([load_audio(path, 16000)[round(p.start * 16000) : round(p.end * 16000)]
                                   for p in found[:3]], mode="ctc", beam=1)
    assert alone == [p.text for p in found[:3]]  # batching the pieces changes nothing


def test_cli_cuts_long_files_keeps_short_ones_whole_in_input_order(recording: tuple[Path, list], capsys,
                                                                   tmp_path: Path) -> None:
    path, truth = recording
    short = tmp_path / "short.wav"
    short.write_bytes((FSDD / "recordings" / "3_george_1.wav").read_bytes())
    code, out, _ = run_cli(["transcribe", "--model", str(MODEL), "--mode", "ctc", "--beam", "1", str(short),
                            str(path), str(short)], capsys)
    lines = [line.split("\t") for line in out.splitlines()]
    assert code == 0 and len(lines) == len(truth) + 2
    assert lines[0] == [str(short), "three"] and lines[-1] == [str(short), "three"]
    assert all(len(row) == 4 and row[0] == str(path) for row in lines[1:-1])
    assert float(lines[1][1]) == pytest.approx(truth[0][0], abs=0.4)
    code, out, _ = run_cli(["transcribe", "--model", str(MODEL), "--mode", "ctc", "--segment", "vad", str(short)],
                           capsys)
    fields = out.strip().split("\t")  # FILE START END TEXT
    assert code == 0 and len(fields) == 4 and fields[0] == str(short) and fields[3] == "three"


def test_cli_segment_none_encodes_a_long_file_whole_with_local_attention(recording: tuple[Path, list],
                                                                         capsys) -> None:
    path, truth = recording
    code, out, _ = run_cli(["transcribe", "--model", str(MODEL), "--mode", "ctc", "--segment", "none", str(path)],
                           capsys)
    fields = out.strip().split("\t")
    assert code == 0 and len(fields) == 2 and fields[0] == str(path)
    assert wer([fields[1]], [" ".join(text for *_, text in truth)]) < 5.0


def test_cli_nbest_on_a_long_file_is_a_one_line_error(recording: tuple[Path, list], capsys) -> None:
    path, _ = recording
    code, out, err = run_cli(["transcribe", "--model", str(MODEL), "--nbest", "3", str(path)], capsys)
    assert code != 0 and "--nbest needs short files" in err and "Traceback" not in err


def test_local_window_for_long_inputs_and_limited_chunks(recognizer: Recognizer) -> None:
    cfg = recognizer.config.decode
    frames = int(LONG_AUDIO_SECONDS * 100) + 100  # 10 ms feature frames
    from dataclasses import replace

    assert recognizer.local_window(frames, cfg) == LocalWindow(block=cfg.window, left=cfg.window_left,
                                                               right=cfg.window_right)
    assert recognizer.local_window(500, cfg) is None
    assert recognizer.local_window(500, replace(cfg, window_after=0.0)) is not None
    assert recognizer.local_window(frames, replace(cfg, window=0)) is None
    assert recognizer.local_window(500, replace(cfg, chunk_size=4, left_chunks=2)) == LocalWindow(block=4, left=2)
    assert recognizer.local_window(frames, replace(cfg, chunk_size=4)) is None  # all left chunks: a mask
    with pytest.raises(ConfigError, match="decode.window_left must be >= 0"):
        recognizer.search([torch.zeros(16000)], window_left=-1)


def test_blockwise_chunks_give_the_chunk_mask_output(recognizer: Recognizer) -> None:
    feats = recognizer.features(load_audio(FSDD / "recordings" / "7_jackson_3.wav", 16000))
    local, lens = recognizer.log_probs([feats], chunk_size=4, left_chunks=1)  # padded to a multiple of 64 frames
    with torch.no_grad():
        out, out_lens = recognizer.model.encode(feats[None], torch.tensor([feats.size(0)]), chunk_size=4,
                                                left_chunks=1)
    assert torch.equal(lens, out_lens)
    torch.testing.assert_close(local[:, : int(lens[0])], recognizer.model.ctc_log_probs(out), atol=1e-4, rtol=1e-4)


def test_segment_recurrence_equals_the_band_mask_and_the_local_window(recognizer: Recognizer) -> None:
    """Transformer-XL memory (cached keys/values of the previous segment in every layer), run block by block
    over a recording, gives what the whole-input forward gives with the equivalent chunk mask, and what
    blockwise local attention gives with the same band."""
    wave = torch.cat([load_audio(FSDD / "recordings" / f"{d}_lucas_2.wav", 16000) for d in (4, 0, 9, 2, 6)])
    blocks = wave.split(3001)  # odd sizes: feature frames and segments straddle the blocks
    recurrent = torch.cat(list(encode_with_memory(recognizer, blocks, segment=8, memory=1)), dim=1)
    feats = recognizer.features(wave)[None]
    lens = torch.tensor([feats.size(1)])
    with torch.no_grad():
        masked, _ = recognizer.model.encode(feats, lens, chunk_size=8, left_chunks=1)
        local, _ = recognizer.model.encode(feats, lens, window=LocalWindow(block=8, left=1))
        full, _ = recognizer.model.encode(feats, lens)
    assert recurrent.shape == masked.shape and recurrent.size(1) > 40
    torch.testing.assert_close(recurrent, masked, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(local, masked, atol=1e-4, rtol=1e-4)
    assert (full - masked).abs().max() > 1e-2  # memory of one segment is not full context
