"""The unified task's data: its config section, the speech-translation manifests (ASR and speech translation
examples), the parallel text folder (text translation examples) and the text-line image manifests (OCR and image
translation examples, ``tasks/unified_images.py``), one tokenizer over all of them.

A speech manifest line (``transduce data speech-translation``) gives an ASR example (its "text" in the source
language) and one speech translation example per language; a text folder (``transduce data multi30k``) gives one
text translation example per pair and language (``{prefix}.{src_lang}`` with ``{prefix}.{lang}``, .gz allowed).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transduce.data.images import ImageLine, read_image_manifests
from transduce.data.manifest import Utterance
from transduce.data.speech_translation import STUtterance, read_st_manifest
from transduce.data.text import read_lines, read_parallel
from transduce.data.tokenizer import Tokenizer, train_sentencepiece
from transduce.data.unified_batching import Example
from transduce.errors import ConfigError, DataError
from transduce.models.unified import Tags
from transduce.speech_config import SpeechDataConfig
from transduce.train.corpus import _find
from transduce.unified import JOBS


@dataclass(kw_only=True)
class UnifiedDataConfig(SpeechDataConfig):
    """The speech fields (manifests in ``dir``, features, augmentation; ``tokenizer``/``vocab_size`` of the one
    SentencePiece model) plus the tasks, the text folder and the task sampling."""

    tasks: tuple[str, ...] = ("asr", "st", "mt")
    """Training tasks: asr (speech -> src_lang text), st (speech -> langs), mt (src_lang text -> langs), ocr (image ->
    src_lang text), imt (image -> langs)."""
    src_lang: str = "en"
    """The language of the speech and of the text sources (the transcripts' tag)."""
    langs: tuple[str, ...] = ("de", "fr", "cs")
    """Translation target languages (st and mt); the first is the default at inference."""
    text_dir: str = ""
    """Folder of the parallel text (``transduce data multi30k``); needed by the mt task."""
    text_train: str = "train"
    """Prefix of the training text files."""
    text_valid: str = "val"
    """Prefix of the development text files."""
    image_dir: str = ""
    """Folder of the text-line image manifests (``transduce data text-images``); needed by ocr and imt."""
    image_train: str = "train.jsonl"
    """Training image manifest(s), comma-separated, relative to image_dir."""
    image_valid: str = "dev.jsonl"
    """Development image manifest."""
    width_jitter: float = 0.1
    """Training images are stretched along the width by a random factor in [1 - j, 1 + j] (0 = off)."""
    stats_images: int = 500
    """Training images the pixel mean/std are estimated on."""
    task_weights: tuple[float, ...] = ()
    """Sampling weight of each task (data.tasks order); empty = temperature sampling over the data sizes."""
    temperature: float = 1.0
    """Temperature T of the sampling without weights: p_t ~ size_t^(1/T) (1 = as the data comes)."""
    loss_weights: tuple[float, ...] = ()
    """Loss weight of each task (data.tasks order); empty = 1 each."""
    spm: str = ""
    """An existing SentencePiece model to use (else model.init_decoder_from's, else one is trained)."""
    max_len: int = 200
    """Leave out training text pairs with a side longer than this (pieces)."""
    valid_limit: int = 0
    """Dev items per task and language (the first ones; 0 = all)."""
    without: tuple[str, ...] = ()
    """"task:lang" pairs left out of training and dev (e.g. [st:cs, mt:cs]: a model trained without Czech pairs that
    keeps the Czech tag, to be fine-tuned into it later); mt's text files of such a language train only the
    tokenizer (their target side, as monolingual text)."""


def check_data(data: UnifiedDataConfig, inputs: tuple[str, ...]) -> None:
    """ConfigError naming the first inconsistent data.* field."""
    unknown = [t for t in data.tasks if t not in JOBS]
    if not data.tasks or unknown or len(set(data.tasks)) != len(data.tasks):
        raise ConfigError(f"data.tasks: name each of {', '.join(JOBS)} at most once, got {list(data.tasks)}")
    missing = [JOBS[t][0] for t in data.tasks if JOBS[t][0] not in inputs]
    if missing:
        raise ConfigError(f"model.inputs: task {data.tasks[[JOBS[t][0] for t in data.tasks].index(missing[0])]} "
                          f"needs {missing[0]} input, got {list(inputs)}")
    for name in ("task_weights", "loss_weights"):
        values = getattr(data, name)
        if values and (len(values) != len(data.tasks) or min(values) < 0 or sum(values) <= 0):
            raise ConfigError(f"data.{name}: one weight >= 0 per task of data.tasks {list(data.tasks)}, got "
                              f"{list(values)}")
    if data.temperature <= 0:
        raise ConfigError(f"data.temperature: must be > 0, got {data.temperature}")
    if not data.langs or data.src_lang in data.langs:
        raise ConfigError(f"data.langs: name the translation targets, not data.src_lang, got {list(data.langs)}")
    if "mt" in data.tasks and not data.text_dir:
        raise ConfigError("data.text_dir: the mt task needs a parallel text folder")
    if ("ocr" in data.tasks or "imt" in data.tasks) and not data.image_dir:
        raise ConfigError("data.image_dir: the ocr and imt tasks need a text-line image folder")
    known = {f"{t}:{lang}" for t in data.tasks
             for lang in ([data.src_lang] if JOBS[t][1] == "transcribe" else data.langs)}
    unknown = [pair for pair in data.without if pair not in known]
    if unknown:
        raise ConfigError(f"data.without: {unknown[0]!r} is not a task:lang of this run ({', '.join(sorted(known))})")


@dataclass
class Sources:
    """The raw data of a run: speech utterances, text pairs per language, text-line images."""

    speech: list[STUtterance]
    text: dict[str, tuple[list[str], list[str]]]
    images: list[ImageLine] = field(default_factory=list)
    monolingual: list[str] = field(default_factory=list)
    """Target-side text of the languages ``data.without`` leaves out of mt: it trains no task, only the tokenizer,
    so that the kept tag's language has its pieces (Czech letters are not unknowns when the model is fine-tuned)."""

    def sentences(self) -> list[str]:
        """Every sentence the tokenizer should cover."""
        out = [u.utt.text for u in self.speech] + [t for u in self.speech for t in u.translation.values()]
        out += [x.text for x in self.images] + [t for x in self.images for t in x.translation.values()]
        for src, tgt in self.text.values():
            out += src + tgt
        return out + self.monolingual


def read_sources(data: UnifiedDataConfig, train: bool) -> Sources:
    """The training (or dev) speech manifests and text pairs the tasks need."""
    speech: list[STUtterance] = []
    if "asr" in data.tasks or "st" in data.tasks:
        langs = list(data.langs) if "st" in data.tasks else []
        names = data.train.split(",") if train else [data.valid]
        speech = [u for name in names for u in read_st_manifest(Path(data.dir) / name.strip(), langs)]
    text, monolingual = {}, []
    if "mt" in data.tasks:
        folder, prefix = Path(data.text_dir), data.text_train if train else data.text_valid
        for lang in data.langs:
            if f"mt:{lang}" not in data.without:
                text[lang] = read_parallel(_find(folder, prefix, data.src_lang), _find(folder, prefix, lang))
            elif train:
                try:
                    path = _find(folder, prefix, lang)
                except DataError:  # no text of it: nothing for the tokenizer
                    continue
                monolingual += read_lines(path)  # an unreadable file is still an error naming it
    images = []
    if "ocr" in data.tasks or "imt" in data.tasks:
        images = read_image_manifests(Path(data.image_dir), data.image_train if train else data.image_valid)
    return Sources(speech, text, images, monolingual)


def tokenizer(data: UnifiedDataConfig, run_dir: Path, sources: Sources, given: str, field: str,
              log: Callable[[str], None]) -> Tokenizer:
    """The run folder's tokenizer; the first time ``given`` (a file; ``field`` names where it came from) copied,
    else one trained over every sentence of ``sources``."""
    from transduce.unified import TOKENIZER

    path = run_dir / TOKENIZER
    if given:
        if not Path(given).is_file():
            raise ConfigError(f"{field}: {given}: no such SentencePiece model")
        if path.is_file() and path.read_bytes() != Path(given).read_bytes():
            raise ConfigError(f"{field}: {path} differs from {given}: start a new run folder")
        if not path.is_file():
            shutil.copy(given, path)
            log(f"{TOKENIZER}: taken from {given}")
    if path.is_file():
        return Tokenizer(path)
    tok = train_sentencepiece(sources.sentences(), path, vocab_size=data.vocab_size, model_type=data.tokenizer)
    log(f"trained {data.tokenizer} tokenizer {TOKENIZER}: {len(tok)} pieces over {len(sources.sentences())} "
        "sentences")
    return tok


def speech_examples(data: UnifiedDataConfig, utts: list[STUtterance], tok: Tokenizer, tags: Tags, *,
                    frames: Callable[[Utterance], int], subsampling: int, limit: int, per_task: int = 0,
                    max_duration: float = math.inf) -> list[Example]:
    """ASR examples, then speech translation examples grouped by language; too long ones left out (``limit``
    target pieces, ``max_duration`` seconds); ``per_task`` keeps the first ones of each (task, language)."""
    transcripts = tok.encode([u.utt.text for u in utts])
    jobs = [("asr", data.src_lang, "transcribe")] if "asr" in data.tasks else []
    jobs += [("st", lang, "translate") for lang in data.langs] if "st" in data.tasks else []
    out: list[Example] = []
    for job, lang, tag in (j for j in jobs if f"{j[0]}:{j[1]}" not in data.without):
        texts = [u.utt.text if job == "asr" else u.translation[lang] for u in utts]
        kept = 0
        for u, text, target, transcript in zip(utts, texts, tok.encode(texts), transcripts, strict=True):
            if u.utt.duration > max_duration or not 0 < len(target) <= limit or (per_task and kept == per_task):
                continue
            cost = max(frames(u.utt) // subsampling, len(target) + 2)
            out.append(Example(data.tasks.index(job), u.utt, [], transcript, tuple(tags.prefix(tag, lang)), target,
                               lang, text, cost))
            kept += 1
    return out


def text_examples(data: UnifiedDataConfig, pairs: dict[str, tuple[list[str], list[str]]], tok: Tokenizer,
                  tags: Tags, *, limit: int, per_task: int = 0) -> list[Example]:
    """Text translation examples grouped by language; pairs with a side over data.max_len pieces or a target over
    ``limit`` left out; ``per_task`` keeps the first ones of each language."""
    out: list[Example] = []
    for lang, (src, tgt) in pairs.items():
        kept = 0
        for source, target, text in zip(tok.encode(src), tok.encode(tgt), tgt, strict=True):
            too_long = len(source) > data.max_len or len(target) > min(limit, data.max_len)
            if too_long or not source or not target or (per_task and kept == per_task):
                continue
            out.append(Example(data.tasks.index("mt"), None, source, [], tuple(tags.prefix("translate", lang)),
                               target, lang, text, max(len(source) + 1, len(target) + 2)))
            kept += 1
    return out


def no_examples(data: UnifiedDataConfig) -> DataError:
    return DataError(f"{data.dir}/{data.train} and {data.text_dir or '(no text_dir)'}: no usable training examples")
