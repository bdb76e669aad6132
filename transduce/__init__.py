"""transduce: sequence-to-sequence learning across modalities.

``from transduce import Translator, Recognizer`` works; importing the package itself loads neither torch nor
the models (they load on first use of these names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transduce.recognize import Recognizer
    from transduce.translate import Translator

__all__ = ["Recognizer", "Translator"]


def __getattr__(name: str) -> Any:
    if name == "Translator":
        from transduce.translate import Translator

        return Translator
    if name == "Recognizer":
        from transduce.recognize import Recognizer

        return Recognizer
    raise AttributeError(f"module 'transduce' has no attribute {name!r}")
