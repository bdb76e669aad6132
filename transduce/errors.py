"""The errors a user can cause, in one torch-free module: the command line catches them and prints one line
(``transduce CMD: error: ...``) instead of a traceback. Each message names the file, line, key or folder."""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or model config that does not fit the dataclasses; the message names the key."""


class DataError(ValueError):
    """Bad input data; the message names the file (and line where there is one)."""


class UsageError(ValueError):
    """Wrong combination of command-line arguments, or a model of the wrong kind for a command."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss keeps being NaN/inf)."""


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, UsageError, TrainingError, FileNotFoundError,
                                            FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
"""What the command line reports as one line (exit status 2). The OS errors are about paths the user gave (an
output folder inside a file, an unreadable input); their message names the path."""
