"""Signed pin bundles: pins that change without an application release, and cannot be forged.

A bundle is a JSON document holding a policy (in the policy-file schema), a version that only
grows, an issue and an expiry time, and optionally the next set of signing keys. Ed25519 keys
sign its RFC 8785 canonical form; clients trust a set of keys and a threshold. The format is
specified in docs/bundle-format.md so that other platforms can verify bundles too.

* :func:`sign_bundle` makes one (the ``tlspin bundle sign`` command wraps it);
* :func:`parse_document` and :func:`accept` check one against the acceptance rules;
* :class:`BundleStore` keeps the accepted bundle on disk, written atomically;
* :class:`BundleUpdater` fetches bundles over a pinned connection and is the
  :class:`tlspin.PolicySource` that pinned contexts read at every handshake.
"""

from __future__ import annotations

from tlspin.bundles.errors import REASONS, BundleError, BundleWarning
from tlspin.bundles.format import (
    DEFAULT_MAX_BYTES,
    FORMAT,
    Bundle,
    Document,
    Signature,
    canonical_json,
    parse_document,
)
from tlspin.bundles.keys import (
    KeySet,
    PublicKey,
    generate_private_key,
    load_private_key,
    write_private_key,
)
from tlspin.bundles.sign import next_chain, sign_bundle
from tlspin.bundles.store import BundleStore
from tlspin.bundles.updater import BundleEvent, BundleUpdater, RefreshResult
from tlspin.bundles.verify import TrustState, Verified, accept

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "REASONS",
    "Bundle",
    "BundleError",
    "BundleEvent",
    "BundleStore",
    "BundleUpdater",
    "BundleWarning",
    "Document",
    "KeySet",
    "PublicKey",
    "RefreshResult",
    "Signature",
    "TrustState",
    "Verified",
    "accept",
    "canonical_json",
    "generate_private_key",
    "load_private_key",
    "next_chain",
    "parse_document",
    "sign_bundle",
    "write_private_key",
]
