"""Cascaded speech translation: recognize, (restore), translate.

``Cascade(recognizer, translator)`` turns audio into target text with the output API of
:class:`transduce.translate.Translator` (``translate``, ``search``, ``translate_nbest``), so callers treat it
as a translator whose inputs are audio files or waveforms.

A speech model trained on normalized transcripts writes lowercase words without punctuation, while a text
translation model reads cased, punctuated sentences. A :class:`Truecaser` in between puts back what a
corpus of the translation model's source text writes: each word's usual casing, hyphenated compounds that
normalization split ("t shirt" -> "t-shirt"), names ("new york" -> "New York"), commas between words that
usually have one ("tie and" -> "tie, and"), a capital first letter and the usual final punctuation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transduce.data.captions import normalize_text
from transduce.data.text import DataError, read_lines
from transduce.decoding.hypothesis import Hypothesis
from transduce.recognize import Audio, Recognizer
from transduce.translate import Translator

_MIN_COUNT = 2  # a written form seen once in the corpus is not restored
_SPAN = 3  # words per span at most (a hyphenated word counts its parts)
_PUNCTUATION = ".;:!?\"()[]"  # stripped from words; commas stay, and spans vote on them ("tie, and")


TRUECASER = "truecase.json"
"""A translation model folder's truecaser for cascades (learned from its English training text)."""

CASCADE = "cascade.json"
"""The file that makes a folder a bundled cascade: ``{"asr": SPEECH_DIR, "mt": TEXT_DIR}``, both relative to it
(e.g. ``models/multi30k-st``: ``{"asr": "asr", "mt": "mt"}``, the truecaser in ``mt/truecase.json``)."""


def cascade_parts(folder: str | Path) -> tuple[Path, Path] | None:
    """(speech model folder, translation model folder) of a bundled cascade; None when ``folder`` has no
    ``cascade.json``. A malformed file or a missing part is a DataError naming the file and key."""
    path = Path(folder) / CASCADE
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not JSON ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected an object {{\"asr\": DIR, \"mt\": DIR}}")
    parts = []
    for key in ("asr", "mt"):
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            raise DataError(f"{path}: key {key!r} must name a model folder relative to {path.parent}")
        part = path.parent / value
        if not part.is_dir():
            raise DataError(f"{path}: {key} folder {part} does not exist")
        parts.append(part)
    return parts[0], parts[1]


@dataclass(frozen=True)
class Truecaser:
    """Restores casing, split hyphenated compounds and final punctuation of normalized English."""

    forms: dict[str, str] = field(default_factory=dict)
    """{normalized words: their usual written form}, only where the two differ: "london" -> "London",
    "new york" -> "New York", "t shirt" -> "t-shirt", "tie and" -> "tie, and"."""
    final: str = ""
    """Appended to every sentence ("." when most corpus sentences end so)."""
    capitalize: bool = True
    """Upper-case the first letter."""

    @classmethod
    def learn(cls, lines: Iterable[str]) -> Truecaser:
        """The usual written form of every span of up to three words of ``lines`` (spans that normalize alike vote
        together; a sentence's first letter does not count as capital; a comma counts between a span's words, not
        after its last), and the usual final punctuation."""
        votes: Counter[tuple[str, str]] = Counter()  # (normalized span, written form)
        finals: Counter[str] = Counter()
        sentences = 0
        for line in lines:
            cores = (word.strip(_PUNCTUATION) for word in line.split())
            words = [core for core in cores if any(c.isalnum() for c in core)]
            if not words:
                continue
            sentences += 1
            last = line.rstrip()[-1]
            finals[last if not last.isalnum() else ""] += 1
            words[0] = words[0][:1].lower() + words[0][1:]
            for n in range(1, _SPAN + 1):
                for i in range(len(words) - n + 1):
                    written = " ".join(words[i: i + n]).rstrip(",")  # a comma inside a span is its own
                    votes[normalize_text(written), written] += 1
        best: dict[str, tuple[int, str]] = {}
        for (key, written), count in votes.items():
            if key and key.count(" ") < _SPAN and count > best.get(key, (0, ""))[0]:
                best[key] = (count, written)
        final, count = finals.most_common(1)[0] if finals else ("", 0)
        kept = cls({}, final if count * 2 > sentences else "")
        for key, (count, written) in sorted(best.items(), key=lambda item: item[0].count(" ")):  # short spans first
            if written != key and count >= _MIN_COUNT and kept.restore_words(key) != written:
                kept.forms[key] = written  # not what the shorter spans kept so far already restore
        return kept

    @classmethod
    def from_text(cls, path: str | Path) -> Truecaser:
        """Learned from a text file (one sentence per line, ``.gz`` ok), or loaded from a ``.json`` saved by
        :meth:`save`."""
        path = Path(path)
        if path.suffix != ".json":
            return cls.learn(read_lines(path))
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            return cls({str(k): str(v) for k, v in obj["forms"].items()}, str(obj["final"]), bool(obj["capitalize"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{path}: not a truecaser saved by Truecaser.save ({type(err).__name__}: {err})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"forms": self.forms, "final": self.final, "capitalize": self.capitalize},
                                         ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    def __call__(self, text: str) -> str:
        restored = self.restore_words(text)
        if not restored:
            return ""
        if self.capitalize:
            restored = restored[:1].upper() + restored[1:]
        return restored + self.final

    def restore_words(self, text: str) -> str:
        """``text`` with each span replaced by its written form, the longest known span first."""
        words = text.split()
        longest = max((key.count(" ") + 1 for key in self.forms), default=1)
        out: list[str] = []
        i = 0
        while i < len(words):
            for n in range(min(longest, len(words) - i), 0, -1):  # the longest known span first
                key = " ".join(words[i: i + n])
                if key in self.forms or n == 1:
                    out.append(self.forms.get(key, key))
                    i += n
                    break
        return " ".join(out)


class Cascade:
    """A speech recognizer, an optional restoration step and a text translator, used as one translator of audio."""

    def __init__(self, recognizer: Recognizer, translator: Translator, *, truecaser: Truecaser | None = None) -> None:
        self.recognizer, self.translator, self.truecaser = recognizer, translator, truecaser
        self.config = translator.config
        self.tokenizers = translator.tokenizers

    @classmethod
    def load(cls, asr: str | Path, mt: str | Path, *, truecase: str | Path | None = None,
             device: str = "cpu") -> Cascade:
        """The speech model folder ``asr`` and the translation model folder ``mt``; ``truecase``: a text file
        of the translation model's source side (or a saved truecaser) to restore the transcripts with; None = the
        translation model's own ``truecase.json`` when it has one, "none" = no restoration."""
        recognizer = Recognizer.load(asr, device)
        translator = Translator.load(mt, device)
        if truecase is None:
            truecase = next((p for p in (Path(mt) / TRUECASER, Path(mt) / "model" / TRUECASER) if p.is_file()), None)
        if truecase is None or str(truecase) == "none":
            return cls(recognizer, translator)
        return cls(recognizer, translator, truecaser=Truecaser.from_text(truecase))

    @classmethod
    def load_folder(cls, folder: str | Path, *, device: str = "cpu") -> Cascade:
        """A bundled cascade folder (one with ``cascade.json``; see :data:`CASCADE`)."""
        parts = cascade_parts(folder)
        if parts is None:
            raise DataError(f"{folder}: not a cascade folder (no {CASCADE})")
        return cls.load(*parts, device=device)

    @property
    def langs(self) -> tuple[str, ...]:
        """The one target language (the translation model's), as ``SpeechTranslator.langs``."""
        return (self.config.data.tgt_lang,)

    def check_lang(self, tgt_lang: str | None) -> None:
        """A ValueError unless ``tgt_lang`` is None or the translation model's target language."""
        if tgt_lang is not None and tgt_lang not in self.langs:
            raise ValueError(f"this cascade translates into {self.langs[0]}, not {tgt_lang!r}")

    def transcribe(self, audio: Sequence[Audio], **asr_overrides: object) -> list[str]:
        """The translator's inputs: the recognizer's best transcripts, restored when there is a truecaser."""
        texts = self.recognizer.transcribe(audio, **asr_overrides)
        return [self.truecaser(t) for t in texts] if self.truecaser is not None else texts

    def search(self, audio: Sequence[Audio], **overrides: object) -> list[list[Hypothesis]]:
        """Translation hypotheses per input; ``overrides`` are the translator's DecodeConfig fields."""
        return self.translator.search(self.transcribe(audio), **overrides)

    def translate(self, audio: Sequence[Audio], tgt_lang: str | None = None, **overrides: object) -> list[str]:
        """Detokenized best translation per input, in input order (``tgt_lang``, when given, must be the
        translation model's: the call reads as ``SpeechTranslator.translate``)."""
        self.check_lang(tgt_lang)
        return self.translator.translate(self.transcribe(audio), **overrides)

    def translate_nbest(self, audio: Sequence[Audio], nbest: int, **overrides: object) -> list[list[tuple[str, float]]]:
        """The ``nbest`` best (translation, score) pairs per input."""
        return self.translator.translate_nbest(self.transcribe(audio), nbest, **overrides)
