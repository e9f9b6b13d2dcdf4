"""Fixtures for the format tests: the same loopback PKI and servers as the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.world import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Root, intermediate, leaf, backup key, rogue CA and their two running servers."""
    yield from build_world(tmp_path_factory.mktemp("formats-world"))
