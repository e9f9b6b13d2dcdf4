"""A shared loopback PKI and two HTTPS servers for the CLI and format tests.

``World`` holds a root CA, an intermediate, a ``localhost`` leaf served on 127.0.0.1, a backup
key with no certificate yet, and a rogue CA whose forged ``localhost`` leaf is served by a second
server (a MITM the client also trusts when it uses ``both_pem``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tlspin.exceptions import SinglePinWarning
from tlspin.pins import Pin
from tlspin.policy import PinPolicy, PinRule
from tlspin.testing import pki
from tlspin.testing.servers import TLSServer


@dataclass
class World:
    """Certificates, files and running servers shared by a test session."""

    dir: Path
    root: pki.CA
    inter: pki.CA
    leaf: pki.Leaf
    backup: pki.PrivateKey
    rogue_root: pki.CA
    rogue_leaf: pki.Leaf
    server: TLSServer
    rogue_server: TLSServer
    root_pem: Path
    both_pem: Path

    @property
    def leaf_pin(self) -> str:
        """Pin of the served leaf key."""
        return self.leaf.pin

    @property
    def inter_pin(self) -> str:
        """Pin of the intermediate CA key."""
        return self.inter.pin

    @property
    def root_pin(self) -> str:
        """Pin of the root CA key."""
        return self.root.pin

    @property
    def backup_pin(self) -> str:
        """Pin of the backup key (no certificate yet)."""
        return str(Pin.from_private_key(self.backup))

    @property
    def target(self) -> str:
        """``localhost:PORT`` of the real server."""
        return f"localhost:{self.server.port}"

    @property
    def rogue_target(self) -> str:
        """``localhost:PORT`` of the forging server."""
        return f"localhost:{self.rogue_server.port}"

    def write(self, name: str, text: str | bytes) -> Path:
        """Write a file into a fresh per-call sub-directory and return its path."""
        sub = Path(os.fspath(self.dir)) / f"f{len(list(self.dir.iterdir()))}"
        sub.mkdir()
        path = sub / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path


def build_world(directory: Path) -> Iterator[World]:
    """Create the PKI, write the CA files and run both servers until the generator closes."""
    root = pki.CA.root("tlspin cli test root")
    inter = root.intermediate("tlspin cli test intermediate")
    leaf = inter.issue("localhost", "127.0.0.1")
    backup, _csr = pki.backup_key(names=["localhost"])
    rogue_root = pki.CA.root("rogue root")
    rogue_leaf = rogue_root.issue("localhost", "127.0.0.1")
    root_pem = directory / "root.pem"
    root_pem.write_bytes(root.cert_pem)
    both_pem = directory / "both-roots.pem"
    both_pem.write_bytes(root.cert_pem + rogue_root.cert_pem)
    files = directory / "files"
    files.mkdir()
    with TLSServer(leaf) as server, TLSServer(rogue_leaf) as rogue:
        yield World(
            files,
            root,
            inter,
            leaf,
            backup,
            rogue_root,
            rogue_leaf,
            server,
            rogue,
            root_pem,
            both_pem,
        )


def rule(hosts: str | Sequence[str], pins: Sequence[object], **options: object) -> PinRule:
    """A PinRule built without the single-pin warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        return PinRule(hosts, pins, **options)  # type: ignore[arg-type]


def policy(*rules: PinRule, **options: object) -> PinPolicy:
    """A PinPolicy of *rules*."""
    return PinPolicy(rules, **options)  # type: ignore[arg-type]


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``tlspin ARGS`` in-process and return click's result (stdout and stderr apart)."""
    from tlspin.cli import main

    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def require_tool(name: str, env_var: str | None = None) -> str:
    """Return the path of an external tool; skip if absent, but fail when $CI is set."""
    path = os.environ.get(env_var or "") or shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (set {env_var} or install it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so {name} must be available: {message}")
    pytest.skip(message)
