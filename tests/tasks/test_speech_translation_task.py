"""End-to-end speech translation (task speech_translation) on synthetic tone "speech" translated into two toy
languages (``transduce.data.tones``: de = the letters' symbols reversed, fr = in order): the real trainer through
the CLI, the loss against its two terms computed apart, language tags, cached decoding against the full forward,
the CLI's formats and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from testkit import ROOT, run_cli

from transduce.cli.config import load_recipe
from transduce.cli.main import main
from transduce.config import RunConfig, to_dict
from transduce.data.manifest import read_manifest
from transduce.data.speech_batching import SpeechCollator
from transduce.data.st_batching import STCollator
from transduce.data.tokenizer import train_sentencepiece
from transduce.data.tones import SYMBOLS, write_tone_translations
from transduce.errors import ConfigError, DataError, UsageError
from transduce.models.ctc import CTCModelConfig
from transduce.models.folder import write_model_folder
from transduce.models.st import tag_ids
from transduce.models.transformer import TransformerConfig
from transduce.speech_config import CTCDecodeConfig, SpeechDataConfig
from transduce.speech_translate import SpeechTranslator
from transduce.tasks import get_task
from transduce.tasks.speech_translation import STTask
from transduce.train.trainer import Trainer
from transduce.translate import Translator

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = ROOT / "recipes" / "tiny-tones-st.yaml"


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny recipe trained through ``transduce train`` (150 updates) -> base folder with data/ and run/."""
    base = tmp_path_factory.mktemp("st")
    write_tone_translations(base / "data", train=100, valid=12)
    assert main(["train", str(RECIPE), "--out", str(base / "run"), "--no-progress", "--set",
                 f"data.dir={base / 'data'}", "--set", "train.max_updates=150", "--set", "train.eval_every=150"]) == 0
    return base


def test_training_through_the_cli_lowers_the_loss(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("kind") == "train"]
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0], losses
    assert all((trained / "run" / "model" / name).is_file() for name in ("spm.model", "tgt_spm.model"))


def test_the_tag_picks_the_output_language(trained: Path) -> None:
    dev = read_manifest(trained / "data" / "dev.jsonl")
    translator = SpeechTranslator.load(trained / "run")
    audio = [u.audio for u in dev]
    outputs = {lang: translator.translate(audio, lang) for lang in ("de", "fr")}
    for lang, texts in outputs.items():
        words = {w for text in texts for w in text.split()}
        assert words and words <= set(SYMBOLS[lang]), (lang, texts)
    assert translator.translate(audio[:3]) == outputs["de"][:3]  # the first language by default
    with pytest.raises(UsageError, match="--tgt-lang cs: this model translates into de, fr"):
        translator.translate(audio[:1], "cs")


def test_languages_of_one_utterance_differ_only_in_the_decoder_prefix(trained: Path, tmp_path: Path) -> None:
    cfg = load_recipe(RECIPE, [f"data.dir={trained / 'data'}"])
    task = STTask(cfg, tmp_path, quiet)
    german = next(i for i, e in enumerate(task.valid) if e.lang == "de")
    french = next(i for i, e in enumerate(task.valid) if e.lang == "fr" and e.utt == task.valid[german].utt)
    b = task.collator(False)([german, french])
    assert torch.equal(b.feats[0], b.feats[1]) and torch.equal(b.transcripts[0], b.transcripts[1])
    assert b.tgt_in[:, 0].tolist() == tag_ids(len(task.targets), 2).tolist()
    assert task.targets.decode([b.tgt_in[0, 1:].tolist()]) == [task.valid[german].text]


def test_a_missing_language_names_the_file_and_line(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = (trained / "data" / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    del row["translation"]["fr"]
    lines[2] = json.dumps(row)
    for name in ("train.jsonl", "dev.jsonl"):
        (data / name).write_text("\n".join(lines).replace('"audio/', f'"{trained / "data" / "audio"}/') + "\n")
    cfg = load_recipe(RECIPE, [f"data.dir={data}"])
    with pytest.raises(DataError, match=re.escape(f"{data / 'train.jsonl'}:3: no 'fr' translation")):
        Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False)


def test_cli_translates_manifests_and_files_in_order(trained: Path, capsys) -> None:
    manifest = trained / "data" / "dev.jsonl"
    dev = read_manifest(manifest)
    model = str(trained / "run")
    code, out, _ = run_cli(["translate", "--model", model, "--tgt-lang", "fr", "--manifest", str(manifest)], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == [u.id for u in dev]
    expected = SpeechTranslator.load(model).translate([u.audio for u in dev], "fr")
    assert [r["text"] for r in rows] == expected
    files = [dev[1].audio, dev[0].audio]
    code, out, _ = run_cli(["translate", "--model", model, *map(str, files)], capsys)
    texts = SpeechTranslator.load(model).translate(files)
    assert code == 0 and out.splitlines() == [f"{path}\t{text}" for path, text in zip(files, texts, strict=True)]


def test_cli_evaluate_scores_against_the_manifest(trained: Path, capsys) -> None:
    import sacrebleu

    manifest = trained / "data" / "dev.jsonl"
    args = ["evaluate", "--model", str(trained / "run"), "--manifest", str(manifest), "--json"]
    code, out, _ = run_cli([*args, "--tgt-lang", "de"], capsys)
    result = json.loads(out)
    assert code == 0 and result["tgt_lang"] == "de" and result["utterances"] == 12 and result["rtf"] > 0
    refs = [json.loads(line)["translation"]["de"] for line in manifest.read_text().splitlines()]
    hyps = SpeechTranslator.load(trained / "run").translate([u.audio for u in read_manifest(manifest)], "de")
    assert result["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert {"chrf", "bleu_tok_lc"} <= set(result)
    code, out, _ = run_cli([*args, "--chunk-ms", "160"], capsys)  # 4 encoder frames of 40 ms
    assert code == 0 and json.loads(out)["chunk_size"] == 4
    chunked = SpeechTranslator.load(trained / "run").translate([u.audio for u in read_manifest(manifest)], chunk_size=4)
    assert json.loads(out)["bleu"] == round(sacrebleu.corpus_bleu(chunked, [refs]).score, 2)


def test_info_names_the_languages_and_the_ctc_layer(trained: Path, capsys) -> None:
    code, out, _ = run_cli(["info", str(trained / "run")], capsys)
    assert code == 0 and "en -> de, fr (default de" in out and "CTC on the transcript from the final output" in out


@pytest.mark.parametrize("argv, message", [
    (["translate", "--tgt-lang", "cs", "--manifest", "{m}"], "--tgt-lang cs: this model translates into de, fr"),
    (["evaluate", "--tgt-lang", "cs", "--manifest", "{m}"], "--tgt-lang cs: this model translates into de, fr"),
    (["translate", "--manifest", "{m}", "a.wav"], "audio files given as arguments or the utterances of --manifest"),
    (["translate", "--truecase", "none", "--manifest", "{m}"], "leave out --truecase"),
    (["evaluate"], "evaluates the utterances of a speech translation --manifest"),
    (["evaluate", "--mode", "joint", "--manifest", "{m}"], "translates speech end to end; leave out --mode"),
])
def test_cli_errors_are_one_line(trained: Path, capsys, argv: list[str], message: str) -> None:
    args = [a.format(m=trained / "data" / "dev.jsonl") for a in argv]
    code, _, err = run_cli([args[0], "--model", str(trained / "run"), *args[1:]], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def _folder(out: Path, cfg: RunConfig, texts: list[str], kind: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A model folder of ``cfg`` with random weights and a ``kind`` tokenizer trained on ``texts`` -> the folder
    and its full state dict."""
    out.mkdir()
    train_sentencepiece(texts, out / "spm.model", vocab_size=16, model_type=kind)
    task = get_task(cfg.task)
    model = task.build_model(cfg, out)
    write_model_folder(out, model.state_dict(), to_dict(cfg), [out / "spm.model"], {},
                       aliases=task.tied_aliases(cfg))
    return out, model.state_dict()


@pytest.fixture(scope="module")
def sources(trained: Path, tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """A speech model (the recipe's encoder) and translation models (the recipe's decoder; one with 2 layers)."""
    base = tmp_path_factory.mktemp("sources")
    st = load_recipe(RECIPE, [f"data.dir={trained / 'data'}"])
    fields = {f: getattr(st.model, f) for f in CTCModelConfig.__dataclass_fields__ if f != "decoder_layers"}
    torch.manual_seed(5)
    asr = RunConfig(task="ctc", data=SpeechDataConfig(num_mel_bins=40), model=CTCModelConfig(**fields),
                    decode=CTCDecodeConfig())
    letters = [u.text for u in read_manifest(trained / "data" / "train.jsonl")]
    symbols = [" ".join(s) for s in ("wxyz", "ponm", "zyxw", "mnop")] * 4
    out = {"asr": _folder(base / "asr", asr, letters, "char")}
    for name, layers in (("mt", 1), ("mt2", 2)):
        mt = RunConfig(model=TransformerConfig(dim=48, heads=2, ffn_dim=96, encoder_layers=1, decoder_layers=layers))
        out[name] = _folder(base / name, mt, symbols, "word")
    return out


def test_components_start_from_a_speech_and_a_translation_model(trained: Path, sources, tmp_path: Path) -> None:
    (asr, asr_state), (mt, mt_state) = sources["asr"], sources["mt"]
    cfg = load_recipe(RECIPE, [f"data.dir={trained / 'data'}", f"model.init_encoder_from={asr}",
                               f"model.init_decoder_from={mt}"])
    messages: list[str] = []
    model = Trainer(cfg, tmp_path / "run", log=messages.append, show_progress=False).model.state_dict()
    copied = [k for k in model if k.startswith(("encoder.", "head.", "decoder."))]
    grown = {"decoder.embed.embedding.weight", "decoder.output.weight"}
    assert all(torch.equal(model[k], (asr_state if k.startswith(("encoder.", "head.")) else mt_state)[k])
               for k in copied if k not in grown)
    words = mt_state["decoder.embed.embedding.weight"].size(0)
    assert model["decoder.embed.embedding.weight"].size(0) == words + 2  # the two tags start fresh
    assert torch.equal(model["decoder.embed.embedding.weight"][:words], mt_state["decoder.embed.embedding.weight"])
    assert not torch.equal(model["normalizer.mean"], asr_state["normalizer.mean"])  # CMVN of this run's data
    assert (tmp_path / "run" / "spm.model").read_bytes() == (asr / "spm.model").read_bytes()
    assert (tmp_path / "run" / "tgt_spm.model").read_bytes() == (mt / "spm.model").read_bytes()
    count = sum(k.startswith(("encoder.", "head.")) for k in model)
    assert f"model.init_encoder_from: {count} tensors from {asr}" in messages


@pytest.mark.parametrize("overrides, message", [
    (["model.init_decoder_from={mt2}"], r"model.init_decoder_from: \S+mt2 has tensor decoder\.layers\.1\.\S+ "
                                        r"\([\d, ]+\), this model has none"),
    (["model.init_decoder_from={mt}", "model.decoder_ffn_dim=64"],
     r"tensor decoder\.layers\.0\.\S+ is \((96, 48|96,|48, 96)\) in \S+mt, \((64, 48|64,|48, 64)\) in this model"),
    (["model.init_decoder_from={asr}"], r"a speech model; model.init_decoder_from needs a translation model"),
    (["model.init_encoder_from={asr}", "model.causal_conv=false"],
     r"model.causal_conv: False here, but model.init_encoder_from \S+asr has model.causal_conv True"),
    (["model.init_decoder_from={mt}", "model.decoder_pre_norm=false"],
     r"model.decoder_pre_norm: False here, but model.init_decoder_from \S+mt has model.pre_norm True"),
    (["data.tgt_langs=[de, de]"], r"data.tgt_langs: name each target language once, got \['de', 'de'\]"),
    (["data.tgt_spm=nowhere.model"], r"data.tgt_spm: nowhere.model: no such SentencePiece model"),
    (["model.init_encoder_from={asr}", "model.layers=3"],
     r"init_encoder_from: \S+asr has no tensor encoder\.blocks\.2"),
])
def test_components_and_settings_that_do_not_fit_are_named(trained: Path, sources, tmp_path: Path, overrides: list[str],
                                                    message: str) -> None:
    paths = {name: folder for name, (folder, _) in sources.items()}
    cfg = load_recipe(RECIPE, [f"data.dir={trained / 'data'}", *(o.format(**paths) for o in overrides)])
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, tmp_path / "run", log=quiet, show_progress=False)


@pytest.mark.parametrize("recipe", ["multi30k-st-conformer.yaml", "multi30k-st-conformer-de.yaml"])
def test_the_multi30k_recipes_run(recipe: str, trained: Path, tmp_path: Path) -> None:
    """Two updates of each shipped Multi30k recipe on the tone data: the encoder from a speech model folder of
    recipes/captions-hybrid-streaming.yaml's shape (random weights), the -de variant's decoder from the bundled
    models/multi30k-en-de."""
    asr_cfg = load_recipe(ROOT / "recipes" / "captions-hybrid-streaming.yaml")
    letters = [u.text for u in read_manifest(trained / "data" / "train.jsonl")]
    asr, _ = _folder(tmp_path / "asr", asr_cfg, letters, "char")
    langs = "[de]" if recipe.endswith("-de.yaml") else "[de, fr]"  # the tone data has no Czech
    cfg = load_recipe(ROOT / "recipes" / recipe, [
        f"data.dir={trained / 'data'}", f"data.tgt_langs={langs}", "data.num_workers=0", "data.cmvn_utterances=20",
        f"model.init_encoder_from={asr}", "train.max_updates=2", "train.eval_every=2", "train.max_tokens=4000",
        "train.threads=1", "train.average_last=0"])
    messages: list[str] = []
    Trainer(cfg, tmp_path / "run", log=messages.append, show_progress=False).fit()
    assert any(re.fullmatch(rf"model.init_encoder_from: \d+ tensors from {re.escape(str(asr))}", m) for m in messages)
    if recipe.endswith("-de.yaml"):
        assert any(m.startswith("model.init_decoder_from: ") for m in messages)
    assert SpeechTranslator.load(tmp_path / "run").langs == tuple(langs.strip("[]").split(", "))


def test_st_kd_adds_the_teachers_translations_of_the_english_sentences(tmp_path: Path, capsys) -> None:
    mt = ROOT / "models" / "multi30k-en-de"
    rows = [{"id": "a", "audio": "a.wav", "duration": 1.0, "speaker": "s", "text": "a dog runs",
             "text_original": "A dog runs.", "translation": {"de": "Ein Hund rennt.", "fr": "Un chien court."}},
            {"id": "b", "audio": "b.wav", "duration": 1.0, "speaker": "s", "text": "two men are talking",
             "translation": {"de": "Zwei Männer reden.", "fr": "Deux hommes parlent."}}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kd" / "m.jsonl"
    code, _, err = run_cli(["data", "st-kd", "--manifest", str(manifest), "--model", str(mt), "--out", str(out)],
                           capsys)
    assert code == 0, err
    teacher = Translator.load(mt).translate(["A dog runs.", "two men are talking"])  # original text when there is one
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["translation_kd"] for r in written] == [{"de": t} for t in teacher]
    assert [r["translation"] for r in written] == [r["translation"] for r in rows]
    assert [r["audio"] for r in written] == ["../a.wav", "../b.wav"]  # still the same files
    assert run_cli(["data", "st-kd", "--manifest", str(out), "--model", str(mt), "--out", str(out), "--lang", "xx",
                    "--beam", "1"], capsys)[0] == 0
    assert [sorted(json.loads(line)["translation_kd"]) for line in out.read_text().splitlines()] == [["de", "xx"]] * 2


def test_kd_targets_are_extra_training_examples(trained: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.jsonl", "dev.jsonl"):
        rows = [json.loads(line) for line in (trained / "data" / name).read_text().splitlines()]
        for i, row in enumerate(rows[:10]):  # 5 teacher translations that differ from the reference, 5 the same
            row["translation_kd"] = {"de": "w w w" if i < 5 else row["translation"]["de"]}
        (data / name).write_text("".join(json.dumps(r).replace('"audio/', f'"{trained / "data" / "audio"}/') + "\n"
                                         for r in rows))
    sizes = {}
    for kd in (False, True):
        cfg = load_recipe(RECIPE, [f"data.dir={data}", f"data.kd={str(kd).lower()}"])
        messages: list[str] = []
        task = STTask(cfg, tmp_path / f"run-{kd}", messages.append)
        sizes[kd] = len(task.train)
        distilled = [e for e in task.train if e.text == "w w w"]
    assert sizes[True] == sizes[False] + 5 and len(distilled) == 5
    assert any(m.endswith("2 target languages, 5 of them teacher translations)") for m in messages), messages
    assert {e.lang for e in distilled} == {"de"} and {e.tag for e in distilled} == {task.tags[0]}
    assert len(task.valid) == 2 * 12  # dev examples are the references only


def test_training_batches_are_augmented_as_speech_batches(trained: Path, tmp_path: Path) -> None:
    """Speed perturbation and SpecAugment as the speech task's (data/augment.py), reproducible from (seed, epoch,
    indices); the decoder side is untouched. Features are 100 frames a second."""
    masked = STTask(load_recipe(RECIPE, [f"data.dir={trained / 'data'}"]), tmp_path / "a", quiet)
    speech = SpeechCollator([e.utt for e in masked.train], [e.transcript for e in masked.train], fbank=masked.fbank)
    plain = STCollator(speech, [(e.tag, e.target) for e in masked.train])([0, 1])
    train = masked.collator(True, epoch=3)([0, 1])
    assert torch.equal(plain.feat_lens, train.feat_lens) and not torch.equal(plain.feats, train.feats)
    assert torch.equal(train.feats, masked.collator(True, epoch=3)([0, 1]).feats)
    cfg = load_recipe(RECIPE, [f"data.dir={trained / 'data'}", "data.speed_factors=[1.25]"])
    fast = STTask(cfg, tmp_path / "b", quiet).collator(True, epoch=3)([0, 1])
    seconds = [e.utt.duration for e in masked.train[:2]]
    assert all(abs(n - 100 * d / 1.25) < 3 for n, d in zip(fast.feat_lens.tolist(), seconds, strict=True))
    assert all(abs(n - 100 * d) < 3 for n, d in zip(plain.feat_lens.tolist(), seconds, strict=True))
    assert torch.equal(fast.tgt_in, plain.tgt_in) and torch.equal(fast.transcripts, plain.transcripts)


def test_a_streamed_utterance_translates_as_the_chunked_search(trained: Path) -> None:
    translator = SpeechTranslator.load(trained / "run")
    for utt in read_manifest(trained / "data" / "dev.jsonl")[:4]:
        feats = translator.features(utt.audio)
        pieces = [feats[i: i + 23] for i in range(0, feats.size(0), 23)]  # 230 ms of frames at a time
        streamed = translator.translate_stream(pieces, "fr", chunk_size=4)[0]
        offline = translator.search([utt.audio], "fr", chunk_size=4)[0][0]
        assert streamed.tokens == offline.tokens and streamed.score == pytest.approx(offline.score, abs=1e-4)
