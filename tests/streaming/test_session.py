"""A stream's CTC search prunes tokens per frame as offline search does (``StreamSettings.token_prune``)."""

from __future__ import annotations

import pytest
import torch
from test_batch import DIGITS, RATE, tiny_parts

from transduce.data.audio import load_audio
from transduce.decoding.ctc import CTCPrefixSearch, ctc_prefix_beam_search
from transduce.streaming.session import StreamSession, StreamSettings


@pytest.mark.parametrize("prune", [0, 2, 3])
def test_stream_search_equals_offline_search_over_the_same_log_probs(prune: int, monkeypatch) -> None:
    torch.set_num_threads(1)
    model, tokenizer, fbank = tiny_parts()  # random weights: many tokens compete in every frame
    seen: list[torch.Tensor] = []
    advance = CTCPrefixSearch.advance

    def spy(self: CTCPrefixSearch, log_probs: torch.Tensor) -> None:
        seen.append(log_probs)
        advance(self, log_probs)

    monkeypatch.setattr(CTCPrefixSearch, "advance", spy)
    settings = StreamSettings(chunk_size=4, beam=3, token_prune=prune, rescore=False)
    session = StreamSession(model, tokenizer, fbank, settings)
    for packet in load_audio(DIGITS[0], RATE).split(3000):
        session.accept(packet)
    segments = session.finalize()  # none when nothing was decoded
    log_probs = torch.cat(seen)  # (T', V) every frame the stream searched
    [best] = ctc_prefix_beam_search(log_probs, beam=3, token_prune=prune)
    assert [s.tokens for s in segments] == ([tokenizer.id_to_piece(best.tokens)] if best.tokens else [])
    [unpruned] = ctc_prefix_beam_search(log_probs, beam=3)
    assert (best.score == pytest.approx(unpruned.score)) == (prune == 0)  # pruning changed the search


def test_negative_token_prune_is_refused() -> None:
    with pytest.raises(ValueError, match="token_prune"):
        StreamSettings(chunk_size=4, token_prune=-1)
