"""``StreamSession.partial`` decodes the best tokens only when they changed, and says what decoding them says."""

from __future__ import annotations

import torch
from test_batch import DIGITS, RATE, tiny_parts

from transduce.data.audio import load_audio
from transduce.streaming.endpoint import EndpointConfig
from transduce.streaming.session import StreamSession, StreamSettings


def test_partial_text_is_cached_by_tokens_and_equals_decoding_them(monkeypatch) -> None:
    torch.set_num_threads(1)
    model, tokenizer, fbank = tiny_parts()  # random weights: the best tokens change often
    decode = tokenizer.decode
    calls: list[list[list[int]]] = []

    def counted(ids: list[list[int]]) -> list[str]:
        calls.append(ids)
        return decode(ids)

    monkeypatch.setattr(tokenizer, "decode", counted)
    settings = StreamSettings(chunk_size=4, beam=3, rescore=False,
                              endpoint=EndpointConfig(trailing_silence=0.3, max_segment=1.0))
    session = StreamSession(model, tokenizer, fbank, settings)
    changes, previous = 0, ()
    for packet in load_audio(DIGITS[0], RATE).split(1500):
        session.accept(packet)
        tokens = tuple(session.search.nbest(1)[0].tokens)
        changes += tokens != previous and bool(tokens)
        previous = tokens
        before = len(calls)
        assert session.partial() == decode([list(tokens)])[0].strip()  # the uncached answer
        assert session.partial() == session.partial()
        assert len(calls) == before  # the stream's own check after its last chunk already decoded these tokens
    assert calls  # the stream did decode (partials and segments)
    assert changes >= 2  # the test saw the text change, so the cache was refreshed, not just kept
