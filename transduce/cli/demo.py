"""``make run``: with the bundled models, offline: translate the example sentences, transcribe and translate the
example recordings, read and translate the example photos of text, and stream."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transduce.translate import Translator

ROOT = Path(__file__).resolve().parents[2]


def _tsv(path: Path) -> list[list[str]]:
    """The tab-separated fields of each line of an examples table (UTF-8)."""
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def _dev_eval(model_dir: Path) -> dict:
    """The ``dev_eval`` scores of a bundled folder's card (empty when it has none)."""
    card = model_dir / "card.json"
    return json.loads(card.read_text()).get("dev_eval", {}) if card.is_file() else {}


def translate_examples() -> None:
    model_dir = ROOT / "models" / "multi30k-en-de"
    examples = (ROOT / "examples" / "en-de.en").read_text().splitlines()
    started = time.perf_counter()
    translator = Translator.load(model_dir)
    loaded = time.perf_counter()
    outputs = translator.translate(examples, beam=5)
    done = time.perf_counter()
    card = translator.card
    members = translator.config.decode.ensemble
    searched = f", ensembled with {', '.join(Path(m).name for m in members)}" if members else ""
    rerank = translator.config.decode.rerank
    searched += f", reranked by {', '.join(Path(m).name for m in rerank)}" if rerank else ""
    print(f"model: {model_dir.relative_to(ROOT)}{searched} "
          f"(test_2016 BLEU {card.get('test_2016_flickr', {}).get('bleu_tok_lc', '?')}, tokenized lowercased)")
    for src, out in zip(examples, outputs, strict=False):
        print(f"  en: {src}\n  de: {out}\n")
    print(f"{len(examples)} sentences, beam 5: load {loaded - started:.2f}s, "
          f"translate {done - loaded:.2f}s ({len(examples) / (done - loaded):.1f} sentences/s)")
    best = ROOT / "models" / "multi30k-en-de-best"
    if best.is_dir():
        score = json.loads((best / "card.json").read_text()).get("test_2016_flickr", {}).get("bleu_tok_lc", "?")
        print(f"(slower, a little better: --model {best.relative_to(ROOT)}, an ensemble with reranking, "
              f"test_2016 BLEU {score})")
    print()


def transcribe_examples(model_name: str, folder: Path) -> None:
    from transduce.metrics.wer import wer
    from transduce.recognize import Recognizer

    model_dir = ROOT / "models" / model_name
    rows = _tsv(folder / "transcripts.tsv")
    recognizer = Recognizer.load(model_dir)
    started = time.perf_counter()
    hyps = recognizer.transcribe([folder / name for name, _ in rows])
    seconds = time.perf_counter() - started
    dev, decode = recognizer.card.get("dev_eval", {}), recognizer.config.decode
    print(f"model: {model_dir.relative_to(ROOT)} (dev WER {dev.get('wer', '?')}%, {decode.describe()})")
    for (name, ref), hyp in zip(rows, hyps, strict=True):
        print(f"  {name}\n    heard: {hyp}\n    said:  {ref}")
    print(f"{len(rows)} recordings: WER {wer(hyps, [r for _, r in rows]):.1f}%, {seconds:.2f}s\n")


def speech_translate_examples(model_name: str, folder: Path) -> None:
    """The example recordings translated into German by a speech translation model folder (end to end or a
    bundled cascade: ``transduce.tasks.load`` reads both), beside their references."""
    from transduce.metrics.bleu import sacre_scores
    from transduce.tasks import load

    model_dir = ROOT / "models" / model_name
    rows = _tsv(folder / "translations.tsv")
    translator = load(model_dir)
    started = time.perf_counter()
    hyps = translator.translate([folder / row[0] for row in rows], "de")
    seconds = time.perf_counter() - started
    dev = _dev_eval(model_dir)
    print(f"model: {model_dir.relative_to(ROOT)}, English speech -> German text (dev BLEU {dev.get('bleu', '?')})")
    for row, hyp in zip(rows, hyps, strict=True):
        print(f"  {row[0]}\n    de:        {hyp}\n    reference: {row[1]}")
    print(f"{len(rows)} recordings: BLEU {sacre_scores(hyps, [row[1] for row in rows])['bleu']:.1f}, {seconds:.2f}s\n")


def photo_examples(model_name: str, folder: Path) -> None:
    """The example photos of text read (OCR, then the translation model's truecaser) and translated into German by
    a bundled image cascade, beside what they show and the reference translations."""
    from transduce.data.captions import normalize_text
    from transduce.metrics.bleu import sacre_scores
    from transduce.metrics.wer import cer
    from transduce.tasks import load

    model_dir = ROOT / "models" / model_name
    shown = {name: text for name, text in _tsv(folder / "lines.tsv")}
    refs = {row[0]: row[1] for row in _tsv(folder / "translations.tsv")}
    cascade = load(model_dir)
    photos = [folder / name for name in shown]
    started = time.perf_counter()
    read = cascade.transcribe(photos)
    german = cascade.translator.translate(read)
    seconds = time.perf_counter() - started
    dev = _dev_eval(model_dir)
    print(f"model: {model_dir.relative_to(ROOT)}, photos of English text -> English text -> German text "
          f"(dev CER {dev.get('ocr_cer', '?')}%, BLEU {dev.get('bleu', '?')}; unseen fonts)")
    for name, text, hyp in zip(shown, read, german, strict=True):
        print(f"  {name}\n    read:      {text}\n    shows:     {shown[name]}\n    de:        {hyp}\n"
              f"    reference: {refs[name]}")
    error = cer([normalize_text(t) for t in read], [normalize_text(t) for t in shown.values()])
    bleu = sacre_scores(german, [refs[name] for name in shown])["bleu"]
    print(f"{len(photos)} photos: CER {error:.1f}%, BLEU {bleu:.1f}, {seconds:.2f}s\n")


def unified_examples(model_name: str, folder: Path) -> None:
    """One unified model: the example recordings transcribed and translated into German, French and Czech, and the
    first example sentences translated as text into the same languages."""
    from transduce.metrics.bleu import sacre_scores
    from transduce.metrics.wer import wer
    from transduce.unified import Unified

    model_dir = ROOT / "models" / model_name
    said = _tsv(folder / "transcripts.tsv")
    refs = [row[1:] for row in _tsv(folder / "translations.tsv")]
    sentences = (ROOT / "examples" / "en-de.en").read_text(encoding="utf-8").splitlines()[:3]
    model, langs = Unified.load(model_dir), ("de", "fr", "cs")
    audio = [folder / name for name, _ in said]
    started = time.perf_counter()
    heard = model.transcribe(audio)
    spoken = {lang: model.translate_audio(audio, lang) for lang in langs}
    written = {lang: model.translate(sentences, lang) for lang in langs}
    seconds = time.perf_counter() - started
    dev = _dev_eval(model_dir)
    print(f"model: {model_dir.relative_to(ROOT)}, one model for English speech -> English/German/French/Czech text "
          f"and English text -> German/French/Czech (dev WER {dev.get('wer', '?')}%, speech BLEU de/fr/cs "
          f"{dev.get('st_bleu', '?')}, text BLEU {dev.get('mt_bleu', '?')})")
    for i, (name, ref) in enumerate(said):
        print(f"  {name}\n    heard: {heard[i]}\n    said:  {ref}")
        for k, lang in enumerate(langs):
            print(f"    {lang}:    {spoken[lang][i]}\n    ref:   {refs[i][k]}")
    for i, sentence in enumerate(sentences):
        print(f"  en: {sentence}\n" + "".join(f"  {lang}: {written[lang][i]}\n" for lang in langs), end="")
    bleus = ", ".join(f"{lang} {sacre_scores(spoken[lang], [r[k] for r in refs])['bleu']:.1f}"
                      for k, lang in enumerate(langs))
    print(f"{len(said)} recordings: WER {wer(heard, [r for _, r in said]):.1f}%, speech BLEU {bleus}; "
          f"{len(sentences)} sentences; {seconds:.2f}s in all\n")


def stream_examples(model_name: str, folder: Path, chunk_ms: float = 640.0) -> None:
    """The example recordings joined by 1 s pauses, fed as live audio ``chunk_ms`` at a time: partials as
    they change, then the segments the endpointer closed, with times."""
    import torch

    from transduce.data.audio import load_audio
    from transduce.recognize import Recognizer
    from transduce.streaming.endpoint import EndpointConfig
    from transduce.streaming.stream import feed

    recognizer = Recognizer.load(ROOT / "models" / model_name)
    rate = recognizer.sample_rate
    names = [row[0] for row in _tsv(folder / "transcripts.tsv")]
    pause = torch.zeros(rate)
    audio = torch.cat([piece for name in names for piece in (load_audio(folder / name, rate), pause)])
    stream = recognizer.stream(chunk_ms, endpoint=EndpointConfig(trailing_silence=0.6))
    print(f"model: models/{model_name}, streaming {audio.numel() / rate:.1f}s of audio in {chunk_ms:.0f} ms chunks")
    def show(partial: str) -> None:
        if partial:
            print(f"  partial at {stream.stats.audio_seconds:5.2f}s: {partial}")

    started = time.perf_counter()
    segments = feed(stream, audio, chunk_ms, on_partial=show)
    seconds = time.perf_counter() - started
    for seg in segments:
        print(f"  final  [{seg.start:5.2f}-{seg.end:5.2f}s] {seg.text}")
    lat = sorted(stream.stats.chunk_seconds)
    print(f"real-time factor {seconds / (audio.numel() / rate):.3f}, per-chunk compute p95 "
          f"{lat[int(0.95 * (len(lat) - 1))] * 1000:.0f} ms for {chunk_ms:.0f} ms chunks\n")


def main() -> int:
    translate_examples()
    for name, folder in (("digits-conformer-ctc", "digits"), ("captions-conformer-ctc", "captions")):
        if (ROOT / "models" / name).is_dir():
            transcribe_examples(name, ROOT / "examples" / folder)
    if (ROOT / "models" / "multi30k-st").is_dir():
        speech_translate_examples("multi30k-st", ROOT / "examples" / "captions")
    if (ROOT / "models" / "multi30k-unified").is_dir():
        unified_examples("multi30k-unified", ROOT / "examples" / "captions")
    if (ROOT / "models" / "multi30k-image").is_dir():
        photo_examples("multi30k-image", ROOT / "examples" / "photos")
    if (ROOT / "models" / "digits-hybrid-streaming").is_dir():
        stream_examples("digits-hybrid-streaming", ROOT / "examples" / "digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
