"""Benchmark: verify + load a signed bundle of 1,000 rules vs. load the same policy from TOML.

Run: ``python bench/bench_bundles.py [--rules 1000] [--repeat 15]``. Prints the median time of
each path in milliseconds and the ratio, measured in the same run on the same policy:

* ``toml``: ``PinPolicy.loads(text)`` — the unsigned policy file (with line numbers kept for
  error messages), and ``tomllib`` + ``policyfile.from_data`` (the same without them);
* ``bundle``: parse the served document (strict JSON), walk the signatures (RFC 8785
  canonical form + Ed25519), and build the policy — everything ``BundleUpdater`` does to a
  fetched body;
* ``store``: ``BundleStore.load`` — read the stored file and re-verify it (what a client does at
  start-up);
* and the parts of ``bundle``: JSON, canonical form, signature check, policy build.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin import PinPolicy, policyfile
from tlspin.bundles import (
    BundleStore,
    KeySet,
    PublicKey,
    TrustState,
    accept,
    canonical_json,
    parse_document,
    sign_bundle,
)
from tlspin.bundles.format import parse_json
from tlspin.bundles.verify import valid_signers


def pin(n: int) -> str:
    return "sha256/" + base64.b64encode(hashlib.sha256(n.to_bytes(4, "big")).digest()).decode()


def policy_toml(rules: int) -> str:
    parts = []
    for i in range(rules):
        parts.append(
            "[[rule]]\n"
            f'hosts = ["h{i}.example.com", "**.cdn{i}.example.net"]\n'
            f'pins = ["{pin(2 * i)}", {{ pin = "{pin(2 * i + 1)}", role = "backup" }}]\n'
            "expires = 2099-01-01\n"
        )
    return "\n".join(parts)


def median_ms(func: Callable[[], Any], repeat: int) -> float:
    start = time.perf_counter()
    func()  # warm caches (host canonicalisation is memoised per process)
    first = (time.perf_counter() - start) * 1000
    if first > 2000:  # too slow to repeat: report the one run
        return first
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    text = policy_toml(args.rules)
    policy = PinPolicy.loads(text)
    key = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
    trust = TrustState(KeySet([PublicKey.from_key(key)]))
    document = sign_bundle(policy, keys=[key], version=1)
    body = document.dumps()
    signed = document.bundle.signed

    with tempfile.TemporaryDirectory() as tmp:
        store = BundleStore(tmp)
        store.save(document)
        results = {
            "toml (unsigned)": median_ms(lambda: PinPolicy.loads(text), args.repeat),
            "toml, no line numbers": median_ms(
                lambda: policyfile.from_data(tomllib.loads(text)), args.repeat
            ),
            "bundle (verify + load)": median_ms(
                lambda: accept(parse_document(body), trust=trust), args.repeat
            ),
            "store load (re-verify)": median_ms(lambda: store.load(trust), args.repeat),
            "  part: strict JSON": median_ms(lambda: parse_json(body), args.repeat),
            "  part: canonical form": median_ms(lambda: canonical_json(signed), args.repeat),
            "  part: Ed25519 check": median_ms(
                lambda: valid_signers(document.bundle, trust.keys), args.repeat
            ),
            "  part: policy build": median_ms(document.bundle.load_policy, args.repeat),
        }
    print(f"{args.rules} rules, {len(body):,} bytes of bundle JSON, {len(text):,} bytes of TOML")
    for name, ms in results.items():
        print(f"{name:<26} {ms:8.2f} ms")
    for base in ("toml (unsigned)", "toml, no line numbers"):
        ratio = results["bundle (verify + load)"] / results[base]
        print(f"ratio bundle / {base:<22} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
