"""Acceptance rules and signing-key rotation, checked on parsed documents."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.bundles import (
    BundleError,
    Document,
    KeySet,
    TrustState,
    accept,
    next_chain,
    parse_document,
)
from tlspin.bundles.sign import sign_bundle

from .conftest import Pki, make, public, raw_sign


def trust(*keys: Ed25519PrivateKey, threshold: int = 1) -> TrustState:
    """The trust state of an application that ships *keys*."""
    return TrustState(KeySet([public(k) for k in keys], threshold))


def test_accepts_bundle_signed_by_trusted_key(pki: Pki, key_a: Ed25519PrivateKey) -> None:
    """A bundle signed by the trusted key is accepted and yields its policy."""
    verified = accept(make(pki.policy(), [key_a], 1), trust=trust(key_a))
    assert verified.policy == pki.policy()
    assert verified.signers == {public(key_a).keyid}


def test_refuses_bundle_signed_by_untrusted_key(
    pki: Pki, key_a: Ed25519PrivateKey, key_evil: Ed25519PrivateKey
) -> None:
    """The twin: the same bundle signed by another key is refused."""
    with pytest.raises(BundleError) as info:
        accept(make(pki.policy(), [key_evil], 1), trust=trust(key_a))
    assert info.value.reason == "threshold"


def test_threshold_counts_distinct_valid_signatures(
    pki: Pki, key_a: Ed25519PrivateKey, key_b: Ed25519PrivateKey
) -> None:
    """Two of two keys must sign; one key signing twice does not count twice."""
    both = trust(key_a, key_b, threshold=2)
    accept(make(pki.policy(), [key_a, key_b], 1), trust=both)
    single = make(pki.policy(), [key_a], 1)
    doubled = Document(dataclasses.replace(single.bundle, signatures=single.bundle.signatures * 2))
    for document in (single, doubled):
        with pytest.raises(BundleError) as info:
            accept(document, trust=both)
        assert info.value.reason == "threshold"


def test_rollback_equivocation_and_replay(pki: Pki, key_a: Ed25519PrivateKey) -> None:
    """Older versions and same-version-other-content are refused; the same bundle is 'unchanged'."""
    v2 = make(pki.policy(), [key_a], 2)
    v1 = make(pki.policy(), [key_a], 1)
    other_v2 = make(pki.policy([pki.api_new.pin]), [key_a], 2)
    current = v2.bundle
    with pytest.raises(BundleError) as info:
        accept(v1, trust=trust(key_a), current=current)
    assert info.value.reason == "rollback"
    with pytest.raises(BundleError) as info:
        accept(other_v2, trust=trust(key_a), current=current)
    assert info.value.reason == "equivocation"
    assert accept(v2, trust=trust(key_a), current=current).unchanged
    assert not accept(make(pki.policy(), [key_a], 3), trust=trust(key_a), current=current).unchanged
    with pytest.raises(BundleError) as info:
        accept(v2, trust=trust(key_a), min_version=2)
    assert info.value.reason == "rollback"


def test_expiry_and_future_issue_time(pki: Pki, key_a: Ed25519PrivateKey) -> None:
    """Expired bundles and bundles issued beyond the clock skew are refused; within skew pass."""
    now = dt.datetime.now(dt.UTC)
    expired = make(
        pki.policy(),
        [key_a],
        1,
        issued_at=now - dt.timedelta(days=2),
        lifetime=dt.timedelta(days=1),
    )
    future = make(pki.policy(), [key_a], 1, issued_at=now + dt.timedelta(hours=1))
    slightly = make(pki.policy(), [key_a], 1, issued_at=now + dt.timedelta(minutes=2))
    for document, reason in ((expired, "expired"), (future, "future")):
        with pytest.raises(BundleError) as info:
            accept(document, trust=trust(key_a))
        assert info.value.reason == reason
    accept(slightly, trust=trust(key_a))


def test_rotation_hands_over_and_retires(
    pki: Pki, key_a: Ed25519PrivateKey, key_b: Ed25519PrivateKey
) -> None:
    """A rotation signed by old and new keys moves trust; then the old key alone is refused."""
    rotation = make(pki.policy(), [key_a, key_b], 2, signing_keys=KeySet([public(key_b)]))
    after = accept(rotation, trust=trust(key_a)).trust
    assert after.keys.keyids == {public(key_b).keyid}
    assert after.version == 2
    accept(make(pki.policy(), [key_b], 3), trust=after, current=rotation.bundle)
    with pytest.raises(BundleError) as info:
        accept(make(pki.policy(), [key_a], 3), trust=after, current=rotation.bundle)
    assert info.value.reason == "threshold"


def test_rotation_must_be_signed_by_new_keys(
    pki: Pki, key_a: Ed25519PrivateKey, key_b: Ed25519PrivateKey
) -> None:
    """Naming keys that did not sign is refused: a typo must not lock clients out."""
    with pytest.raises(BundleError) as info:
        sign_bundle(pki.policy(), keys=[key_a], version=2, signing_keys=KeySet([public(key_b)]))
    assert info.value.reason == "rotation"
    signed = dict(
        make(pki.policy(), [key_a], 2, signing_keys=KeySet([public(key_a)])).bundle.signed
    )
    signed["signing_keys"] = {"keys": [public(key_b).b64], "threshold": 1}
    with pytest.raises(BundleError) as info:
        accept(parse_document(raw_sign(signed, [key_a])), trust=trust(key_a))
    assert info.value.reason == "rotation"


def test_adding_keys_without_current_signature_is_refused(
    pki: Pki, key_a: Ed25519PrivateKey, key_evil: Ed25519PrivateKey
) -> None:
    """An attacker cannot introduce its key, neither in the bundle nor through the chain."""
    own = make(pki.policy(), [key_evil], 2, signing_keys=KeySet([public(key_evil)]))
    via_chain = make(pki.policy(), [key_evil], 3, chain=[own.bundle])
    for document in (own, via_chain):
        with pytest.raises(BundleError) as info:
            accept(document, trust=trust(key_a))
        assert info.value.reason == "threshold"


def test_chain_lets_a_client_catch_up(
    pki: Pki, key_a: Ed25519PrivateKey, key_b: Ed25519PrivateKey
) -> None:
    """A client that missed the rotation accepts the newer bundle through its chain, not without."""
    rotation = make(pki.policy(), [key_a, key_b], 2, signing_keys=KeySet([public(key_b)]))
    later = make(pki.policy(), [key_b], 5, chain=next_chain(rotation))
    verified = accept(later, trust=trust(key_a))
    assert verified.trust.keys.keyids == {public(key_b).keyid}
    assert [b.version for b in verified.document.chain] == [2]
    bare = make(pki.policy(), [key_b], 5)
    with pytest.raises(BundleError) as info:
        accept(bare, trust=trust(key_a))
    assert info.value.reason == "threshold"


def test_retiring_a_compromised_key(
    pki: Pki, key_a: Ed25519PrivateKey, key_b: Ed25519PrivateKey, key_evil: Ed25519PrivateKey
) -> None:
    """With keys {A, X} trusted, a rotation to {A, B} retires X: X alone is refused after it."""
    start = trust(key_a, key_evil)
    accept(make(pki.policy(), [key_evil], 2), trust=start)  # before: X alone is enough
    retire = make(pki.policy(), [key_a], 2, signing_keys=KeySet([public(key_a), public(key_b)]))
    after = accept(retire, trust=start).trust
    with pytest.raises(BundleError) as info:
        accept(make(pki.policy(), [key_evil], 3), trust=after, current=retire.bundle)
    assert info.value.reason == "threshold"
    accept(make(pki.policy(), [key_b], 3), trust=after, current=retire.bundle)


def test_update_host_must_stay_pinned(pki: Pki, key_a: Ed25519PrivateKey) -> None:
    """A policy that drops the update host's rule is refused when the host is given."""
    unpinned = make(pki.policy(pin_update_host=False), [key_a], 1)
    with pytest.raises(BundleError) as info:
        accept(unpinned, trust=trust(key_a), pinned_host="127.0.0.1")
    assert info.value.reason == "unpinned-update-host"
    accept(make(pki.policy(), [key_a], 1), trust=trust(key_a), pinned_host="127.0.0.1")
