"""docs/bundle-format.md: its worked example and test vectors match the implementation."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest

from tlspin.bundles import (
    BundleError,
    Document,
    KeySet,
    TrustState,
    accept,
    canonical_json,
    next_chain,
    parse_document,
    sign_bundle,
)

from .conftest import public, seed_key

SPEC = Path(__file__).parents[2] / "docs" / "bundle-format.md"
_BLOCK = re.compile(r"<!-- vector: ([\w-]+) -->\n```\w*\n(.*?)\n```", re.DOTALL)


@pytest.fixture(scope="module")
def vectors() -> dict[str, str]:
    """The named code blocks of the spec."""
    found = dict(_BLOCK.findall(SPEC.read_text(encoding="utf-8")))
    assert set(found) == {
        "key-a",
        "key-b",
        "v42-document",
        "v42-canonical",
        "v42-sha256",
        "v43-document",
        "v44-document",
    }
    return found


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    """A moment in January 2025 (UTC)."""
    return dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        days=day - 1, hours=hour, minutes=minute
    )


def trust_a() -> TrustState:
    """A client that ships key A."""
    return TrustState(KeySet([public(seed_key(1))]))


def test_keys_and_key_ids(vectors: dict[str, str]) -> None:
    """Key A and B (seeds 0x01 and 0x02 × 32): base64 raw public key and hex SHA-256 key id."""
    for name, seed in (("key-a", 1), ("key-b", 2)):
        key = public(seed_key(seed))
        assert vectors[name].split("\n") == [key.b64, key.keyid]
        assert key.keyid == hashlib.sha256(key.raw).hexdigest()


def test_vector_1_bytes(vectors: dict[str, str]) -> None:
    """The canonical bytes, their SHA-256 and the deterministic signature are as published."""
    document = parse_document(vectors["v42-document"].encode())
    canonical = vectors["v42-canonical"].encode("utf-8")
    assert canonical_json(document.bundle.signed) == canonical
    assert hashlib.sha256(canonical).hexdigest() == vectors["v42-sha256"]
    assert document.bundle.signatures[0].sig == seed_key(1).sign(canonical)
    resigned = sign_bundle(
        document.bundle.policy_data,
        keys=[seed_key(1)],
        version=42,
        issued_at=at(1),
        expires_at=at(32),
    )
    assert resigned.dumps().decode().rstrip("\n") == vectors["v42-document"]


def test_vector_1_acceptance_and_refusals(vectors: dict[str, str]) -> None:
    """Vector 1 is accepted at 2025-01-15 and refused exactly as the spec lists."""
    document = parse_document(vectors["v42-document"].encode())
    assert accept(document, trust=trust_a(), now=at(15)).bundle.version == 42
    data = json.loads(vectors["v42-document"])
    data["signed"]["version"] = 43
    only_b = TrustState(KeySet([public(seed_key(2))]))
    other = sign_bundle(
        {"rule": []}, keys=[seed_key(1)], version=42, issued_at=at(1), expires_at=at(32)
    )
    newer = sign_bundle(
        {"rule": []}, keys=[seed_key(1)], version=43, issued_at=at(1), expires_at=at(32)
    )
    cases = [
        (parse_document(data), {"trust": trust_a(), "now": at(15)}, "threshold"),
        (document, {"trust": only_b, "now": at(15)}, "threshold"),
        (document, {"trust": trust_a(), "now": at(32)}, "expired"),
        (document, {"trust": trust_a(), "now": at(0, 23, 50)}, "future"),
        (document, {"trust": trust_a(), "now": at(15), "current": other.bundle}, "equivocation"),
        (document, {"trust": trust_a(), "now": at(15), "current": newer.bundle}, "rollback"),
    ]
    for doc, options, reason in cases:
        with pytest.raises(BundleError) as info:
            accept(doc, **options)  # type: ignore[arg-type]
        assert info.value.reason == reason


def test_vector_2_rotation(vectors: dict[str, str]) -> None:
    """Vector 2 moves trust from A to B; without B's signature it is refused as 'rotation'."""
    document = parse_document(vectors["v43-document"].encode())
    verified = accept(document, trust=trust_a(), now=at(15))
    assert verified.trust.keys.keyids == {public(seed_key(2)).keyid}
    data = json.loads(vectors["v43-document"])
    data["signatures"] = [s for s in data["signatures"] if s["keyid"] == public(seed_key(1)).keyid]
    with pytest.raises(BundleError) as info:
        accept(parse_document(data), trust=trust_a(), now=at(15))
    assert info.value.reason == "rotation"
    again = sign_bundle(
        document.bundle.policy_data,
        keys=[seed_key(1), seed_key(2)],
        version=43,
        issued_at=at(10),
        expires_at=at(41),
        signing_keys=KeySet([public(seed_key(2))]),
    )
    assert again.to_data() == json.loads(vectors["v43-document"])


def test_vector_3_catch_up(vectors: dict[str, str]) -> None:
    """Vector 3 is accepted through its chain by a client that missed vector 2, not without it."""
    document = parse_document(vectors["v44-document"].encode())
    assert accept(document, trust=trust_a(), now=at(25)).bundle.version == 44
    rotation = parse_document(vectors["v43-document"].encode())
    after = accept(rotation, trust=trust_a(), now=at(15))
    assert (
        accept(document, trust=after.trust, current=rotation.bundle, now=at(25)).bundle.version
        == 44
    )
    bare = copy.deepcopy(json.loads(vectors["v44-document"]))
    del bare["chain"]
    with pytest.raises(BundleError) as info:
        accept(parse_document(bare), trust=trust_a(), now=at(25))
    assert info.value.reason == "threshold"
    again = sign_bundle(
        document.bundle.policy_data,
        keys=[seed_key(2)],
        version=44,
        issued_at=at(20),
        expires_at=at(51),
        chain=next_chain(rotation),
    )
    assert isinstance(again, Document)
    assert again.to_data() == json.loads(vectors["v44-document"])
