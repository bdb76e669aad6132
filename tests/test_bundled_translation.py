"""The bundled translation models: the default folder is one model; the opt-in preset ``multi30k-en-de-best`` loads
the partners and rerankers its config names (beside it), and its search translates val at least as well as its
first member alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from transduce.data.text import read_lines
from transduce.decoding.ensemble import Ensemble
from transduce.metrics.bleu import sacre_scores
from transduce.translate import Translator

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
DEFAULT = MODELS / "multi30k-en-de"
BEST = MODELS / "multi30k-en-de-best"
VAL = ROOT.parent / "shared" / "data" / "multi30k"
EXAMPLES = (ROOT / "examples" / "en-de.en").read_text().splitlines()


def test_default_folder_is_a_single_model_with_beam_5() -> None:
    translator = Translator.load(DEFAULT)
    decode = translator.config.decode
    assert not decode.ensemble and not decode.rerank and not translator.rerankers
    assert not isinstance(translator.model, Ensemble)
    assert (decode.beam, decode.len_penalty) == (5, 1.4)
    outputs = translator.translate(EXAMPLES)
    assert all(outputs) and len(outputs) == len(EXAMPLES)


def test_best_preset_loads_its_members_and_equals_the_same_search_named_explicitly() -> None:
    """Its config's relative paths resolve to the folders beside it (the default among them), and its search on 3
    sentences equals the one built from explicitly named folders: a wrong or stale path would load another model."""
    preset = Translator.load(BEST)
    members = [Path(m).resolve() for m in preset.config.decode.ensemble]
    assert members == [MODELS / "multi30k-en-de-s2", MODELS / "multi30k-en-de-kd", DEFAULT]
    assert isinstance(preset.model, Ensemble) and len(preset.model.members) == 1 + len(members)
    rerankers = [Path(r).resolve() for r in preset.config.decode.rerank]
    assert rerankers == [MODELS / "multi30k-en-de-r2l", MODELS / "multi30k-de-en"]
    assert len(preset.rerankers) == 2 and all(r.reverse or r.channel for r in preset.rerankers)
    explicit = Translator.load(BEST, ensemble=members, rerank=rerankers)
    sentences = EXAMPLES[:3]
    outputs = preset.translate(sentences)
    assert all(outputs) and outputs == explicit.translate(sentences)
    assert outputs != Translator.load(BEST, ensemble=(), rerank=()).translate(sentences)  # the members count


@pytest.mark.skipif(not (VAL / "val.en.gz").is_file(), reason="../shared/data/multi30k not available")
def test_best_preset_translates_val_and_the_ensemble_is_no_worse() -> None:
    """The first 200 val sentences (the tuning set): BLEU well above a broken model's for the default, and the
    preset's search (ensemble and rerankers) at least as good as its first member alone."""
    src, refs = read_lines(VAL / "val.en.gz")[:200], read_lines(VAL / "val.de.gz")[:200]
    best = float(sacre_scores(Translator.load(BEST).translate(src), refs)["bleu"])
    alone = float(sacre_scores(Translator.load(BEST, ensemble=(), rerank=()).translate(src), refs)["bleu"])
    default = float(sacre_scores(Translator.load(DEFAULT).translate(src), refs)["bleu"])
    assert best > 35.0 and default > 35.0 and best >= alone, (best, alone, default)
