"""Fixtures shared by test files (request them by name, e.g. ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's tests: tiny models train and decode fastest so (no threads waiting on
    each other, which costs most on a busy machine), and CTranslate2 takes PyTorch's count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
