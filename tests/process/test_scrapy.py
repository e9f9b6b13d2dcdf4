"""Scrapy through tlspin's context factory (DOWNLOADER_CLIENTCONTEXTFACTORY), in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

SPIDER = Path(__file__).with_name("_spider.py")


def crawl(url: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one Scrapy request in a child Python and return what it reported."""
    out = tmp_path / f"result-{len(list(tmp_path.glob('result-*')))}.json"
    cmd = [*prefix, sys.executable, str(SPIDER), url, str(out), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def write_policy(tmp_path: Path, pins: list[str], name: str = "pins.toml") -> str:
    """Write a policy pinning localhost to *pins*; return its path."""
    path = tmp_path / name
    quoted = ", ".join(f'"{p}"' for p in pins)
    path.write_text(f'[[rule]]\nhosts = ["localhost"]\npins = [{quoted}]\n')
    return str(path)


def trusting_env(pki: ServerPKI) -> dict[str, str]:
    """A child's environment trusting both test CAs (Scrapy verifies with OpenSSL's paths)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_CA_BUNDLE")}
    env["SSL_CERT_FILE"] = pki.cafile
    return env


@pytest.mark.parametrize("verify", [True, False], ids=["verifying", "scrapy-default"])
def test_scrapy_factory_accepts_legit_and_refuses_forged(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any],
    tmp_path: Path, verify: bool,
) -> None:
    """The pinned factory passes the real server and refuses a forged leaf with zero bytes."""
    policy = write_policy(tmp_path, pki.pins(level="leaf"))
    args = ["--factory", "--policy", policy, *(["--verify"] if verify else [])]
    env = trusting_env(pki)
    assert crawl(tls_server.url, tmp_path, *args, env=env) == {"status": 200, "body": "ok"}
    received = len(tls_server.received)
    rogue_ca_issues()
    result = crawl(tls_server.url, tmp_path, *args, env=env)
    # Without verification only the leaf counts: the forged leaf matches no leaf pin.
    expected = "PinMismatchError" if verify else "PinningUnavailableError"
    assert result["pin_error"] == expected, result
    assert len(tls_server.received) == received


def test_scrapy_default_counts_only_leaf_pins(pki: ServerPKI, tls_server: TLSServer,
                                              tmp_path: Path) -> None:
    """Scrapy's default does not verify chains, so an intermediate pin cannot vouch for one."""
    policy = write_policy(tmp_path, pki.pins(level="intermediate"))
    env = trusting_env(pki)
    result = crawl(tls_server.url, tmp_path, "--factory", "--policy", policy, env=env)
    assert result["pin_error"] == "PinningUnavailableError", result
    assert result["pin_reason"] == "unverified-chain"
    assert "only a pin of the leaf's own key can vouch" in result["pin_message"]
    assert tls_server.received == b""
    verified = crawl(tls_server.url, tmp_path, "--factory", "--verify", "--policy", policy, env=env)
    assert verified == {"status": 200, "body": "ok"}
