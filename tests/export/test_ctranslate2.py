"""CTranslate2 export: the exported model searches what our PyTorch model searches (tokens and scores), for
pre-LN and post-LN Transformers, sinusoidal and learned positions, shared and separate vocabularies; the folder
carries its card and export.yaml and refuses to load with a one-line error when a file is missing.

The models are tiny Transformers trained in the test on a copy task for a few seconds (a trained model ends its
outputs with EOS, as real ones do; a random one runs to the length limit, where the searches differ by design).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from testkit import letter_sentences, train_copy

from transduce.config import DataConfig, DecodeConfig, RunConfig, to_dict
from transduce.data.tokenizer import PAD, train_sentencepiece
from transduce.decoding.hypothesis import Hypothesis, max_lengths
from transduce.export import export_model, load_exported
from transduce.models import transformer
from transduce.models.folder import write_model_folder
from transduce.translate import Translator

LETTERS = "abcdefghijklmnop"


def tiny_folder(out: Path, *, pre_norm: bool, positions: str, share: bool, steps: int = 250) -> Path:
    """A model folder holding a tiny Transformer trained to copy letter sequences."""
    torch.manual_seed(0)
    lines = letter_sentences(LETTERS, random.Random(1), 2000)
    files = [out / "spm.model"] if share else [out / "spm.src.model", out / "spm.tgt.model"]
    tokenizer = None
    for file in files:
        tokenizer = train_sentencepiece(lines, file, vocab_size=24, model_type="word")
    assert tokenizer is not None
    cfg = transformer.TransformerConfig(dim=32, heads=2, ffn_dim=64, encoder_layers=2, decoder_layers=2,
                                        dropout=0.0, pre_norm=pre_norm, positions=positions, max_positions=64,
                                        share_embeddings=share, tie_output=share)
    model = transformer.build(cfg, len(tokenizer), len(tokenizer), PAD)
    train_copy(model, tokenizer.encode(lines), steps, warmup=50)
    run = RunConfig(task="translation", data=DataConfig(joint_vocab=share, tokenizer="word"), model=cfg,
                    decode=DecodeConfig(beam=4, len_penalty=1.0, max_len_a=1.0, max_len_b=4))
    write_model_folder(out, model.state_dict(), to_dict(run), files, {"updates": steps},
                       aliases=transformer.tied_aliases(cfg))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[("pre", "sinusoidal", True), ("post", "learned", False)],
                ids=["pre-LN-sinusoidal-shared", "post-LN-learned-separate"])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, its float32 CTranslate2 export)."""
    norm, positions, share = request.param
    base = tmp_path_factory.mktemp(f"ct2-{norm}")
    src = tiny_folder(base / "model", pre_norm=norm == "pre", positions=positions, share=share)
    return src, export_model(src, "ctranslate2", base / "ct2")


def _sources() -> list[str]:
    """A batch of mixed lengths (1 to 9 letters, as in training)."""
    return letter_sentences(LETTERS, random.Random(7), 24)


def _top_of_union(ours: list[Hypothesis], theirs: list[Hypothesis], k: int) -> list[tuple[int, ...]]:
    pool = {tuple(h.tokens): h.score for h in [*ours, *theirs]}
    return sorted(pool, key=lambda tokens: -pool[tokens])[:k]


@pytest.mark.parametrize("beam", [1, 4])
def test_ct2_search_equals_ours(exported: tuple[Path, Path], beam: int) -> None:
    """Best hypotheses are the same tokens; scores and log-probs agree; n-best: at the step a sentence
    completes, CTranslate2 keeps every hypothesis ending there where ours keeps the first K (fairseq), so its
    n-best is the best K of both lists."""
    src, out = exported
    ours, theirs = Translator.load(src), Translator.load(out)
    nbest = beam
    a, b = ours.search(_sources(), beam=beam, nbest=nbest), theirs.search(_sources(), beam=beam, nbest=nbest)
    assert [row[0].tokens for row in a] == [row[0].tokens for row in b]
    copies = sum(text == source for text, source in zip(ours.translate(_sources()), _sources(), strict=True))
    assert copies > len(a) // 2  # a trained model: its outputs end with EOS, before the length limit
    for row_a, row_b in zip(a, b, strict=True):
        assert row_b[0].score == pytest.approx(row_a[0].score, abs=1e-4)
        assert row_b[0].log_prob == pytest.approx(row_a[0].log_prob, abs=1e-3)
        assert [tuple(h.tokens) for h in row_b] == _top_of_union(row_a, row_b, nbest)
        same = {tuple(h.tokens): h.score for h in row_a}
        for h in row_b:
            if tuple(h.tokens) in same:
                assert h.score == pytest.approx(same[tuple(h.tokens)], abs=1e-4)
    assert ours.translate(_sources(), beam=beam) == theirs.translate(_sources(), beam=beam)


def test_length_penalty_and_batch_size_follow_our_settings(exported: tuple[Path, Path]) -> None:
    src, out = exported
    ours, theirs = Translator.load(src), Translator.load(out)
    settings = {"beam": 3, "nbest": 2, "len_penalty": 0.6, "batch_size": 5}
    a, b = ours.search(_sources(), **settings), theirs.search(_sources(), **settings)
    assert [row[0].tokens for row in a] == [row[0].tokens for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        length = len(row_a[0].tokens) + 1  # EOS counted, by both
        assert row_b[0].score == pytest.approx(row_a[0].log_prob / length**0.6, abs=1e-4)


def test_max_length_is_per_sentence(exported: tuple[Path, Path]) -> None:
    """Sentences of different lengths keep their own limit a * (pieces + EOS) + b, also when it cuts them."""
    src, out = exported
    theirs = Translator.load(out)
    sources = _sources()
    ids = theirs.tokenizers.src.encode(sources)
    rows = theirs.search(sources, max_len_a=0.5, max_len_b=1)
    limits = max_lengths(torch.tensor([len(source) + 1 for source in ids]), 0.5, 1).tolist()
    assert all(len(row[0].tokens) <= limit for row, limit in zip(rows, limits, strict=True))
    assert any(len(row[0].tokens) == limit for row, limit in zip(rows, limits, strict=True))  # some are cut


def test_unsupported_settings_are_errors(exported: tuple[Path, Path]) -> None:
    theirs = Translator.load(exported[1])
    with pytest.raises(ValueError, match="len_penalty_style gnmt"):
        theirs.translate(["a b"], len_penalty_style="gnmt")
    with pytest.raises(ValueError, match="coverage_penalty"):
        theirs.translate(["a b"], coverage_penalty=0.2)


def test_folder_has_card_and_export_info(exported: tuple[Path, Path]) -> None:
    src, out = exported
    info = yaml.safe_load((out / "export.yaml").read_text())
    assert info["format"] == "ctranslate2" and info["quantize"] is None and info["source"] == str(src)
    assert info["compute_type"] == "float32" and "transduce" in info
    assert info["parity"]["max_token_log_prob_diff"] < 1e-4  # measured at export against the source
    card = (out / "README.md").read_text()
    assert str(src) in card and "transduce translate --model" in card and "Parity" in card
    assert (out / "config.yaml").read_text() == (src / "config.yaml").read_text()
    spm = sorted(p.name for p in src.glob("spm*.model"))
    assert spm and all((out / name).read_bytes() == (src / name).read_bytes() for name in spm)
    assert not (out / "model.safetensors").exists()  # no PyTorch weights: the runtime's files only


@pytest.mark.parametrize("missing", ["ctranslate2/model.bin", "README.md", "config.yaml"])
def test_missing_file_is_a_one_line_error(exported: tuple[Path, Path], tmp_path: Path, missing: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(exported[1], broken)
    (broken / missing).unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_exported(broken)
    assert str(broken) in str(err.value) and missing in str(err.value) and "\n" not in str(err.value)


def test_quantized_export_is_close(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """int8 weights: the compute type is one this CPU runs, and the copy outputs stay those of float32."""
    src, _ = exported
    out = export_model(src, "ctranslate2", tmp_path / "int8", "int8")
    info = yaml.safe_load((out / "export.yaml").read_text())
    assert info["quantize"] == "int8" and info["compute_type"] in ("int8", "int8_float32")
    theirs, ours = Translator.load(out), Translator.load(src)
    assert theirs.model.compute_type == info["compute_type"]
    same = [a == b for a, b in zip(ours.translate(_sources()), theirs.translate(_sources()), strict=True)]
    assert sum(same) >= len(same) - 2, same


def test_exported_translator_refuses_pytorch_only_uses(exported: tuple[Path, Path]) -> None:
    theirs = Translator.load(exported[1])
    with pytest.raises(ValueError, match="has no PyTorch model"):
        theirs.model.decoder  # noqa: B018 (attention plots and alignment read the PyTorch model)
    with pytest.raises(ValueError, match="decodes alone"):
        Translator.load(exported[1], ensemble=[exported[0]])
    assert theirs.config.decode.ensemble == () and theirs.rerankers == []
