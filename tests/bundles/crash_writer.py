"""Helper process for the crash-safety test (not a test module).

Reads ``fork`` lines on stdin. For each, it forks a child that saves ever newer bundles into the
store, forever, and prints the child's pid; the test SIGKILLs the child at a random moment, and
this process reaps it and prints ``reaped``. Each child continues from the newest version in the
store, as a real client does. Forking from one warm process keeps the 200+ kills fast: no
interpreter start-up or imports per kill.

Arguments: the store directory, a template bundle document, the signing key's seed byte.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.bundles import (
    BundleStore,
    Document,
    KeySet,
    PublicKey,
    TrustState,
    canonical_json,
    parse_document,
)


def signed_version(template: Document, key: Ed25519PrivateKey, version: int) -> Document:
    """The template's bundle as *version*, signed by *key*."""
    signed: dict[str, Any] = dict(template.bundle.signed)
    signed["version"] = version
    sig = base64.b64encode(key.sign(canonical_json(signed))).decode()
    keyid = PublicKey.from_key(key).keyid
    return parse_document({"signed": signed, "signatures": [{"keyid": keyid, "sig": sig}]})


def main() -> None:
    store = BundleStore(sys.argv[1])
    template = parse_document(Path(sys.argv[2]).read_bytes())
    key = Ed25519PrivateKey.from_private_bytes(bytes([int(sys.argv[3])]) * 32)
    trust = TrustState(KeySet([PublicKey.from_key(key)]))
    for line in sys.stdin:
        if line.strip() != "fork":
            break
        pid = os.fork()
        if pid == 0:
            try:
                loaded = store.load(trust).loaded
                previous = loaded.verified.document if loaded is not None else None
                version = previous.bundle.version if previous is not None else 0
                while True:
                    version += 1
                    document = signed_version(template, key, version)
                    store.save(document, previous=previous)
                    previous = document
            finally:
                os._exit(1)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os.waitpid(pid, 0)
        sys.stdout.write("reaped\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
