"""Speech end to end on synthetic audio: manifests -> CTC training -> Recognizer -> CLI."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from testkit import train_tones

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.data.manifest import read_manifest
from transduce.data.speech_batching import SpeechCollator
from transduce.data.tones import write_tones
from transduce.metrics.wer import cer
from transduce.recognize import Recognizer
from transduce.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tones(tmp_path_factory.mktemp("tones"), "tiny-tones-ctc.yaml", valid=40)


def test_recognizer_reaches_low_cer(trained: Path) -> None:
    dev = read_manifest(trained / "data" / "dev.jsonl")
    recognizer = Recognizer.load(trained / "run")
    hyps = recognizer.transcribe([u.audio for u in dev])
    assert cer(hyps, [u.text for u in dev]) < 5.0, list(zip(hyps, [u.text for u in dev], strict=True))[:5]
    beam = recognizer.transcribe([u.audio for u in dev], beam=4)
    assert cer(beam, [u.text for u in dev]) < 5.0


def test_timestamps_follow_the_tones(trained: Path) -> None:
    utt = read_manifest(trained / "data" / "dev.jsonl")[0]
    best = Recognizer.load(trained / "run").search([utt.audio], beam=4)[0][0]
    assert len(best.times) == len(best.tokens)
    assert all(0 <= a < b <= utt.duration for a, b in zip(best.times, best.times[1:], strict=False))


def test_cli_transcribe_and_evaluate(trained: Path, capsys) -> None:
    dev = read_manifest(trained / "data" / "dev.jsonl")
    assert main(["transcribe", "--model", str(trained / "run"), str(dev[1].audio), str(dev[0].audio)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(dev[1].audio), str(dev[0].audio)]  # input order
    assert main(["transcribe", "--model", str(trained / "run"), "--manifest", str(trained / "data" / "dev.jsonl")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [u.id for u in dev]
    report = trained / "report.txt"
    assert main(["evaluate", "--model", str(trained / "run"), "--manifest", str(trained / "data" / "dev.jsonl"),
                 "--json", "--report", str(report)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cer"] < 5.0 and result["utterances"] == len(dev)
    assert {"wer", "rtf", "utterances_per_second"} <= set(result)
    assert report.read_text().count(dev[0].id) == 1


def test_speech_model_info_and_errors(trained: Path, capsys, tmp_path: Path) -> None:
    assert main(["info", str(trained / "run")]) == 0
    assert "CTC encoder" in capsys.readouterr().out
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["transcribe", "--model", str(trained / "run"), str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["train", str(ROOT / "recipes" / "tiny-tones-ctc.yaml"), "--out", str(tmp_path / "run"),
                 "--set", f"data.dir={trained / 'data'}", "--set", "data.vtlp_warp=0.5"]) == 2
    assert "data.vtlp_warp: expected a value in [0, 0.5), got 0.5" in capsys.readouterr().err


def test_resume_of_ctc_run_matches_uninterrupted(tmp_path: Path) -> None:
    """Augmentation draws from (seed, epoch, batch), so N + resume + M updates equal N + M."""
    import torch

    write_tones(tmp_path / "data", train=60, valid=8)
    overrides = [f"data.dir={tmp_path / 'data'}", "train.max_updates=6", "train.eval_every=3", "train.max_tokens=1500"]
    cfg = load_recipe(ROOT / "recipes" / "tiny-tones-ctc.yaml", overrides)
    full = Trainer(cfg, tmp_path / "full", log=lambda _: None, show_progress=False)
    full.fit()
    first = load_recipe(ROOT / "recipes" / "tiny-tones-ctc.yaml", overrides[:-3] + ["train.max_updates=3",
                                                                                     "train.eval_every=3",
                                                                                     "train.max_tokens=1500"])
    Trainer(first, tmp_path / "split", log=lambda _: None, show_progress=False).fit()
    resumed = Trainer(cfg, tmp_path / "split", log=lambda _: None, show_progress=False)
    resumed.fit(resume=True)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_lm_command_and_shallow_fusion_through_the_cli(trained: Path, capsys, tmp_path: Path) -> None:
    run, dev = str(trained / "run"), str(trained / "data" / "dev.jsonl")
    text = tmp_path / "lm.txt"
    text.write_text("dab\n" * 30)
    arpa = tmp_path / "lm.arpa.gz"
    words = tmp_path / "words.txt"
    assert main(["lm", "--model", run, "--text", str(text), "--out", str(arpa), "--order", "3", "--dev", dev,
                 "--lexicon", str(words)]) == 0
    out = capsys.readouterr().out
    assert "order 3, 30 sentences" in out and "dev words not in the lexicon" in out and arpa.is_file()
    assert words.read_text() == "dab\n"
    base = ["evaluate", "--model", run, "--manifest", dev, "--json", "--beam", "4"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--lm", str(arpa), "--lm-weight", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["cer"] == plain["cer"]
    # an LM that only knows one sentence, weighted far above the acoustics, makes every transcript that sentence
    assert main(["transcribe", "--model", run, "--manifest", dev, "--beam", "4", "--lm", str(arpa),
                 "--lm-weight", "30"]) == 0
    assert {json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()} == {"dab"}
    # a lexicon of that one word and a huge penalty for any other: the weak LM alone would not force it
    assert main(["transcribe", "--model", run, "--manifest", dev, "--beam", "4", "--lm", str(arpa),
                 "--lm-weight", "0.01", "--lexicon", str(words), "--oov-penalty", "1000"]) == 0
    texts = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert {word for text in texts for word in text.split()} <= {"d", "da", "dab"}  # spelled from the lexicon
    assert sum("dab" in text.split() for text in texts) > len(texts) / 2
    assert main([*base, "--lm", str(arpa), "--lm-weight", "0.01", "--lexicon", str(tmp_path / "none.txt")]) == 2
    assert "decode.lexicon" in capsys.readouterr().err
    assert main([*base[:-1], "1", "--lm", str(arpa), "--lm-weight", "0.5"]) == 2
    assert "needs a beam" in capsys.readouterr().err
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\noops\n")
    assert main([*base, "--lm", str(bad), "--lm-weight", "0.5"]) == 2
    assert f"{bad}:5" in capsys.readouterr().err


def test_a_models_own_lm_is_read_from_its_folder(trained: Path, capsys, tmp_path: Path, monkeypatch) -> None:
    """decode.lm in a model's config names a file in the model folder, even when the working directory holds a
    file of the same name (here a broken one, which would fail to load)."""
    import shutil

    import yaml

    model = tmp_path / "model"
    shutil.copytree(trained / "run" / "model", model)
    (tmp_path / "lm.txt").write_text("dab\n" * 30)
    assert main(["lm", "--model", str(model), "--text", str(tmp_path / "lm.txt"), "--out", str(model / "lm.arpa"),
                 "--order", "3"]) == 0
    config = yaml.safe_load((model / "config.yaml").read_text())
    config["decode"].update(beam=4, lm="lm.arpa", lm_weight=30.0)
    (model / "config.yaml").write_text(yaml.safe_dump(config))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "lm.arpa").write_text("not an ARPA file\n")
    monkeypatch.chdir(cwd)
    recognizer = Recognizer.load(model)
    assert recognizer.config.decode.lm == str(model / "lm.arpa")
    dev = read_manifest(trained / "data" / "dev.jsonl")[:4]
    assert recognizer.transcribe([u.audio for u in dev]) == ["dab"] * 4  # the model's one-sentence LM decides
    # a path given on the command line is relative to the working directory: the broken file is read and named
    assert main(["transcribe", "--model", str(model), "--lm", "lm.arpa", str(dev[0].audio)]) == 2
    assert "lm.arpa: not an ARPA file" in capsys.readouterr().err


def test_dev_loss_is_in_the_training_losses_units(tmp_path: Path) -> None:
    """The dev loss equals the training loss module's sum over the dev set per token, in bits (both curves
    share one plot axis)."""
    write_tones(tmp_path / "data", train=40, valid=12)
    cfg = load_recipe(ROOT / "recipes" / "tiny-tones-ctc.yaml", [f"data.dir={tmp_path / 'data'}"])
    trainer = Trainer(cfg, tmp_path / "run", log=lambda _: None, show_progress=False)
    task, model = trainer.task, trainer.model
    result, _ = task.evaluate(model, trainer.dist, nullcontext())
    model.eval()
    collator = SpeechCollator(task.valid, task.valid_targets, fbank=task.fbank)
    batch = collator(list(range(len(task.valid))))
    with torch.no_grad():
        loss, _ = task.loss_module(model, nullcontext())(*batch.inputs())
    assert result["loss"] == pytest.approx(float(loss) / batch.num_tokens / math.log(2), rel=1e-3)


def test_ensemble_ranks_the_pooled_nbest_by_summed_ctc_log_likelihoods(trained: Path, capsys, tmp_path: Path) -> None:
    """A model whose decode.ensemble names a partner in its folder (here a copy of itself): every returned
    hypothesis scores the sum of both models' CTC log-likelihoods, best first, drawn from the pooled n-best."""
    import shutil

    import yaml

    from transduce.decoding.ctc_ensemble import ctc_log_likelihoods

    model = tmp_path / "model"
    shutil.copytree(trained / "run" / "model", model)
    shutil.copytree(trained / "run" / "model", model / "partner")
    config = yaml.safe_load((model / "config.yaml").read_text())
    config["decode"].update(ensemble=["partner"], ensemble_nbest=4)
    (model / "config.yaml").write_text(yaml.safe_dump(config))
    recognizer = Recognizer.load(model)
    assert recognizer.config.decode.ensemble == (str(model / "partner"),)
    assert "ensemble with partner" in recognizer.config.decode.describe()
    dev = read_manifest(trained / "data" / "dev.jsonl")[:3]
    audio = [u.audio for u in dev]
    ranked = recognizer.search(audio, nbest=10)
    alone = recognizer.search(audio, ensemble=(), nbest=4, beam=4)
    for utt, hyps, own in zip(dev, ranked, alone, strict=True):
        assert {h.text for h in hyps} == {h.text for h in own}  # identical members: the pool is one n-best
        log_probs, lens = recognizer.log_probs([recognizer.features(utt.audio)])
        ids = recognizer.tokenizer.encode([h.text for h in hyps])
        want = 2 * ctc_log_likelihoods(log_probs[0, : int(lens[0])], ids)
        assert torch.allclose(torch.tensor([h.score for h in hyps], dtype=torch.float64), want.double(), atol=1e-4)
        assert all(a.score >= b.score for a, b in zip(hyps, hyps[1:], strict=False))
    assert [row[0].text for row in ranked] == recognizer.transcribe(audio)
    assert main(["evaluate", "--model", str(model), "--manifest", str(trained / "data" / "dev.jsonl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ensemble"] == [str(model / "partner")] and result["cer"] < 5.0
    assert main(["evaluate", "--model", str(model), "--manifest", str(trained / "data" / "dev.jsonl"), "--json",
                 "--ensemble", "none"]) == 0
    assert "ensemble" not in json.loads(capsys.readouterr().out)


def test_ensemble_errors_name_the_setting(trained: Path, capsys, tmp_path: Path) -> None:
    import shutil

    import yaml

    from transduce.config import ConfigError

    model = tmp_path / "model"
    shutil.copytree(trained / "run" / "model", model)
    wav = str(read_manifest(trained / "data" / "dev.jsonl")[0].audio)
    assert main(["transcribe", "--model", str(model), "--ensemble", str(tmp_path / "missing"), wav]) == 2
    err = capsys.readouterr().err
    assert "decode.ensemble: " in err and "missing: not a model folder" in err and "Traceback" not in err
    recognizer = Recognizer.load(model)
    with pytest.raises(ConfigError, match="decode.ensemble: .*missing: not a model folder"):
        recognizer.transcribe([wav], ensemble=(str(tmp_path / "missing"),))
    with pytest.raises(ConfigError, match="decode.ensemble: ensembles decode in mode ctc"):
        recognizer.transcribe([wav], ensemble=(str(model),), mode="attention")
    with pytest.raises(ConfigError, match="decode.ensemble: a stream decodes one model"):
        recognizer.stream(ensemble=(str(model),))
    nested = tmp_path / "nested"
    shutil.copytree(model, nested)
    config = yaml.safe_load((nested / "config.yaml").read_text())
    config["decode"]["ensemble"] = [str(model)]
    (nested / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["transcribe", "--model", str(model), "--ensemble", str(nested), wav]) == 2
    assert "names an ensemble of its own" in capsys.readouterr().err
