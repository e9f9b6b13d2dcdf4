"""Temporary smoke test for scripts/test (to be deleted)."""

from __future__ import annotations

import os
import subprocess

NAMES = ("TLSPIN_TEST_PG_URL", "TLSPIN_MITMDUMP", "TLSPIN_CHROMIUM", "TLSPIN_OKHTTP_CLASSPATH")


def test_env_vars_present() -> None:
    """scripts/test exports the peer locations."""
    for name in NAMES:
        assert os.environ.get(name), name


def test_postgres_select() -> None:
    """The throwaway PostgreSQL answers a query."""
    import psycopg

    with psycopg.connect(os.environ["TLSPIN_TEST_PG_URL"]) as conn:
        assert conn.execute("select 41 + 1").fetchone() == (42,)


def test_mitmdump_runs() -> None:
    """mitmdump prints its version."""
    cmd = [os.environ["TLSPIN_MITMDUMP"], "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "Mitmproxy" in out.stdout
