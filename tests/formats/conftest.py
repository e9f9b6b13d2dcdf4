"""Fixtures for the format tests: the loopback PKI and servers of the CLI tests, random pins."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cli.world import World, build_world
from tlspin.pins import Pin


def pins(n: int) -> list[Pin]:
    """*n* random pins."""
    return [Pin(os.urandom(32)) for _ in range(n)]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Root, intermediate, leaf, backup key, rogue CA and their two running servers."""
    yield from build_world(tmp_path_factory.mktemp("formats-world"))
