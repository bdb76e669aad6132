"""Endpoint rules on synthetic per-frame decisions; silero VAD streaming and segmentation on real speech."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from transduce.data.audio import load_audio
from transduce.streaming.endpoint import (
    Endpoint,
    EndpointConfig,
    Endpointer,
    EndpointState,
    advance,
    finish,
    segment_audio,
)
from transduce.streaming.vad import SileroVAD, default_model_path

FRAME = 0.02  # frame shift of 10 ms features subsampled 2x; every duration below is whole frames
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLIPS = sorted(EXAMPLES.glob("digits/*.wav")) + sorted(EXAMPLES.glob("captions/*.wav"))


def frames(seconds: float, speech: bool) -> list[bool]:
    count = round(seconds / FRAME)
    assert abs(count * FRAME - seconds) < 1e-9, f"{seconds} s is not whole frames"
    return [speech] * count


def endpoints(decisions: list[bool], config: EndpointConfig, chunks: list[int] | None = None) -> list[Endpoint]:
    """Every endpoint of a stream fed in chunks of the given sizes (default: one chunk), end of stream included."""
    state, out, start = EndpointState(), [], 0
    for size in chunks or [len(decisions)]:
        state, fired = advance(config, state, decisions[start : start + size], FRAME)
        out += fired
        start += size
    assert start == len(decisions)
    return out + finish(config, state)[1]


def spans(found: list[Endpoint]) -> list[tuple[float, float]]:
    """Times are exact: frames times the frame duration, rounded to the microsecond."""
    return [(e.segment.start, e.segment.end) for e in found if e.segment is not None]


# Frame decisions, rules checked after every frame (VAD or CTC argmax).


@pytest.mark.parametrize(("padding", "expected"), [(0.0, [(0.0, 1.0), (2.0, 2.5)]), (0.2, [(0.0, 1.2), (1.8, 2.7)])])
def test_speech_then_silence_gives_the_speech_spans(padding: float, expected: list[tuple[float, float]]) -> None:
    decisions = frames(1.0, True) + frames(1.0, False) + frames(0.5, True) + frames(3.0, False)
    found = endpoints(decisions, EndpointConfig(trailing_silence=0.8, padding=padding))
    assert [(e.time, e.rule) for e in found] == [(1.8, "trailing_silence"), (3.3, "trailing_silence")]
    assert spans(found) == expected  # padding stays within each segment


def test_long_speech_is_split_at_max_segment() -> None:
    found = endpoints(frames(50.0, True), EndpointConfig(max_segment=20.0))
    assert [e.rule for e in found] == ["max_segment", "max_segment", "end_of_stream"]
    assert spans(found) == [(0.0, 20.0), (20.0, 40.0), (40.0, 50.0)]


def test_long_silence_ends_empty_segments_and_reports_no_speech() -> None:
    found = endpoints(frames(12.0, False), EndpointConfig(silence_before_speech=5.0))
    assert [(e.time, e.rule, e.segment) for e in found] == [
        (5.0, "silence_before_speech", None),
        (10.0, "silence_before_speech", None),
    ]
    later = endpoints(frames(4.8, False) + frames(0.4, True) + frames(0.2, False), EndpointConfig())
    assert spans(later) == [(4.8, 5.2)]  # speech before the limit keeps the segment


def test_min_speech_makes_isolated_blips_silence() -> None:
    cfg = EndpointConfig(trailing_silence=0.8, min_speech=0.2)
    blip, gap = frames(0.12, True), frames(1.0, False)
    assert endpoints(blip + frames(6.0, False), cfg)[0].rule == "silence_before_speech"
    # a blip more than trailing_silence before speech is forgotten; a closer one starts the speech
    assert spans(endpoints(gap + blip + gap + frames(0.5, True) + gap, cfg)) == [(2.12, 2.62)]
    assert spans(endpoints(gap + blip + frames(0.3, False) + frames(0.5, True) + gap, cfg)) == [(1.0, 1.92)]
    # once speech counts, every speech frame extends it and restarts the trailing silence
    found = endpoints(frames(1.0, True) + frames(0.4, False) + blip + gap, cfg)
    assert [(e.time, e.rule) for e in found] == [(2.32, "trailing_silence")]
    assert spans(found) == [(0.0, 1.52)]


def test_chunking_the_decisions_changes_nothing() -> None:
    rng = random.Random(0)
    decisions: list[bool] = []
    while len(decisions) < 6000:  # 120 s of random speech and silence runs
        decisions += [rng.random() < 0.5] * rng.randint(1, 120)
    decisions += frames(1.0, True)  # speech still open at the end of the stream
    cfg = EndpointConfig(
        trailing_silence=0.6, silence_before_speech=2.0, max_segment=8.0, min_speech=0.12, padding=0.08
    )
    whole = endpoints(decisions, cfg)
    assert {e.rule for e in whole} == {"silence_before_speech", "trailing_silence", "max_segment", "end_of_stream"}
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(decisions)), rng.randint(1, 800)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(decisions)], strict=True)]
        assert endpoints(decisions, cfg, sizes) == whole


def test_probabilities_are_thresholded_like_decisions() -> None:
    probs = torch.tensor([0.9] * 50 + [0.2] * 50 + [0.5] * 20 + [0.49] * 80)
    cfg = EndpointConfig(speech_threshold=0.5)
    state, by_prob = advance(cfg, EndpointState(), probs, FRAME)
    _, by_bool = advance(cfg, EndpointState(), (probs >= 0.5).tolist(), FRAME)
    assert by_prob == by_bool
    assert spans(by_prob) == [(0.0, 1.0), (2.0, 2.4)]


def test_bad_inputs_fail_loudly() -> None:
    with pytest.raises(ValueError, match="endpoint.max_segment"):
        EndpointConfig(max_segment=0)
    with pytest.raises(ValueError, match="endpoint.speech_threshold"):
        EndpointConfig(speech_threshold=1.5)
    state, _ = advance(EndpointConfig(), EndpointState(), [True], FRAME)
    with pytest.raises(ValueError, match="frame_seconds changed"):
        advance(EndpointConfig(), state, [True], 0.032)
    with pytest.raises(ValueError, match="bool decisions or float probabilities"):
        advance(EndpointConfig(), EndpointState(), torch.tensor([1, 0]), FRAME)


# A recognizer's own "decoded" flag, valid at chunk ends (how transduce.streaming.stream uses it).


def run_decoded(decisions: list[bool], chunk: int, config: EndpointConfig, decoded_after: int = 1) -> list[int]:
    """Frame indices (ends of chunks) where an endpoint fires; a segment counts as decoded once it
    has seen ``decoded_after`` speech frames."""
    ep = Endpointer(config)
    ends, spoken = [], 0
    for start in range(0, len(decisions), chunk):
        part = decisions[start : start + chunk]
        spoken += sum(part)
        if ep.update(torch.tensor(part), FRAME, decoded=spoken >= decoded_after):
            ends.append(start + len(part))
            ep.reset()
            spoken = 0
    return ends


def test_decoded_flag_trailing_silence_ends_segments() -> None:
    decisions = frames(1.0, True) + frames(1.0, False) + frames(0.5, True) + frames(3.0, False)
    ends = run_decoded(decisions, 1, EndpointConfig(trailing_silence=0.8))
    assert ends == [50 + 40, 50 + 50 + 25 + 40]  # 0.8 s = 40 frames after each speech run


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_decoded_flag_delays_the_endpoint_to_the_chunk_end(chunk: int) -> None:
    [end] = run_decoded(frames(1.0, True) + frames(2.0, False), chunk, EndpointConfig(trailing_silence=0.8))
    assert 90 <= end < 90 + chunk


def test_decoded_flag_max_segment_and_leading_silence() -> None:
    assert run_decoded(frames(50.0, True), 5, EndpointConfig(max_segment=20.0)) == [1000, 2000]
    cfg = EndpointConfig(trailing_silence=0.8, silence_before_speech=5.0)
    assert run_decoded(frames(6.0, False), 1, cfg) == [250]
    assert run_decoded(frames(4.0, False), 1, cfg) == []


# silero VAD on real speech.


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD(16000)


def random_chunks(pcm: Tensor, rng: random.Random) -> Iterator[Tensor]:
    start = 0
    while start < pcm.numel():
        size = rng.choice([0, 1, 63, 511, 512, 513, rng.randint(1, 5000)])
        yield pcm[start : start + size]
        start += size


def test_probabilities_match_silero_own_stateful_model(vad: SileroVAD) -> None:
    pcm = load_audio(CLIPS[0], 16000)
    with warnings.catch_warnings():  # torch.jit.load is deprecated; silero ships TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = torch.jit.load(str(default_model_path())).eval()  # silero's forward, state kept inside it
    reference.reset_states()
    windows = torch.nn.functional.pad(pcm, (0, -pcm.numel() % 512)).view(-1, 512)
    with torch.inference_mode():
        expected = torch.cat([reference(w, 16000)[:, 0] for w in windows])
    ours = vad.probabilities(pcm)
    assert torch.equal(ours, expected)
    assert ours.max() > 0.9 and ours.min() < 0.1  # real speech and real pauses


def test_streaming_probabilities_equal_whole_signal(vad: SileroVAD) -> None:
    pcm = load_audio(CLIPS[1], 16000)
    whole = vad.probabilities(pcm)
    rng = random.Random(1)
    for _ in range(2):
        state, parts = vad.init_state(), []
        for chunk in random_chunks(pcm, rng):
            probs, state = vad.accept(chunk, state)
            parts.append(probs)
        parts.append(vad.finish(state)[0])
        assert torch.equal(torch.cat(parts), whole)


def test_one_model_serves_interleaved_streams(vad: SileroVAD) -> None:
    a, b = load_audio(CLIPS[1], 16000), load_audio(CLIPS[2], 16000)
    states = [vad.init_state(), vad.init_state()]
    out: list[list[Tensor]] = [[], []]
    for start in range(0, max(a.numel(), b.numel()), 3000):
        for i, pcm in enumerate((a, b)):
            probs, states[i] = vad.accept(pcm[start : start + 3000], states[i])
            out[i].append(probs)
    for i, pcm in enumerate((a, b)):
        out[i].append(vad.finish(states[i])[0])
        assert torch.equal(torch.cat(out[i]), vad.probabilities(pcm))


def test_sample_rates(vad: SileroVAD) -> None:
    assert vad.frame_seconds == pytest.approx(0.032)
    with pytest.raises(ValueError, match=r"supports sample rates \[8000, 16000\], got 44100"):
        SileroVAD(44100)
    narrow = SileroVAD(8000)
    assert narrow.frame_seconds == pytest.approx(0.032)
    assert narrow.probabilities(load_audio(CLIPS[0], 8000)).max() > 0.9
    with pytest.raises(ValueError, match="resample first"):
        segment_audio(torch.zeros(8000), 8000, vad, EndpointConfig())


def speech_span(pcm: Tensor, rate: int = 16000) -> tuple[float, float]:
    """First and last 10 ms frame within 40 dB of the clip's loudest: where its speech starts and ends."""
    hop = rate // 100
    power = pcm[: pcm.numel() // hop * hop].view(-1, hop).pow(2).mean(1)  # (frames,)
    active = (power > power.max() * 1e-4).nonzero()[:, 0]
    return active[0].item() / 100, (active[-1].item() + 1) / 100


def recording(clips: list[Path], gap: float = 1.5) -> tuple[Tensor, list[tuple[float, float]]]:
    """Clips separated by ``gap`` seconds of faint noise (-60 dBFS), and the true speech spans."""
    parts, truth, t = [torch.zeros(16000)], [], 1.0
    for path in clips:
        pcm = load_audio(path, 16000)
        start, end = speech_span(pcm)
        truth.append((t + start, t + end))
        parts += [pcm, torch.zeros(round(gap * 16000))]
        t += pcm.numel() / 16000 + gap
    pcm = torch.cat(parts)
    return pcm + 1e-3 * torch.randn(pcm.numel(), generator=torch.Generator().manual_seed(0)), truth


VAD_ENDPOINT = EndpointConfig(trailing_silence=0.8, min_speech=0.25, padding=0.1)


def test_segment_audio_finds_the_spoken_clips(vad: SileroVAD) -> None:
    pcm, truth = recording(CLIPS)
    found = segment_audio(pcm, 16000, vad, VAD_ENDPOINT)
    assert len(found) == len(truth), (found, truth)
    for (start, end), (true_start, true_end) in zip(found, truth, strict=True):
        assert abs(start - true_start) <= 0.3 and abs(end - true_end) <= 0.3, (found, truth)
    assert all(a[1] <= b[0] for a, b in zip(found, found[1:], strict=False))  # ordered, disjoint
    assert found[-1][1] <= pcm.numel() / 16000


def test_segment_audio_takes_an_iterator_of_chunks(vad: SileroVAD) -> None:
    pcm, _ = recording(CLIPS[:2], gap=1.0)
    whole = segment_audio(pcm, 16000, vad, VAD_ENDPOINT)
    assert len(whole) == 2
    assert segment_audio(random_chunks(pcm, random.Random(2)), 16000, vad, VAD_ENDPOINT) == whole
