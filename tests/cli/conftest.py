"""Fixtures for the CLI tests: a session-wide loopback PKI and servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .world import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Root, intermediate, leaf, backup key, rogue CA and their two running servers."""
    yield from build_world(tmp_path_factory.mktemp("cli-world"))
