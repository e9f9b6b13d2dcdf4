"""Verifying bundles: signatures against a threshold of trusted keys, key rotation, freshness.

The rules (docs/bundle-format.md, "Acceptance") in the order they are applied:

1. the document follows the schema (:func:`tlspin.bundles.format.parse_document`);
2. each key-rotation bundle in ``chain`` newer than the keys the client trusts is signed by the
   threshold of the trusted keys *and* the threshold of the keys it introduces; it then replaces
   the trusted keys;
3. the bundle is signed by the threshold of the (possibly rotated) trusted keys, and by the
   threshold of its own ``signing_keys`` if it has any;
4. its version is greater than the version already accepted (same version and same content is
   "unchanged"; same version and other content is refused as equivocation);
5. it has not expired, and ``issued_at`` is not later than now plus the allowed clock skew;
6. its policy is a valid policy, and pins the update host if one is given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tlspin.bundles.errors import BundleError
from tlspin.bundles.format import MAX_CHAIN, Bundle, Document
from tlspin.bundles.keys import KeySet

if TYPE_CHECKING:
    from tlspin.policy import PinPolicy

__all__ = ["DEFAULT_CLOCK_SKEW", "TrustState", "Verified", "accept", "valid_signers", "walk"]

#: How far in the future ``issued_at`` may lie (client clocks drift).
DEFAULT_CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class TrustState:
    """The keys a client accepts now, and the rotations that lead to them.

    Attributes:
        keys: the signing keys and threshold in force.
        version: version of the bundle that named *keys*; 0 for the application's own keys.
        chain: the key-rotation bundles adopted since the application's keys, oldest first.
            Kept so that a stored bundle can be re-verified from the application's keys alone.
    """

    keys: KeySet
    version: int = 0
    chain: tuple[Bundle, ...] = ()

    def chain_before(self, version: int) -> tuple[Bundle, ...]:
        """The rotation bundles older than *version* (what a stored document must carry)."""
        return tuple(b for b in self.chain if b.version < version)


@dataclass(frozen=True, slots=True, eq=False)
class Verified:
    """A bundle that passed every acceptance rule.

    Attributes:
        bundle: the bundle.
        trust: the trust state after it (rotated if it or its chain introduced keys).
        policy: its policy.
        signers: key ids whose valid signatures met the threshold.
        unchanged: True when it is the bundle already accepted (same version, same content).
    """

    bundle: Bundle
    trust: TrustState
    policy: PinPolicy
    signers: frozenset[str]
    unchanged: bool = False

    @property
    def document(self) -> Document:
        """The document to store: the bundle with the full rotation chain before it."""
        return Document(self.bundle, self.trust.chain_before(self.bundle.version))


def valid_signers(bundle: Bundle, keys: KeySet) -> frozenset[str]:
    """Key ids of *keys* with a valid signature on *bundle* (each key counts once)."""
    found = set()
    for signature in bundle.signatures:
        if signature.keyid in found:
            continue
        key = keys.by_id(signature.keyid)
        if key is not None and key.verify(signature.sig, bundle.canonical):
            found.add(signature.keyid)
    return frozenset(found)


def _require(bundle: Bundle, keys: KeySet, what: str, reason: str) -> frozenset[str]:
    signers = valid_signers(bundle, keys)
    if len(signers) < keys.threshold:
        known = {s.keyid for s in bundle.signatures} & keys.keyids
        detail = (
            "no signature is from a trusted key"
            if not known
            else f"{len(signers)} valid signature(s) from trusted keys"
        )
        raise BundleError(
            f"{what} (version {bundle.version}) needs valid signatures from {keys.threshold} of "
            f"the trusted keys {sorted(k[:16] for k in keys.keyids)}; found {detail}",
            reason=reason,
        )
    return signers


def _rotate(state: TrustState, bundle: Bundle, what: str) -> TrustState:
    assert bundle.signing_keys is not None
    _require(bundle, state.keys, what, "threshold")
    # The new keys must sign too: it proves their holders have them, so a typo in a key list
    # cannot lock every client out of future updates.
    _require(bundle, bundle.signing_keys, f"{what}, by the keys it introduces,", "rotation")
    if len(state.chain) >= MAX_CHAIN:
        raise BundleError(
            f"more than {MAX_CHAIN} key rotations since the application's keys; ship the current "
            "keys as trusted_keys in a new application release",
            reason="chain",
        )
    return TrustState(bundle.signing_keys, bundle.version, (*state.chain, bundle))


def walk(document: Document, trust: TrustState) -> tuple[frozenset[str], TrustState]:
    """Check signatures along the document's rotation chain and on its bundle.

    Rotation bundles not newer than ``trust.version`` are skipped: the client knows them.

    Returns:
        The key ids that signed the bundle, and the trust state after it.

    Raises:
        BundleError: ``threshold`` (too few valid trusted signatures) or ``rotation``.
    """
    state = trust
    for index, entry in enumerate(document.chain):
        if entry.version <= state.version:
            continue
        state = _rotate(state, entry, f"key rotation chain[{index}]")
    bundle = document.bundle
    if bundle.version <= state.version:
        raise BundleError(
            f"the bundle (version {bundle.version}) is not newer than the signing keys in force "
            f"(named by version {state.version})",
            reason="rollback",
        )
    signers = _require(bundle, state.keys, "the bundle", "threshold")
    if bundle.signing_keys is not None:
        state = _rotate(state, bundle, "the bundle")
    return signers, state


def accept(
    document: Document,
    *,
    trust: TrustState,
    current: Bundle | None = None,
    min_version: int = 0,
    now: dt.datetime | None = None,
    clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
    check_times: bool = True,
    pinned_host: str | None = None,
) -> Verified:
    """Apply every acceptance rule to *document*.

    Args:
        document: the parsed document.
        trust: keys in force (the application's keys, or those a stored chain led to).
        current: the bundle accepted before, if any (rollback and equivocation checks).
        min_version: versions up to this one are refused, even without *current*.
        now: the time to check against (default: the system clock).
        clock_skew: how far in the future ``issued_at`` may lie.
        check_times: False skips the expiry and issue-time checks (re-reading a stored
            bundle, whose expiry the caller handles itself).
        pinned_host: if given, the policy must pin this host with an enforced rule.

    Raises:
        BundleError: the first rule that fails, with its ``reason``.
    """
    bundle = document.bundle
    if current is not None and bundle.version <= current.version:
        # Checked before the signatures: whatever they say, an old version is never taken.
        if bundle.version == current.version:
            if bundle.canonical == current.canonical:
                signers = valid_signers(bundle, trust.keys)
                return Verified(bundle, trust, bundle.load_policy(), signers, unchanged=True)
            raise BundleError(
                f"version {bundle.version} is already accepted with other content; a new "
                "bundle needs a new version (refused as equivocation)",
                reason="equivocation",
            )
        raise BundleError(
            f"version {bundle.version} is older than the accepted version {current.version} "
            "(refused as a rollback or replay)",
            reason="rollback",
        )
    signers, state = walk(document, trust)
    if bundle.version <= min_version:
        raise BundleError(
            f"version {bundle.version} is not above the minimum version {min_version} "
            "(refused as a rollback or replay)",
            reason="rollback",
        )
    if check_times:
        when = now or dt.datetime.now(dt.UTC)
        if when >= bundle.expires_at:
            raise BundleError(
                f"the bundle (version {bundle.version}) expired at {bundle.signed['expires_at']}",
                reason="expired",
            )
        if bundle.issued_at > when + clock_skew:
            raise BundleError(
                f"the bundle (version {bundle.version}) claims to be issued at "
                f"{bundle.signed['issued_at']}, later than now plus {clock_skew} of clock skew",
                reason="future",
            )
    policy = bundle.load_policy()
    if pinned_host is not None:
        require_pinned(policy, pinned_host)
    return Verified(bundle, state, policy, signers)


def require_pinned(policy: PinPolicy, host: str) -> None:
    """Refuse a policy without an enforced rule for *host* (the update channel must stay pinned).

    Raises:
        BundleError: ``reason="unpinned-update-host"``.
    """
    rules: Sequence[object] = [r for r in policy.rules_for(host) if r.mode == "enforce"]
    if not rules:
        raise BundleError(
            f"the policy has no enforced rule for the update host {host}; accepting it would "
            "leave the next update unpinned",
            reason="unpinned-update-host",
        )
