"""Right-to-left models (data.reverse_target) and n-best reranking with them, through the CLI and the API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from testkit import run_cli as run
from testkit import set_config, train_tiny_copy

from transduce.decoding.corpus import search_corpus
from transduce.decoding.hypothesis import length_penalty
from transduce.decoding.rerank import sequence_log_probs
from transduce.translate import Translator


@pytest.fixture(scope="module")
def right_to_left(tmp_path_factory) -> Path:
    """tiny-copy trained on reversed targets: internally it copies; outputs read reversed, as the task wants."""
    return train_tiny_copy(tmp_path_factory.mktemp("r2l"), "data.reverse_target=true")


def test_a_right_to_left_model_translates_in_reading_order(right_to_left: Path, capsys) -> None:
    data, run_dir = right_to_left / "data", right_to_left / "run"
    code, out, _ = run(["translate", "--model", str(run_dir), "--input", str(data / "test.src")], capsys)
    refs = (data / "test.tgt").read_text().splitlines()
    assert code == 0
    assert sum(h == r for h, r in zip(out.splitlines(), refs, strict=True)) / len(refs) >= 0.95
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e for e in evals if e["kind"] == "valid"][-1]["bleu"] > 90  # dev BLEU on flipped-back outputs
    translator = Translator.load(run_dir)  # the network itself writes the reverse: a copy of the source
    ids = translator.tokenizers.src.encode(["a b c d"])
    raw = search_corpus(translator.model, ids, translator.config.decode)[0][0].tokens
    assert translator.tokenizers.tgt.decode([raw]) == ["a b c d"]
    assert translator.translate(["a b c d"]) == ["d c b a"]
    code, out, _ = run(["info", str(run_dir)], capsys)
    assert code == 0 and "right to left (data.reverse_target)" in out


def test_rerank_orders_the_nbest_by_the_combined_score(trained: Path, right_to_left: Path) -> None:
    sentences = ["a b c d e", "q r s", "t u v w"]
    left = trained / "run"
    plain = Translator.load(left, rerank=())
    nbest = plain.search(sentences, beam=4, nbest=4)
    r2l = Translator.load(right_to_left / "run")
    for weight in (0.5, 1.0):
        reranked = Translator.load(left, rerank=[right_to_left / "run"]).search(
            sentences, beam=4, nbest=4, rerank_weight=weight)
        for sentence, hyps, got in zip(sentences, nbest, reranked, strict=True):
            src = r2l.tokenizers.src.encode([sentence])[0]
            texts = plain.tokenizers.tgt.decode([h.tokens for h in hyps])
            tgt = [ids[::-1] for ids in r2l.tokenizers.tgt.encode(texts)]
            theirs = sequence_log_probs(r2l.model, [src] * len(tgt), tgt)
            want = [(1 - weight) * h.score + weight * s / length_penalty(len(t) + 1, 1.0, "fairseq")
                    for h, s, t in zip(hyps, theirs, tgt, strict=True)]
            order = sorted(range(len(hyps)), key=lambda j: -want[j])
            assert [h.tokens for h in got] == [hyps[j].tokens for j in order]
            assert [h.score for h in got] == pytest.approx([want[j] for j in order], abs=1e-5)
    assert plain.config.decode.len_penalty == 1.0  # the length penalty the expected scores used
    no_weight = Translator.load(left, rerank=[right_to_left / "run"]).search(sentences, beam=4, nbest=4,
                                                                             rerank_weight=0.0)
    assert [[h.tokens for h in row] for row in no_weight] == [[h.tokens for h in row] for row in nbest]


def test_decode_rerank_in_the_config_is_used_by_default(trained: Path, right_to_left: Path, capsys,
                                                        tmp_path: Path) -> None:
    left = shutil.copytree(trained / "run" / "model", tmp_path / "left")
    shutil.copytree(right_to_left / "run" / "model", tmp_path / "r2l")
    args = ["--nbest", "3", "--rerank-weight", "0.7", "a b c d e", "q r s"]
    _, alone, _ = run(["translate", "--model", str(left), *args], capsys)
    code, explicit, _ = run(["translate", "--model", str(left), "--rerank", str(tmp_path / "r2l"), *args], capsys)
    assert code == 0 and explicit != alone  # new scores
    set_config(left, "decode.rerank", ["../r2l"])  # resolved in the model folder
    assert run(["translate", "--model", str(left), *args], capsys)[1] == explicit
    assert run(["translate", "--model", str(left), "--rerank", "none", *args], capsys)[1] == alone
    data = trained / "data"
    code, out, _ = run(["evaluate", "--model", str(left), "--src", str(data / "test.src"), "--ref",
                        str(data / "test.tgt"), "--lang", "en", "--rerank-weight", "0.3"], capsys)
    result = json.loads(out)
    assert code == 0 and result["rerank"] == [str(left / "../r2l")] and result["rerank_weight"] == 0.3
    assert result["bleu"] > 90
    code, out, _ = run(["info", str(left)], capsys)
    assert code == 0 and "n-best reranked by ../r2l (weight 0.5)" in out


def test_rerank_usage_errors(trained: Path, capsys) -> None:
    model = str(trained / "run")
    code, _, err = run(["translate", "--model", model, "--rerank-weight", "1.5", "a b c"], capsys)
    assert code == 2 and "--rerank-weight must be in [0, 1]" in err
    code, _, err = run(["evaluate", "--model", model, "--manifest", "x.jsonl", "--rerank", model], capsys)
    assert code == 2 and "--rerank" in err


def test_attention_views_refuse_a_right_to_left_model(right_to_left: Path, capsys, tmp_path: Path) -> None:
    model = str(right_to_left / "run")
    code, _, err = run(["translate", "--model", model, "--plot-attention", str(tmp_path), "a b c"], capsys)
    assert code == 2 and "right-to-left model" in err
    (tmp_path / "src.txt").write_text("a b c\n")
    (tmp_path / "tgt.txt").write_text("c b a\n")
    code, _, err = run(["align", "--model", model, "--src", str(tmp_path / "src.txt"), "--tgt",
                        str(tmp_path / "tgt.txt"), "--out", str(tmp_path / "al")], capsys)
    assert code == 2 and "right-to-left model" in err


def test_a_reverse_direction_model_reranks_as_a_channel_model(trained: Path, tmp_path: Path) -> None:
    """Reversing letters is its own inverse, so the tiny model with its languages swapped is a
    target-to-source model: it scores each sentence given the output, log p(x | y)."""
    left = trained / "run" / "model"
    channel_dir = shutil.copytree(left, tmp_path / "channel")
    set_config(channel_dir, "data.src_lang", "tgt")
    set_config(channel_dir, "data.tgt_lang", "src")
    sentences = ["a b c d e", "q r s"]
    plain = Translator.load(left, rerank=())
    nbest = plain.search(sentences, beam=4, nbest=4)
    translator = Translator.load(left, rerank=[channel_dir])
    assert [r.channel for r in translator.rerankers] == [True]
    reranked = translator.search(sentences, beam=4, nbest=4, rerank_weight=1.0)
    channel = translator.rerankers[0]
    for sentence, hyps, got in zip(sentences, nbest, reranked, strict=True):
        outputs = plain.tokenizers.tgt.decode([h.tokens for h in hyps])
        given = channel.tokenizers.src.encode(outputs)
        target = channel.tokenizers.tgt.encode([sentence])[0]
        theirs = sequence_log_probs(channel.model, given, [target] * len(given))
        want = [s / length_penalty(len(target) + 1, 1.0, "fairseq") for s in theirs]
        order = sorted(range(len(hyps)), key=lambda j: -want[j])
        assert [h.tokens for h in got] == [hyps[j].tokens for j in order]
        assert plain.tokenizers.tgt.decode([got[0].tokens]) == [" ".join(reversed(sentence.split()))]
    set_config(channel_dir, "data.src_lang", "xx")
    with pytest.raises(ValueError, match="translates xx->src"):
        Translator.load(left, rerank=[channel_dir])


def test_rerank_weights_give_each_reranker_its_share(trained: Path, right_to_left: Path, capsys,
                                                      tmp_path: Path) -> None:
    """Two rerankers: the right-to-left model and the left-to-right model itself. Shares (1, 0) score as
    the right-to-left model alone does, (0, 1) as the other alone, none as their mean; the config's shares
    are the default."""
    left = shutil.copytree(trained / "run" / "model", tmp_path / "left")
    shutil.copytree(right_to_left / "run" / "model", tmp_path / "r2l")
    sentences = ["a b c d e", "q r s", "t u v w"]
    r2l, itself = str(tmp_path / "r2l"), str(left)

    def ranked(rerank: list[str] | None, **overrides: object) -> list[dict[tuple[int, ...], float]]:
        rows = Translator.load(left, rerank=rerank).search(sentences, beam=4, nbest=4, rerank_weight=1.0, **overrides)
        return [{tuple(h.tokens): h.score for h in row} for row in rows]

    def close(a: list[dict], b: list[dict]) -> bool:
        return all(x.keys() == y.keys() and [x[k] for k in x] == pytest.approx([y[k] for k in x], abs=1e-5)
                   for x, y in zip(a, b, strict=True))  # by hypothesis: each dict is in its own rank order

    first, second = ranked([r2l]), ranked([itself])
    assert close(ranked([r2l, itself], rerank_weights=(1.0, 0.0)), first)
    assert close(ranked([r2l, itself], rerank_weights=(0.0, 2.0)), second)
    mean = [{k: (a[k] + b[k]) / 2 for k in a} for a, b in zip(first, second, strict=True)]
    assert not close(first, second) and close(ranked([r2l, itself]), mean)
    set_config(left, "decode.rerank", ["../r2l", "."])
    set_config(left, "decode.rerank_weights", [1.0, 0.0])
    assert close(ranked(None), first)
    assert Translator.load(left, rerank=[r2l, itself]).config.decode.rerank_weights == ()  # others: equal shares
    args = ["--nbest", "4", "--rerank-weight", "1", *sentences]
    _, by_config, _ = run(["translate", "--model", str(left), *args], capsys)
    assert run(["translate", "--model", str(left), "--rerank-weights", "1,0", *args], capsys)[1] == by_config
    assert run(["translate", "--model", str(left), "--rerank-weights", "0,1", *args], capsys)[1] != by_config
    code, out, _ = run(["info", str(left)], capsys)
    assert code == 0 and "(weight 0.5, shares 1.0, 0.0)" in out
    code, _, err = run(["translate", "--model", str(left), "--rerank-weights", "1,2,3", "a b"], capsys)
    assert code == 2 and "--rerank-weights: decode.rerank_weights has 3 weights for 2 rerankers" in err
    set_config(left, "decode.rerank_weights", [1.0])
    code, _, err = run(["translate", "--model", str(left), "a b"], capsys)
    assert code == 2 and "config.yaml: decode.rerank_weights has 1 weights for 2 rerankers" in err
