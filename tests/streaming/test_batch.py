"""Batched stream sessions equal each stream run alone: N streams joining at different rounds, fed packets of
different sizes, some cut by endpoints mid-stream, advanced together give each stream's own partials (after
every packet and after every chunk), segments, times and token times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from transduce.config import ConfigError
from transduce.data.audio import load_audio
from transduce.data.features import Fbank, FbankConfig
from transduce.data.tokenizer import Tokenizer
from transduce.models.ctc import CTCModelConfig, build_ctc
from transduce.recognize import Recognizer
from transduce.streaming.batch import StreamBatch
from transduce.streaming.endpoint import EndpointConfig
from transduce.streaming.session import Segment, StreamSession, StreamSettings, unstreamable

ROOT = Path(__file__).resolve().parents[2]
DIGITS = sorted((ROOT / "examples" / "digits").glob("*.wav"))
RATE = 16000


@dataclass
class Plan:
    """One stream of the scenario: its audio, the tick it joins at, its packet size, its settings."""

    wave: torch.Tensor
    join: int
    packet: int
    endpoint: EndpointConfig | None
    packets: list[torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.packets = list(self.wave.split(self.packet))


@dataclass
class Run:
    """What a stream produced: partial text after each packet, after each chunk, and its segments."""

    per_packet: list[str] = field(default_factory=list)
    per_chunk: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)


Maker = Callable[[Plan], StreamSession]
"""Builds the session of a stream (the same way for the reference and the batch)."""


def alone(make: Maker, plan: Plan) -> Run:
    """The reference: the stream by itself through the single-stream API."""
    session, run = make(plan), Run()
    for packet in plan.packets:
        run.segments += session.accept(packet)
        run.per_packet.append(session.partial())
    run.segments += session.finalize()
    return run


def alone_per_chunk(make: Maker, plan: Plan, chunk: int, left: int) -> list[str]:
    """Partials after every chunk, the whole recording given at once to a batch of one."""
    batch = StreamBatch(chunk_size=chunk, left_chunks=left)
    key = batch.add(make(plan))
    batch.feed(key, plan.wave)
    batch.finish(key)
    partials = []
    while updates := batch.step():
        partials += [u.partial for u in updates]
    return partials


def together(make: Maker, plans: list[Plan], chunk: int, left: int) -> tuple[list[Run], list[int]]:
    """All streams in one batch: each tick, streams that joined get their next packet (or their end), then
    rounds run until no stream can advance. Returns each stream's run and the batch size of every round."""
    batch = StreamBatch(chunk_size=chunk, left_chunks=left)
    runs, keys, sizes = [Run() for _ in plans], {}, []
    tick = 0
    while len(keys) < len(plans) or any(not batch.sessions[k].done for k in keys.values()):
        for i, plan in enumerate(plans):
            if plan.join == tick:
                keys[i] = batch.add(make(plan))
        fed = []
        for i, key in keys.items():
            if tick - plans[i].join < len(plans[i].packets):
                batch.feed(key, plans[i].packets[tick - plans[i].join])
                fed.append(i)
            elif not batch.sessions[key].closing:
                batch.finish(key)
        by_key = {key: i for i, key in keys.items()}
        while updates := batch.step():
            sizes.append(len(updates))
            for update in updates:
                runs[by_key[update.key]].per_chunk.append(update.partial)
                runs[by_key[update.key]].segments += update.segments
        for i in fed:
            runs[i].per_packet.append(batch.partial(keys[i]))
        tick += 1
    for key in keys.values():
        batch.remove(key)
    assert len(batch) == 0
    return runs, sizes


def check_same(make: Maker, plans: list[Plan], chunk: int, left: int) -> tuple[list[int], list[int]]:
    """Batched == alone for every stream -> the batch size of every round and each stream's segment count."""
    runs, sizes = together(make, plans, chunk, left)
    counts = []
    for plan, run in zip(plans, runs, strict=True):
        reference = alone(make, plan)
        assert run.per_packet == reference.per_packet
        assert run.segments == reference.segments  # text, start, end, tokens and token times
        assert run.per_chunk == alone_per_chunk(make, plan, chunk, left)
        counts.append(len(reference.segments))
    return sizes, counts


def tiny_parts() -> tuple:
    torch.manual_seed(0)
    cfg = CTCModelConfig(input_dim=20, dim=32, heads=4, layers=2, ffn_dim=64, kernel_size=5, dropout=0.0,
                         causal_conv=True, subsampling_channels=8, decoder_layers=1, reverse_decoder_layers=1)
    tokenizer = Tokenizer(ROOT / "models" / "digits-hybrid-streaming" / "spm.model")
    model = build_ctc(cfg, len(tokenizer)).eval()
    with torch.no_grad():
        model.head.bias[0] += 0.5  # random weights, blank a little likelier: endpoints fire on its runs
    return model, tokenizer, Fbank(FbankConfig(num_mel_bins=20))


@pytest.mark.parametrize(("chunk", "left"), [(4, -1), (3, 1)])
def test_tiny_hybrid_batched_streams_equal_each_stream_alone(chunk: int, left: int) -> None:
    torch.set_num_threads(1)
    model, tokenizer, fbank = tiny_parts()
    cut = EndpointConfig(trailing_silence=0.3, max_segment=1.0)

    def make(plan: Plan) -> StreamSession:
        return StreamSession(model, tokenizer, fbank, StreamSettings(
            chunk_size=chunk, left_chunks=left, beam=3, endpoint=plan.endpoint, ctc_weight=0.5, reverse_weight=0.3))

    waves = [load_audio(path, RATE) for path in DIGITS[:5]]
    plans = [Plan(waves[0], 0, 3000, cut), Plan(waves[1], 0, 1234, None), Plan(waves[2], 2, 8000, cut),
             Plan(waves[3], 5, 640, None), Plan(waves[4], 9, 2500, cut)]
    sizes, counts = check_same(make, plans, chunk, left)
    assert max(sizes) >= 3  # rounds did batch several streams
    assert counts[0] > 1 and counts[2] > 1 and counts[4] > 1  # endpoints fired mid-stream


def test_bundled_streaming_model_batched_equals_alone() -> None:
    """``models/digits-hybrid-streaming`` with rescoring; two recordings joined by a pause make an endpoint fire."""
    torch.set_num_threads(1)
    rec = Recognizer.load(ROOT / "models" / "digits-hybrid-streaming")
    pause = torch.zeros(RATE // 2)
    waves = [load_audio(path, RATE) for path in DIGITS[:5]]
    cut = EndpointConfig(trailing_silence=0.4)

    def make(plan: Plan) -> StreamSession:
        return rec.stream(320, endpoint=plan.endpoint, beam=4, mode="rescore")

    plans = [Plan(torch.cat([waves[0], pause, waves[1]]), 0, 5120, cut), Plan(waves[2], 1, 2000, None),
             Plan(waves[3], 3, 7000, cut), Plan(waves[4], 4, 4096, None)]
    sizes, counts = check_same(make, plans, rec.chunk_frames(320), -1)
    assert max(sizes) >= 3
    assert counts[0] >= 2 and counts[2] >= 2 and counts[1] == counts[3] == 1  # endpoints cut only where asked


def test_a_batch_refuses_other_chunking_and_other_models() -> None:
    model, tokenizer, fbank = tiny_parts()
    batch = StreamBatch(chunk_size=4)
    batch.add(StreamSession(model, tokenizer, fbank, StreamSettings(chunk_size=4)))
    with pytest.raises(ValueError, match="chunk_size=4"):
        batch.add(StreamSession(model, tokenizer, fbank, StreamSettings(chunk_size=8)))
    other, _, _ = tiny_parts()
    with pytest.raises(ValueError, match="share one model"):
        batch.add(StreamSession(other, tokenizer, fbank, StreamSettings(chunk_size=4)))
    session = StreamSession(model, tokenizer, fbank, StreamSettings(chunk_size=4))
    session.finalize()
    with pytest.raises(ValueError, match="finalized"):
        session.accept(torch.zeros(100))


def test_a_model_that_cannot_stream_is_a_config_error_naming_the_folder_and_field() -> None:
    folder = ROOT / "models" / "digits-conformer-ctc"
    rec = Recognizer.load(folder)
    with pytest.raises(ConfigError, match=r"digits-conformer-ctc/config.yaml: model.causal_conv"):
        rec.stream(640)


@pytest.mark.parametrize(("change", "field"), [({"encoder": "transformer", "causal_conv": False}, "model.encoder"),
                                                ({"causal_conv": False}, "model.causal_conv"),
                                                ({"utterance_norm": True}, "model.utterance_norm")])
def test_a_session_names_the_field_that_keeps_a_model_from_streaming(change: dict, field: str) -> None:
    _, tokenizer, fbank = tiny_parts()
    cfg = CTCModelConfig(input_dim=20, dim=32, heads=4, layers=1, ffn_dim=64, kernel_size=5, causal_conv=True)
    model = build_ctc(replace(cfg, **change), len(tokenizer)).eval()
    assert unstreamable(model) is not None and unstreamable(model).startswith(field)
    with pytest.raises(ValueError, match=field):
        StreamSession(model, tokenizer, fbank, StreamSettings(chunk_size=4))
    assert unstreamable(build_ctc(cfg, len(tokenizer))) is None
