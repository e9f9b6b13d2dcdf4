"""The hostile cases behind tests/vectors/bundles: what each document is, and what it must give.

Most refusals are built so that a lenient verifier would *accept* them: the duplicate key whose
other value carries the valid signature, the float ``42.0`` that a loose parser reads as 42, the
overlong or CESU-8 UTF-8 that a loose decoder turns into the signed text. A verifier passes only
by refusing them for the right reason. Keys are fixed (seed = 32 bytes of one value) and
Ed25519 is deterministic, so the files come out byte for byte the same on every run.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.bundles import DEFAULT_MAX_BYTES, PublicKey, canonical_json

UPDATE_HOST = "pins.example.com"
SEEDS = {"A": 1, "B": 2, "C": 3, "D": 4, "X": 66}
#: The order of the Ed25519 base point: S + L is the same scalar in a non-canonical encoding.
ORDER_L = 2**252 + 27742317777372353535851937790883648493
SPEC = Path(__file__).parents[2] / "docs" / "bundle-format.md"
NOTE = 'offline key "B" – safe № 3\t✓ 😀 \u2028\x7f\x01 / [[{'


def private(name: str) -> Ed25519PrivateKey:
    """The fixed test key *name* (A, B, C, D trusted in places; X never)."""
    return Ed25519PrivateKey.from_private_bytes(bytes([SEEDS[name]]) * 32)


def pub(name: str) -> str:
    """Base64 of the raw public key."""
    return PublicKey.from_key(private(name)).b64


def keyid(name: str) -> str:
    """Hex SHA-256 of the raw public key."""
    return PublicKey.from_key(private(name)).keyid


def pin(n: int) -> str:
    """A made-up SPKI pin, fixed by *n*."""
    digest = hashlib.sha256(f"tlspin vector pin {n}".encode()).digest()
    return "sha256/" + base64.b64encode(digest).decode()


def day(d: int, hour: int = 0, minute: int = 0, second: int = 0) -> str:
    """A time on day *d* of January 2025 (d may run past 31)."""
    when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        days=d - 1, hours=hour, minutes=minute, seconds=second
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


BASE_POLICY: dict[str, Any] = {
    "rule": [
        {"hosts": [UPDATE_HOST], "pins": [pin(1), {"pin": pin(2), "role": "backup", "note": NOTE}]},
        {"hosts": ["api.example.com", "**.cdn.example.com"], "pins": [pin(3), pin(4)]},
    ]
}


def signed(
    version: int,
    *,
    policy: Any = None,
    issued: str = day(1),
    expires: str = day(32),
    signing_keys: tuple[Sequence[str], int] | None = None,
) -> dict[str, Any]:
    """A ``signed`` object (policy defaults to BASE_POLICY)."""
    out: dict[str, Any] = {
        "format": "tlspin-bundle/1",
        "version": version,
        "issued_at": issued,
        "expires_at": expires,
        "policy": BASE_POLICY if policy is None else policy,
    }
    if signing_keys is not None:
        out["signing_keys"] = {
            "keys": [pub(k) for k in signing_keys[0]],
            "threshold": signing_keys[1],
        }
    return out


def sig(name: str, data: Any) -> dict[str, str]:
    """*name*'s signature entry over the canonical form of *data*."""
    raw = private(name).sign(canonical_json(data))
    return {"keyid": keyid(name), "sig": base64.b64encode(raw).decode()}


def envelope(content: dict[str, Any], signers: Iterable[str]) -> dict[str, Any]:
    """``{"signed", "signatures"}`` signed by each of *signers*."""
    return {"signed": content, "signatures": [sig(name, content) for name in signers]}


def compact(value: Any) -> bytes:
    """JSON without whitespace, UTF-8, non-ASCII unescaped, member order as given."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def replace_once(data: bytes, old: bytes | str, new: bytes | str) -> bytes:
    """*data* with the single occurrence of *old* replaced."""
    old_b = old.encode() if isinstance(old, str) else old
    new_b = new.encode() if isinstance(new, str) else new
    assert data.count(old_b) == 1, (old_b, data.count(old_b))
    return data.replace(old_b, new_b)


def escape_all(value: Any) -> str:
    """JSON with every character of every string and name written as a \\uXXXX escape."""
    if isinstance(value, str):
        units = value.encode("utf-16-be")
        return (
            '"'
            + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
            + '"'
        )
    if isinstance(value, dict):
        return "{" + ",".join(f"{escape_all(k)}:{escape_all(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(escape_all(v) for v in value) + "]"
    return json.dumps(value)


def reordered(value: Any) -> Any:
    """The same value with every object's members in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(v) for k, v in reversed(value.items())}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def spec_documents() -> dict[str, bytes]:
    """The documents of docs/bundle-format.md §14, byte for byte."""
    blocks = re.findall(
        r"<!-- vector: ([\w-]+) -->\n```\w*\n(.*?)\n```", SPEC.read_text("utf-8"), re.S
    )
    return {name: text.encode("utf-8") for name, text in blocks if name.endswith("-document")}


class Cases:
    """Every vector: documents by path, the vector entries (with ``want``), canonical inputs."""

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.vectors: list[dict[str, Any]] = []
        self.canonical_inputs: dict[str, bytes] = {}
        self.canonical: list[dict[str, Any]] = []
        self.spec = spec_documents()
        self.doc42 = compact(envelope(signed(42), "A"))
        from bundles.vector_cases_agreement import add_agreement
        from bundles.vector_cases_more import add_all

        add_all(self)
        add_agreement(self)

    def key_table(self) -> dict[str, dict[str, str]]:
        """Name -> private seed (hex), public key and key id of the fixed keys."""
        return {
            name: {"seed": (bytes([seed]) * 32).hex(), "public": pub(name), "keyid": keyid(name)}
            for name, seed in SEEDS.items()
        }

    def add(
        self,
        name: str,
        about: str,
        data: bytes,
        want: str,
        *,
        trusted: Sequence[str] = ("A",),
        threshold: int = 1,
        stored: bytes | None = None,
        now: str = day(15),
        min_version: int = 0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock_skew: int = 300,
        update_host: str = UPDATE_HOST,
        trusted_keys: Sequence[str] | None = None,
    ) -> None:
        """Add one vector (*want*: accepted, unchanged or the refusal reason).

        *trusted* names fixed keys; *trusted_keys* gives key texts instead (weak keys).
        """
        assert not any(v["name"] == name for v in self.vectors), name
        path = f"documents/{name}.json"
        self.documents[path] = data
        stored_path = None
        if stored is not None:
            stored_path = f"documents/{name}.stored.json"
            self.documents[stored_path] = stored
        self.vectors.append(
            {
                "name": name,
                "about": about,
                "document": path,
                "stored": stored_path,
                "trusted_keys": (
                    list(trusted_keys) if trusted_keys is not None else [pub(k) for k in trusted]
                ),
                "threshold": threshold,
                "now": now,
                "clock_skew": clock_skew,
                "min_version": min_version,
                "max_bytes": max_bytes,
                "update_host": update_host,
                "want": want,
            }
        )

    def add_canonical(self, name: str, about: str, data: bytes) -> None:
        """A strict-parse + RFC 8785 case: the expected text or reason is computed."""
        path = f"canonical/{name}.json"
        self.canonical_inputs[path] = data
        self.canonical.append({"name": name, "about": about, "input": path})
