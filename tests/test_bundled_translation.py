"""The bundled translation model loads the partners and rerankers its config names, and translates val."""

from __future__ import annotations

from pathlib import Path

import pytest

from transduce.data.text import read_lines
from transduce.decoding.ensemble import Ensemble
from transduce.metrics.bleu import sacre_scores
from transduce.translate import Translator

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "multi30k-en-de"
VAL = ROOT.parent / "shared" / "data" / "multi30k"


def test_bundled_model_loads_the_members_its_config_names() -> None:
    translator = Translator.load(MODEL)
    members = translator.config.decode.ensemble
    for member in members:  # partners live beside the model and share its tokenizers
        assert (Path(member) / "model.safetensors").is_file() and Path(member).resolve().parent == MODEL.parent
    if members:
        assert isinstance(translator.model, Ensemble) and len(translator.model.members) == 1 + len(members)
    rerankers = translator.config.decode.rerank
    for reranker in rerankers:  # right-to-left and de->en (channel) models beside it
        assert (Path(reranker) / "model.safetensors").is_file() and Path(reranker).resolve().parent == MODEL.parent
    assert len(translator.rerankers) == len(rerankers) and all(r.reverse or r.channel for r in translator.rerankers)
    outputs = translator.translate((ROOT / "examples" / "en-de.en").read_text().splitlines(), beam=2)
    assert all(outputs) and len(outputs) == 6


@pytest.mark.skipif(not (VAL / "val.en.gz").is_file(), reason="../shared/data/multi30k not available")
def test_bundled_default_search_translates_val_and_the_ensemble_is_no_worse() -> None:
    """The first 200 val sentences (the tuning set): BLEU well above a broken model's, and the default search
    (with its ensemble and reranker) at least as good as the first member alone."""
    src, refs = read_lines(VAL / "val.en.gz")[:200], read_lines(VAL / "val.de.gz")[:200]
    default = float(sacre_scores(Translator.load(MODEL).translate(src), refs)["bleu"])
    alone = float(sacre_scores(Translator.load(MODEL, ensemble=(), rerank=()).translate(src), refs)["bleu"])
    assert default > 35.0 and default >= alone, (default, alone)
