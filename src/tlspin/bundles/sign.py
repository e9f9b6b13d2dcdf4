"""Signing bundles: build the ``signed`` object, sign its canonical form with Ed25519 keys."""

from __future__ import annotations

import base64
import datetime as dt
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.bundles.errors import BundleError
from tlspin.bundles.format import (
    FORMAT,
    Bundle,
    Document,
    canonical_json,
    format_time,
    parse_envelope,
)
from tlspin.bundles.keys import KeySet, PublicKey
from tlspin.policy import PinPolicy

__all__ = ["declared_keys", "next_chain", "parse_duration", "sign_bundle"]

_DURATION = re.compile(r"^\s*([0-9]{1,9})\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> dt.timedelta:
    """Read ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``.

    Raises:
        ValueError: any other form.
    """
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30d, 12h or 2w, found {text!r}")
    try:
        return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"expected a duration of at most 999999999 days, found {text!r}") from None


def sign_bundle(
    policy: PinPolicy | Mapping[str, Any],
    *,
    keys: Sequence[Ed25519PrivateKey],
    version: int,
    expires_at: dt.datetime | None = None,
    lifetime: dt.timedelta | None = None,
    issued_at: dt.datetime | None = None,
    signing_keys: KeySet | None = None,
    chain: Sequence[Bundle] = (),
) -> Document:
    """Make a signed bundle document.

    Args:
        policy: the rules (a policy, or data in the policy-file schema).
        keys: private keys that sign; each signs once.
        version: the bundle version; must exceed every version clients accepted before.
        expires_at: when clients stop using it; or give *lifetime* instead.
        lifetime: time from *issued_at* to expiry (default 30 days).
        issued_at: signing time (default now), truncated to whole seconds.
        signing_keys: hand signing over to these keys (rotation); *keys* must then include
            the threshold of them as well as the threshold of the keys clients trust now.
        chain: the earlier key-rotation bundles clients may not have seen (see
            :func:`next_chain`).

    Raises:
        BundleError: inconsistent arguments, or a rotation the given keys cannot sign.
    """
    from tlspin import policyfile
    from tlspin.exceptions import PinConfigurationError

    if not keys:
        msg = "expected at least one signing key, found none"
        raise BundleError(msg, reason="key")
    if isinstance(policy, PinPolicy):
        policy_data = policyfile.to_data(policy, dates_as_strings=True)
        # A rule's ports tell tlspin's tools where to connect; clients pin by host name and the
        # bundle format (docs/bundle-format.md §9) has no such key, so they stay out of it.
        for rule in policy_data["rule"]:
            rule.pop("ports", None)
    else:
        policy_data = dict(policy)
    try:
        # The public-suffix guard runs here, at signing, with this machine's list: verifiers
        # check pattern syntax only, so that no Public Suffix List version decides a verdict.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load_policy() below warns once
            policyfile.from_data(policy_data)
    except PinConfigurationError as exc:
        raise BundleError(f"refusing to sign this policy: {exc}", reason="policy") from None
    issued = (issued_at or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    if expires_at is None:
        expires_at = issued + (lifetime or dt.timedelta(days=30))
    signed: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "issued_at": format_time(issued),
        "expires_at": format_time(expires_at),
        "policy": policy_data,
    }
    if signing_keys is not None:
        signed["signing_keys"] = {
            "keys": [k.b64 for k in signing_keys.keys],
            "threshold": signing_keys.threshold,
        }
    message = canonical_json(signed)
    signatures = []
    seen = set()
    for key in keys:
        public = PublicKey.from_key(key)
        if public.keyid in seen:
            continue
        seen.add(public.keyid)
        sig = base64.b64encode(key.sign(message)).decode("ascii")
        signatures.append({"keyid": public.keyid, "sig": sig})
    bundle = parse_envelope({"signed": signed, "signatures": signatures})
    if signing_keys is not None:
        have = seen & signing_keys.keyids
        if len(have) < signing_keys.threshold:
            raise BundleError(
                f"a bundle that introduces signing keys must be signed by {signing_keys.threshold} "
                f"of them too; the given keys include {len(have)}",
                reason="rotation",
            )
    for entry in chain:
        if entry.version >= version:
            raise BundleError(
                f"chain bundle version {entry.version} is not older than version {version}",
                reason="chain",
            )
    # Round-trip through the parser so a signer never emits what verifiers would refuse.
    bundle.load_policy()
    return Document(bundle, tuple(chain))


def next_chain(previous: Document) -> tuple[Bundle, ...]:
    """The chain a bundle that follows *previous* carries: its chain, plus it if it rotated keys."""
    if previous.bundle.signing_keys is not None:
        return (*previous.chain, previous.bundle)
    return previous.chain


def declared_keys(document: Document) -> KeySet | None:
    """The signing keys the document's latest rotation named (None: no rotation in it)."""
    for bundle in (document.bundle, *reversed(document.chain)):
        if bundle.signing_keys is not None:
            return bundle.signing_keys
    return None
