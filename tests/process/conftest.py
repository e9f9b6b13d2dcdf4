"""Fixtures for the process-wide proofs: Twisted's reactor thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import _reactor


@pytest.fixture(scope="session", autouse=True)
def _stop_reactor() -> Iterator[None]:
    """Stop the session's reactor thread (if a test started it) at the end."""
    yield
    _reactor.stop()
