"""Hybrid CTC/attention + streaming end to end on synthetic audio: a tiny causal Conformer trained with
dynamic chunks and both decoders, every decoding mode, streaming equal to chunk-masked offline decoding,
endpointing on CTC blanks, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from testkit import train_tones

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.data.audio import load_audio
from transduce.data.manifest import read_manifest
from transduce.data.tones import write_tones
from transduce.decoding.lm_fusion import train_piece_lm
from transduce.metrics.wer import cer
from transduce.recognize import Recognizer
from transduce.streaming.endpoint import EndpointConfig
from transduce.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tones(tmp_path_factory.mktemp("hybrid"), "tiny-tones-hybrid.yaml", valid=24)


@pytest.mark.parametrize(("mode", "limit"), [("ctc", 10.0), ("attention", 60.0), ("joint", 10.0), ("rescore", 10.0)])
def test_every_decoding_mode_recognizes_the_tones(trained: Path, mode: str, limit: float) -> None:
    """The one-layer decoder alone is still weak after 250 updates (it lags CTC on this tiny task);
    joint search and rescoring must not lose CTC's accuracy."""
    dev = read_manifest(trained / "data" / "dev.jsonl")
    hyps = Recognizer.load(trained / "run").transcribe([u.audio for u in dev], mode=mode, beam=3)
    assert cer(hyps, [u.text for u in dev]) < limit, (mode, hyps[:3], [u.text for u in dev][:3])


@pytest.mark.parametrize(("chunk", "left", "mode", "prune"),
                         [(2, -1, "ctc", 0), (4, 1, "ctc", 2), (3, 2, "rescore", 0)])
def test_streaming_equals_offline_decoding_with_the_same_chunk_mask(
    trained: Path, chunk: int, left: int, mode: str, prune: int
) -> None:
    """Also with ``token_prune`` (the likeliest tokens expanded per frame), which streaming applies as offline."""
    rec = Recognizer.load(trained / "run")
    dev = read_manifest(trained / "data" / "dev.jsonl")[:6]
    options = {"mode": mode, "beam": 3, "chunk_size": chunk, "left_chunks": left, "token_prune": prune}
    offline = rec.search([u.audio for u in dev], batch_size=4, **options)
    gen = torch.Generator().manual_seed(chunk)
    for utt, expected in zip(dev, offline, strict=True):
        wave = load_audio(utt.audio, rec.sample_rate)
        stream = rec.stream(**options)
        start = 0
        while start < wave.numel():  # random packet sizes, as from a network
            size = int(torch.randint(1, 4000, (1,), generator=gen))
            assert stream.accept(wave[start : start + size]) == []  # no endpointing: one segment at the end
            start += size
        [segment] = stream.finalize()
        assert segment.text == expected[0].text
        assert segment.times == expected[0].times
    full = rec.search([u.audio for u in dev], mode=mode, beam=3, token_prune=prune)
    assert [row[0].score for row in full] != pytest.approx([row[0].score for row in offline])  # mask in effect


def test_streaming_with_an_lm_equals_offline_decoding_with_it(trained: Path, tmp_path: Path) -> None:
    rec = Recognizer.load(trained / "run")
    texts = [u.text for u in read_manifest(trained / "data" / "train.jsonl")]
    train_piece_lm(rec.tokenizer, texts, order=3).save_arpa(tmp_path / "lm.arpa")
    dev = read_manifest(trained / "data" / "dev.jsonl")[:4]
    options = {"mode": "rescore", "beam": 3, "chunk_size": 3, "left_chunks": 2, "lm": str(tmp_path / "lm.arpa"),
               "lm_weight": 0.5, "insertion_bonus": 0.5}
    offline = rec.search([u.audio for u in dev], **options)
    for utt, expected in zip(dev, offline, strict=True):
        stream = rec.stream(**options)
        for packet in load_audio(utt.audio, rec.sample_rate).split(3000):
            stream.accept(packet)
        [segment] = stream.finalize()
        assert (segment.text, segment.times) == (expected[0].text, expected[0].times)
    plain = rec.search([u.audio for u in dev], **{**options, "lm_weight": 0.0})
    assert [row[0].score for row in plain] != pytest.approx([row[0].score for row in offline])  # the LM counts


def test_partials_grow_into_the_final_text(trained: Path) -> None:
    rec = Recognizer.load(trained / "run")
    utt = max(read_manifest(trained / "data" / "dev.jsonl"), key=lambda u: (len(u.text), u.duration))
    wave = load_audio(utt.audio, rec.sample_rate)
    stream = rec.stream(chunk_ms=160, mode="ctc")
    partials = []
    for start in range(0, wave.numel(), 1600):
        stream.accept(wave[start : start + 1600])
        partials.append(stream.partial())
    final = stream.finalize()[0].text
    assert partials[0] == "" and final == utt.text
    assert partials[-1] and final.startswith(partials[-1][:-1])  # the last letter may still change
    assert any(0 < len(p) < len(final) for p in partials)  # text shows up before the end
    assert stream.stats.first_partial_at is not None and len(stream.stats.chunk_seconds) == len(partials)


def test_endpointing_splits_a_recording_at_the_silences(trained: Path) -> None:
    """Three utterances separated by 2 s of quiet noise come out as three segments at the right times."""
    rec = Recognizer.load(trained / "run")
    dev = read_manifest(trained / "data" / "dev.jsonl")[:3]
    silence = torch.randn(2 * rec.sample_rate, generator=torch.Generator().manual_seed(0)) * 3e-3
    pieces, spans, t = [], [], 0.0
    for utt in dev:
        wave = load_audio(utt.audio, rec.sample_rate)
        pieces += [wave, silence]
        spans.append((t, t + wave.numel() / rec.sample_rate))
        t += (wave.numel() + silence.numel()) / rec.sample_rate
    recording = torch.cat(pieces)
    stream = rec.stream(chunk_ms=320, endpoint=EndpointConfig(trailing_silence=0.8), mode="rescore")
    segments = []
    for start in range(0, recording.numel(), 5120):
        segments += stream.accept(recording[start : start + 5120])
    segments += stream.finalize()
    assert [s.text for s in segments] == rec.transcribe([u.audio for u in dev])
    for seg, (begin, end) in zip(segments, spans, strict=True):
        letters = [t for piece, t in zip(seg.tokens, seg.times, strict=True) if piece != "▁"]
        assert seg.start <= letters[0] and begin - 0.1 <= letters[0] and letters[-1] <= end
        assert end <= seg.end <= end + 2.0


def test_cli_stream_transcribe_and_evaluate(trained: Path, capsys) -> None:
    dev = read_manifest(trained / "data" / "dev.jsonl")
    longest = max(dev, key=lambda u: u.duration)
    assert main(["transcribe", "--model", str(trained / "run"), "--stream", "--chunk-ms", "160",
                 str(longest.audio)]) == 0
    captured = capsys.readouterr()
    path, start, end, text = captured.out.strip().split("\t")
    assert path == str(longest.audio) and float(start) == 0.0 and float(end) > 0 and text
    assert "partial:" in captured.err
    assert main(["evaluate", "--model", str(trained / "run"), "--manifest", str(trained / "data" / "dev.jsonl"),
                 "--stream", "--chunk-ms", "320", "--mode", "rescore", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["streaming"] and result["chunk_ms"] == 320 and result["mode"] == "rescore"
    assert result["cer"] < 10.0
    assert 0 < result["chunk_latency_p50_ms"] <= result["chunk_latency_p95_ms"]
    assert result["first_partial_latency_ms"] is not None
    assert main(["info", str(trained / "run")]) == 0
    assert "hybrid CTC/attention" in capsys.readouterr().out


def test_ctc_only_model_refuses_attention_modes(tmp_path: Path) -> None:
    write_tones(tmp_path / "data", train=40, valid=4)
    cfg = load_recipe(ROOT / "recipes" / "tiny-tones-ctc.yaml",
                      [f"data.dir={tmp_path / 'data'}", "train.max_updates=2", "train.eval_every=2"])
    Trainer(cfg, tmp_path / "run", log=lambda _: None, show_progress=False).fit()
    with pytest.raises(ValueError, match="needs an attention decoder"):
        Recognizer.load(tmp_path / "run").transcribe([read_manifest(tmp_path / "data" / "dev.jsonl")[0].audio],
                                                     mode="joint")


def test_bundled_streaming_model_with_silero_vad_segments_real_speech() -> None:
    """The bundled digits model streams the example recordings joined by 1 s pauses; silero-vad drives the
    endpoints, so each recording comes out as its own segment, in order, at the right times."""
    folder = ROOT / "examples" / "digits"
    rec = Recognizer.load(ROOT / "models" / "digits-hybrid-streaming")
    rows = [line.split("\t") for line in (folder / "transcripts.tsv").read_text().splitlines()]
    pause = torch.randn(rec.sample_rate, generator=torch.Generator().manual_seed(0)) * 1e-3
    pieces, spans, t = [], [], 0.0
    for name, _ in rows:
        wave = load_audio(folder / name, rec.sample_rate)
        pieces += [wave, pause]
        spans.append((t, t + wave.numel() / rec.sample_rate))
        t += (wave.numel() + pause.numel()) / rec.sample_rate
    recording = torch.cat(pieces)
    stream = rec.stream(640, endpoint=EndpointConfig(trailing_silence=0.5), vad=True, mode="ctc")
    step = int(0.64 * rec.sample_rate)
    segments = []
    for start in range(0, recording.numel(), step):
        segments += stream.accept(recording[start : start + step])
    segments += stream.finalize()
    assert len(segments) == len(rows), [(s.start, s.end, s.text) for s in segments]
    # each segment's words lie in its recording (a streaming CTC spike may come a little after the sound that
    # caused it, but well before the next recording, 1 s later), and within the segment; a segment may end
    # before its file does, as the recordings end in silence of their own
    for seg, (begin, end) in zip(segments, spans, strict=True):
        assert begin - 0.1 <= seg.times[0] and seg.times[-1] <= end + 0.4
        assert seg.start <= seg.times[0] and seg.times[-1] <= seg.end
    whole = rec.transcribe([folder / name for name, _ in rows], mode="ctc")
    assert cer([s.text for s in segments], whole) < 20.0  # streaming keeps the offline transcripts (nearly)
