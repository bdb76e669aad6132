"""transduce: sequence-to-sequence learning across modalities."""

from transduce.translate import Translator

__all__ = ["Translator"]
