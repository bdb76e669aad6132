"""Models trained once per test session and shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import train_tiny_copy


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """tiny-copy (reverse the letters), trained through the CLI: ``trained/data``, ``trained/run``."""
    return train_tiny_copy(tmp_path_factory.mktemp("tiny"))
