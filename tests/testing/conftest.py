"""Fixtures for the test-kit tests: one PKI per session, a fresh origin per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tlspin.testing.pki import CA, Leaf
from tlspin.testing.servers import TLSServer

ORIGIN_NAMES = ("localhost", "127.0.0.1", "::1", "api.example.test", "other.example.test")


@pytest.fixture(scope="session")
def root() -> CA:
    """The root CA the origin chains to."""
    return CA.root()


@pytest.fixture(scope="session")
def intermediate(root: CA) -> CA:
    """An intermediate under `root` that issues the origin leaf."""
    return root.intermediate("tlspin test intermediate")


@pytest.fixture(scope="session")
def origin_leaf(intermediate: CA) -> Leaf:
    """Leaf for every name the tests use to reach the origin."""
    return intermediate.issue(*ORIGIN_NAMES)


@pytest.fixture(scope="session")
def stranger() -> CA:
    """An unrelated root that trusts nothing the origin serves."""
    return CA.root("tlspin unrelated root")


@pytest.fixture
def server(origin_leaf: Leaf) -> Iterator[TLSServer]:
    """A running origin on 127.0.0.1 serving `origin_leaf`."""
    with TLSServer(origin_leaf, response_body=b"hello from origin") as srv:
        yield srv
