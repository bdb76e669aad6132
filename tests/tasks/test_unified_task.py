"""The unified task (task unified) on the two-modality toy (``transduce.data.tone_text``: tone "speech" and the same
letters as text, translated into toy languages): one model learns both modalities through the real trainer and
CLI; a mixed batch's loss is the weighted sum of each task's loss computed alone; task sampling; the CLI's outputs
and one-line errors; config errors; initialization from single-task folders."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from testkit import ROOT, run_cli

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.config import RunConfig, to_dict
from transduce.data.text import read_lines
from transduce.data.tokenizer import train_sentencepiece
from transduce.data.tone_text import write_tone_text
from transduce.data.unified_batching import mixed_batches, sample_epoch, task_probabilities
from transduce.errors import ConfigError, UsageError
from transduce.metrics.bleu import sacre_scores
from transduce.models.ctc import CTCModelConfig
from transduce.models.folder import write_model_folder
from transduce.models.transformer import TransformerConfig
from transduce.speech_config import CTCDecodeConfig, SpeechDataConfig
from transduce.tasks import get_task
from transduce.tasks.unified import UnifiedTask
from transduce.tasks.unified_data import read_sources
from transduce.train.trainer import Trainer
from transduce.unified import Unified

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = ROOT / "recipes" / "tiny-tones-unified.yaml"
CTC = CTCDecodeConfig()
TOY = ["data.tasks=[st,mt]", "data.langs=[fr]", "data.tokenizer=word"]
"""The learning check: speech and text into one language (each symbol a word)."""


def quiet(_: str) -> None:
    pass


def recipe(base: Path, *overrides: str) -> list[str]:
    return [f"data.dir={base / 'data' / 'speech'}", f"data.text_dir={base / 'data' / 'text'}", *overrides]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The toy trained through ``transduce train`` (250 updates, ~20 s on one thread) -> base folder."""
    base = tmp_path_factory.mktemp("unified")
    write_tone_text(base / "data", train=200, valid=30)
    sets = [a for s in recipe(base, *TOY) for a in ("--set", s)]
    assert main(["train", str(RECIPE), "--out", str(base / "run"), "--no-progress", *sets]) == 0
    return base


def test_one_model_learns_both_modalities(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = [r for r in rows if r.get("kind") == "valid"][0], rows[-1]
    assert last["kind"] == "valid" and first is not last
    for job in ("st", "mt"):  # per-task dev losses and scores are logged, and both fall / rise
        assert last[f"loss_{job}"] < 0.75 * first[f"loss_{job}"], (job, first, last)
    assert last["bleu_st_fr"] > 40 and last["bleu_mt_fr"] > 25, last


def test_the_cli_translates_text_and_speech_with_one_model(trained: Path, capsys) -> None:
    run, data = trained / "run", trained / "data"
    code, out, _ = run_cli(["translate", "--model", str(run), "a b d", "c"], capsys)
    assert code == 0 and len(out.splitlines()) == 2
    unified = Unified.load(run)
    assert out.splitlines() == unified.translate(["a b d", "c"], "fr")
    wav = data / "speech" / "audio" / "dev" / "dev-00000.wav"
    code, out, _ = run_cli(["translate", "--model", str(run), "--tgt-lang", "fr", str(wav)], capsys)
    assert code == 0 and out == f"{wav}\t{unified.translate_audio([wav], 'fr')[0]}\n"
    code, out, _ = run_cli(["translate", "--model", str(run), "--manifest", str(data / "speech" / "dev.jsonl")], capsys)
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()][:2] == ["dev-00000", "dev-00001"]
    code, out, _ = run_cli(["info", str(run)], capsys)
    assert "inputs speech, text" in out and "st (speech -> fr), mt (text -> fr)" in out and "languages en, fr" in out


def test_evaluate_scores_each_task_against_its_references(trained: Path, capsys) -> None:
    run, data = str(trained / "run"), trained / "data"
    code, out, _ = run_cli(["evaluate", "--model", run, "--manifest", str(data / "speech" / "dev.jsonl"),
                            "--tgt-lang", "fr", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["tgt_lang"] == "fr" and result["utterances"] == 30 and result["bleu"] > 0
    code, out, _ = run_cli(["evaluate", "--model", run, "--src", str(data / "text" / "val.en"),
                            "--ref", str(data / "text" / "val.fr")], capsys)
    result = json.loads(out)
    hyps = Unified.load(trained / "run").translate((data / "text" / "val.en").read_text().splitlines(), "fr")
    references = (data / "text" / "val.fr").read_text().splitlines()
    assert code == 0 and result["sentences"] == 30 and result["bleu"] == sacre_scores(hyps, references)["bleu"]


@pytest.mark.parametrize(("argv", "message"), [
    (["translate", "--tgt-lang", "cs", "a b"], "--tgt-lang cs: this model's translate task produces fr"),
    (["translate", "--task", "transcribe", "a b"], "--task transcribe: from text this model does translate"),
    (["transcribe", "{wav}"], "--task transcribe: from speech this model does translate"),
    (["translate", "--ensemble", "x", "a b"], "is a unified model; leave out --ensemble"),
    (["translate", "--input", "x.txt", "{wav}"], "--input holds text; give audio or images as arguments or --manifest"),
    (["evaluate", "--manifest", "{man}"], "--task transcribe: from speech this model does translate"),
    (["evaluate", "--src", "{wav}"], "text translation needs --src and --ref; speech needs --manifest"),
])
def test_cli_errors_are_one_line(trained: Path, capsys, argv: list[str], message: str) -> None:
    wav = trained / "data" / "speech" / "audio" / "dev" / "dev-00000.wav"
    args = [a.format(wav=wav, man=wav.parents[2] / "dev.jsonl") for a in argv]
    code, _, err = run_cli([args[0], "--model", str(trained / "run"), *args[1:]], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_an_input_the_model_does_not_take_is_refused(trained: Path) -> None:
    with pytest.raises(UsageError, match="image input: this model takes speech, text"):
        Unified.load(trained / "run").prefix("translate", "fr", "image")


def test_a_mixed_batch_loss_is_the_weighted_sum_of_each_task_alone(trained: Path, tmp_path: Path) -> None:
    cfg = load_recipe(RECIPE, recipe(trained, "data.loss_weights=[0.5,1.0,2.0]", "model.ctc_weight=0.3"))
    task = UnifiedTask(cfg, tmp_path, quiet)
    model = task.build_model().eval()
    loss = task.loss_module(model, nullcontext())
    by_task = {t: [i for i, e in enumerate(task.valid) if e.task == t][:3] for t in range(3)}
    mixed = task.collator(False)([i for rows in by_task.values() for i in rows])
    assert mixed.feats.size(0) == 6 and mixed.src.size(0) == 3  # asr + st in the speech part, mt in the text part
    with torch.no_grad():
        total, nll = loss(*mixed.inputs())
        alone = [loss.per_task(*task.collator(False)(rows).inputs())[t] for t, rows in by_task.items()]
    assert torch.allclose(total, sum(w * a[0] for w, a in zip((0.5, 1.0, 2.0), alone, strict=True)), rtol=1e-5)
    assert torch.allclose(nll, sum(a[1] for a in alone), rtol=1e-5)
    assert not torch.allclose(total, sum(a[0] for a in alone), rtol=1e-3)  # the weights do weigh


def test_task_sampling() -> None:
    assert task_probabilities([100, 300], [], 1.0) == pytest.approx([0.25, 0.75])
    assert task_probabilities([100, 400], [], 2.0) == pytest.approx([1 / 3, 2 / 3])  # sqrt: 10 : 20
    assert task_probabilities([100, 400], [3.0, 1.0], 5.0) == pytest.approx([0.75, 0.25])
    tasks = [0] * 10 + [1] * 30
    chosen = sample_epoch(tasks, [0.5, 0.5], seed=1, epoch=0)
    assert sum(tasks[i] == 0 for i in chosen) == 20 and sum(tasks[i] == 1 for i in chosen) == 20
    assert sorted(set(i for i in chosen if tasks[i] == 0)) == list(range(10))  # the small task repeated whole
    costs, speech = [5, 9, 40, 41, 12, 60, 3, 30], [False, False, True, True, False, True, False, True]
    batches = mixed_batches(list(range(8)) * 2, costs, speech, max_tokens=100, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == sorted(list(range(8)) * 2)
    for b in batches:
        padded = sum(max((costs[i] for i in b if speech[i] == part), default=0) * sum(speech[i] == part for i in b)
                     for part in (False, True))
        assert padded <= 100 or len(b) == 1, b


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.tasks=[asr,video]"], "data.tasks: name each of asr, st, mt, ocr, imt at most once"),
    (["data.tasks=[asr,ocr]"], "model.inputs: task ocr needs image input"),
    (["data.tasks=[asr,ocr]", "model.inputs=[speech,image]"], "data.image_dir: the ocr and imt tasks need"),
    (["data.text_dir=''"], "data.text_dir: the mt task needs a parallel text folder"),
    (["data.loss_weights=[1.0]"], "data.loss_weights: one weight >= 0 per task"),
    (["model.inputs=[speech]"], "model.inputs: task mt needs text input"),
    (["data.langs=[en,de]"], "data.langs: name the translation targets, not data.src_lang"),
    (["data.without=[mt:cs]"], "data.without: 'mt:cs' is not a task:lang of this run"),
])
def test_config_errors_name_the_field(trained: Path, tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UnifiedTask(load_recipe(RECIPE, recipe(trained, *overrides)), tmp_path, quiet)


def _folder(out: Path, cfg: RunConfig, texts: list[str], kind: str) -> dict[str, torch.Tensor]:
    """A model folder of ``cfg`` with random weights and a tokenizer trained on ``texts``; its state dict."""
    out.mkdir()
    train_sentencepiece(texts, out / "spm.model", vocab_size=16, model_type=kind)
    task = get_task(cfg.task)
    model = task.build_model(cfg, out)
    write_model_folder(out, model.state_dict(), to_dict(cfg), [out / "spm.model"], {}, aliases=task.tied_aliases(cfg))
    return model.state_dict()


def _speech_folder(trained: Path, out: Path, texts: list[str], **overrides: object) -> dict[str, torch.Tensor]:
    """A CTC speech model folder at ``out`` shaped like the toy recipe's shared encoder (``overrides`` on its
    CTCModelConfig) -> its state dict."""
    m = load_recipe(RECIPE, recipe(trained, *TOY)).model
    fields = {"input_dim": 40, "dim": m.dim, "heads": m.heads, "layers": m.layers, "ffn_dim": m.ffn_dim,
              "kernel_size": m.kernel_size, "subsampling_channels": m.subsampling_channels, **overrides}
    return _folder(out, RunConfig(task="ctc", data=SpeechDataConfig(num_mel_bins=40), decode=CTC,
                                  model=CTCModelConfig(**fields)), texts, "char")  # type: ignore[arg-type]


def test_components_start_from_a_speech_and_a_translation_model(trained: Path, tmp_path: Path) -> None:
    m = load_recipe(RECIPE, recipe(trained, *TOY)).model
    torch.manual_seed(3)
    asr_state = _speech_folder(trained, tmp_path / "asr", ["abcd", "dcba"] * 4)
    mt = RunConfig(model=TransformerConfig(dim=m.dim, heads=m.heads, ffn_dim=m.ffn_dim, encoder_layers=1,
                                           decoder_layers=m.decoder_layers))
    mt_state = _folder(tmp_path / "mt", mt, [" ".join(s) for s in ("abcd", "ponm", "wxyz")] * 4, "word")
    run = tmp_path / "run"
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, f"model.init_encoder_from={tmp_path / 'asr'}",
                                     f"model.init_decoder_from={tmp_path / 'mt'}"))
    messages: list[str] = []
    model = Trainer(cfg, run, log=messages.append, show_progress=False).model.state_dict()
    shared = [k for k in model if k.startswith("encoder.blocks.")]
    assert shared and all(torch.equal(model[k], asr_state[k]) for k in shared)
    sub = [k for k in asr_state if k.startswith("encoder.subsampling.")]
    assert all(torch.equal(model["modalities.speech.front." + k[len("encoder."):]], asr_state[k]) for k in sub)
    words = mt_state["decoder.embed.embedding.weight"].size(0)
    assert torch.equal(model["decoder.embed.embedding.weight"][:words], mt_state["decoder.embed.embedding.weight"])
    assert model["decoder.embed.embedding.weight"].size(0) == words + 2 + 2  # two task tags, en and fr
    assert torch.equal(model["modalities.text.front.embedding.weight"], mt_state["encoder.embed.embedding.weight"])
    assert (run / "spm.model").read_bytes() == (tmp_path / "mt" / "spm.model").read_bytes()
    assert any(line.startswith("model.init_encoder_from: ") for line in messages)
    assert any("the speech adapter starts as the identity" in line for line in messages)


def test_the_speech_adapter_starts_as_the_identity(trained: Path, tmp_path: Path) -> None:
    """After model.init_encoder_from the copied blocks see what they saw in their own model: the unified model
    encodes speech as the source recognizer does (same CMVN), until training moves the adapter."""
    from transduce.recognize import Recognizer
    from transduce.tasks.unified_init import start_speech_adapter

    torch.manual_seed(5)
    _speech_folder(trained, tmp_path / "asr", ["abcd", "dcba"] * 4, dropout=0.0)
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, f"model.init_encoder_from={tmp_path / 'asr'}"))
    model = Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False).model.eval()
    source = Recognizer.load(tmp_path / "asr").model.eval()
    g = torch.Generator().manual_seed(0)
    feats, lens = torch.randn(3, 64, 40, generator=g) * 2 + 1, torch.tensor([64, 50, 33])
    front = model.modalities["speech"].front
    front.normalizer.load_state_dict(source.normalizer.state_dict())  # the same CMVN on both sides
    start_speech_adapter(model, feats, lens)
    with torch.no_grad():
        ours, ours_lens = model.encode(feats, lens, modality="speech")
        theirs, theirs_lens = source.encode(feats, lens)
        theirs = model.encoder.final_norm(theirs)  # the shared encoder's own final norm (fresh) on top
    assert torch.equal(ours_lens, theirs_lens)
    for b, n in enumerate(ours_lens.tolist()):
        assert torch.allclose(ours[b, :n], theirs[b, :n], atol=1e-4), (ours[b, :n] - theirs[b, :n]).abs().max()


def test_a_tensor_that_does_not_fit_is_named(trained: Path, tmp_path: Path) -> None:
    _speech_folder(trained, tmp_path / "asr", ["abcd"] * 8, dim=48, heads=2, layers=3, ffn_dim=96, kernel_size=7,
                   subsampling_channels=16)
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, f"model.init_encoder_from={tmp_path / 'asr'}"))
    with pytest.raises(ConfigError, match=r"model.init_encoder_from: .*asr has tensor encoder.blocks.2"):
        Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False)


def test_fine_tuning_a_whole_model_does_not_reapply_component_sources(trained: Path, tmp_path: Path) -> None:
    """train.init_from sets every weight: the component sources a fine-tuned model's config still names (as the
    bundled unified model's does) must not overwrite them."""
    torch.manual_seed(4)
    _speech_folder(trained, tmp_path / "asr", ["abcd"] * 8)
    messages: list[str] = []
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, f"train.init_from={trained / 'run'}",
                                     f"model.init_encoder_from={tmp_path / 'asr'}"))
    model = Trainer(cfg, tmp_path / "run", log=messages.append, show_progress=False).model.state_dict()
    source = Unified.load(trained / "run").model.state_dict()
    assert all(torch.equal(model[k], source[k]) for k in source)
    assert any("model.init_encoder_from and model.init_decoder_from are not applied" in line for line in messages)


def test_a_speech_model_that_normalizes_per_utterance_needs_the_same_setting(trained: Path, tmp_path: Path) -> None:
    """The bundled captions recognizer subtracts each utterance's mean: its blocks start a unified model only with
    model.utterance_norm true, which then normalizes the same way."""
    _speech_folder(trained, tmp_path / "asr", ["abcd"] * 8, utterance_norm=True)
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, f"model.init_encoder_from={tmp_path / 'asr'}"))
    with pytest.raises(ConfigError, match=r"model.utterance_norm: False here, but model.init_encoder_from .*asr has "
                                          r"True"):
        Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False)
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, f"model.init_encoder_from={tmp_path / 'asr'}",
                                     "model.utterance_norm=true"))
    model = Trainer(cfg, tmp_path / "run2", log=quiet, show_progress=False).model
    front = model.modalities["speech"].front
    assert front.utterance_norm


def test_train_only_adapters_logs_the_trained_count(trained: Path, tmp_path: Path) -> None:
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, "model.train_only=[adapters]"))
    messages: list[str] = []
    trainer = Trainer(cfg, tmp_path / "run", log=messages.append, show_progress=False)
    count = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert any(f"model.train_only adapters: training {count} of" in line for line in messages), messages


def test_training_tag_rows_refuses_weight_decay(trained: Path, tmp_path: Path) -> None:
    cfg = load_recipe(RECIPE, recipe(trained, *TOY, "model.train_only=[adapters,tags]", "optim.name=adamw",
                                     "optim.weight_decay=0.01"))
    with pytest.raises(ConfigError, match="model.train_only: tags trains rows of the decoder embedding"):
        Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False)


def test_without_leaves_task_languages_out_but_keeps_their_tags(trained: Path, tmp_path: Path) -> None:
    (trained / "data" / "text" / "train.fr").rename(trained / "data" / "text" / "train.fr.away")
    try:  # mt:fr is left out: its text files need not exist
        cfg = load_recipe(RECIPE, recipe(trained, "data.without=[st:de,mt:fr]"))
        task = UnifiedTask(cfg, tmp_path, quiet)
    finally:
        (trained / "data" / "text" / "train.fr.away").rename(trained / "data" / "text" / "train.fr")
    jobs = {(cfg.data.tasks[e.task], e.lang) for e in task.train}
    assert jobs == {("asr", "en"), ("st", "fr"), ("mt", "de")}
    assert task.tags.langs == ("en", "de", "fr")
    # when they exist, the left-out language's target text trains the tokenizer only (monolingual text)
    french = read_lines(trained / "data" / "text" / "train.fr")
    sources = read_sources(cfg.data, train=True)
    assert sources.monolingual == french and set(sources.text) == {"de"}
    assert set(french) <= set(sources.sentences())
    assert read_sources(cfg.data, train=False).monolingual == []



def test_the_loss_runs_under_bf16_autocast(trained: Path, tmp_path: Path) -> None:
    """CTC head and adapters in bf16: the loss is the fp32 loss to bf16 precision."""
    cfg = load_recipe(RECIPE, recipe(trained, "model.ctc_weight=0.3"))
    task = UnifiedTask(cfg, tmp_path, quiet)
    model = task.build_model().eval()
    batch = task.collator(False)([0, 1, len(task.valid) - 1])  # speech and text
    with torch.no_grad():
        full, _ = task.loss_module(model, nullcontext())(*batch.inputs())
        half, _ = task.loss_module(model, torch.autocast("cpu", dtype=torch.bfloat16))(*batch.inputs())
    assert half.dtype == torch.float32 and torch.allclose(half, full, rtol=0.05)


def test_the_comparison_table_scores_each_model_on_its_own_jobs(trained: Path, tmp_path: Path) -> None:
    """benchmarks/unified_table.py: the scores are the library's own (sacreBLEU of Unified.translate), a model
    compared with itself gains nothing, and parameters leave out an input no task reads."""
    import subprocess
    import sys

    out = tmp_path / "table.json"
    run, data = trained / "run", trained / "data"
    args = [sys.executable, str(ROOT / "benchmarks" / "unified_table.py"), "--model", str(run), "--model", str(run),
            "--manifest", str(data / "speech" / "dev.jsonl"), "--text", str(data / "text"), "--limit", "12",
            "--json", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())["run"]
    assert set(result["jobs"]) == {"st:fr", "mt:fr"}
    m = Unified.load(run)
    src, ref = read_lines(data / "text" / "val.en")[:12], read_lines(data / "text" / "val.fr")[:12]
    assert result["jobs"]["mt:fr"]["score"] == pytest.approx(float(sacre_scores(m.translate(src, "fr"), ref)["bleu"]))
    assert result["params"] == sum(p.numel() for p in m.model.parameters())
    assert "st:fr: run" in done.stdout and "(+0.00 in its favour)" in done.stdout

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from unified_table import score_job, used_parameters
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    m.jobs = ("st",)  # a speech-only model: its text front end and adapter count for nothing
    text = sum(p.numel() for name, p in m.model.named_parameters() if name.startswith("modalities.text."))
    assert text > 0 and used_parameters(m) == result["params"] - text

    from types import SimpleNamespace

    # the asr row: WER in percent, like `transduce evaluate`
    speech = [SimpleNamespace(utt=SimpleNamespace(audio="a.wav", text=t, duration=2.0)) for t in ("a b c d", "e f")]
    heard = SimpleNamespace(transcribe=lambda audio: ["a b x d", "e f"])
    assert score_job(heard, "asr", speech, {})["score"] == pytest.approx(100 / 6)  # type: ignore[arg-type]
