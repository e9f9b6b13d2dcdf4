"""The bundle conformance vectors (tests/vectors/bundles): the runner, and the writer of the files.

Every verifier (this one, clients/java) runs each vector the same way, :func:`evaluate`:

1. trust the vector's ``trusted_keys`` with its ``threshold`` (a trust state at version 0);
2. if the vector has a ``stored`` document (what the client accepted earlier), accept it from
   that trust state without time checks, as a client re-reading its store does: its bundle
   becomes the accepted one and its rotation chain moves the trust state;
3. parse ``document`` with the size cap ``max_bytes`` and apply the acceptance rules (§8) with
   ``now``, ``clock_skew`` (seconds), ``min_version`` and ``update_host``.

The result is ``{"verdict": "refused", "reason": …}`` or, for ``accepted`` and ``unchanged``,
the version, the SHA-256 of the canonical ``signed`` bytes, the key ids that signed, the trust
state afterwards, the policy as ``tlspin.policyfile.to_data`` writes it, and the OkHttp
``CertificatePinner`` entries for that policy on the day of ``now`` (enforced rules in force,
SPKI pins, patterns as ``tlspin export --format okhttp-java`` writes them for OkHttp 3 and 4).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlspin import policyfile
from tlspin.bundles import BundleError, KeySet, TrustState, accept, parse_document
from tlspin.bundles.format import parse_json, parse_time
from tlspin.formats import ExportOptions, export
from tlspin.pins import Pin
from tlspin.policy import PinPolicy

VECTORS = Path(__file__).parents[1] / "vectors" / "bundles"
MANIFEST = "vectors.json"
FORMAT = "tlspin-bundle-vectors/1"
_ADD = re.compile(r'^\s*(?:pins)?\.add\("([^"]+)",\s*$')
_PIN_LINE = re.compile(r'^\s*"((?:sha256|sha1)/[^"]+)"')


def load_manifest(root: Path = VECTORS) -> dict[str, Any]:
    """The manifest of the vector directory."""
    manifest: dict[str, Any] = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == FORMAT
    return manifest


def okhttp_entries(policy: PinPolicy, today: dt.date, version: int) -> list[list[Any]]:
    """``[pattern, [pins]]`` in the order a client adds them to a ``CertificatePinner``.

    Only enforced rules that are in force on *today* (an expired rule pins nothing unless the
    policy says ``on_expiry = "enforce"``, as Android's Network Security Config), and only their
    SPKI pins: deny pins, report-only rules and whole-certificate pins are the interceptor's.
    """
    rules = [
        rule
        for rule in policy.rules
        if rule.mode == "enforce"
        and not (policy.on_expiry == "fail-open" and rule.expired(today))
        and any(isinstance(pin, Pin) for pin in rule.pins)
    ]
    if not rules:
        return []
    options = ExportOptions(force=True, okhttp_version=version, today=today)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = export(policy.with_rules(rules), "okhttp-java", options).text
    entries: list[list[Any]] = []
    for line in text.splitlines():
        add = _ADD.match(line)
        if add is not None:
            entries.append([add.group(1), []])
        elif (pin := _PIN_LINE.match(line)) is not None:
            entries[-1][1].append(pin.group(1))
    return entries


def evaluate(vector: Mapping[str, Any], root: Path = VECTORS) -> dict[str, Any]:
    """Run one vector with the Python verifier; the result as the manifest's ``expect``."""
    host = vector["update_host"]
    try:
        trust = TrustState(KeySet(vector["trusted_keys"], vector["threshold"]))
    except BundleError as exc:
        return {"verdict": "refused", "reason": exc.reason}  # keys no client may trust: "key"
    current = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-pin rules warn; verdicts do not depend on it
        if vector.get("stored") is not None:
            stored = parse_document((root / vector["stored"]).read_bytes())
            kept = accept(stored, trust=trust, check_times=False, pinned_host=host)
            trust, current = kept.trust, kept.bundle
        now = parse_time(vector["now"], "now")
        try:
            document = parse_document(
                (root / vector["document"]).read_bytes(), max_bytes=vector["max_bytes"]
            )
            verified = accept(
                document,
                trust=trust,
                current=current,
                min_version=vector["min_version"],
                now=now,
                clock_skew=dt.timedelta(seconds=vector["clock_skew"]),
                pinned_host=host,
            )
        except BundleError as exc:
            return {"verdict": "refused", "reason": exc.reason}
    keys = verified.trust.keys
    return {
        "verdict": "unchanged" if verified.unchanged else "accepted",
        "version": verified.bundle.version,
        "canonical_sha256": hashlib.sha256(verified.bundle.canonical).hexdigest(),
        "signers": sorted(verified.signers),
        "trust": {
            "keys": [key.b64 for key in keys.keys],
            "threshold": keys.threshold,
            "version": verified.trust.version,
        },
        "policy": policyfile.to_data(verified.policy, dates_as_strings=True),
        "okhttp": {
            str(version): okhttp_entries(verified.policy, now.date(), version) for version in (3, 4)
        },
    }


def canonical_result(data: bytes) -> dict[str, Any]:
    """Strict parse then RFC 8785 form of one ``canonical`` input."""
    from tlspin.bundles import canonical_json

    try:
        return {"canonical": canonical_json(parse_json(data)).decode("utf-8")}
    except BundleError as exc:
        return {"reason": exc.reason}


def build(out: Path) -> None:
    """Write every vector into *out* (documents/, canonical/ and the manifest)."""
    from bundles.vector_cases import Cases

    cases = Cases()
    for sub in ("documents", "canonical"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).iterdir():
            old.unlink()
    for name, data in {**cases.documents, **cases.canonical_inputs}.items():
        (out / name).write_bytes(data)
    vectors = []
    wrong = []
    for vector in cases.vectors:
        result = evaluate(vector, out)
        want = vector.pop("want")
        got = result.get("reason", result["verdict"])
        if got != want:
            wrong.append(f"{vector['name']}: meant to give {want}, the Python verifier gives {got}")
        vectors.append({**vector, "expect": result})
    if wrong:
        raise AssertionError("\n".join(wrong))
    canonical = []
    for item in cases.canonical:
        canonical.append({**item, "expect": canonical_result((out / item["input"]).read_bytes())})
    manifest = {
        "format": FORMAT,
        "about": (
            "Conformance vectors for tlspin-bundle/1 (docs/bundle-format.md). Written by "
            "tests/vectors/bundles/generate.py; run by tests/bundles/test_bundle_vectors.py "
            "and clients/java. See README.md here."
        ),
        "keys": cases.key_table(),
        "vectors": vectors,
        "canonical": canonical,
    }
    (out / MANIFEST).write_text(_one_per_line(manifest), encoding="utf-8")


def _one_per_line(manifest: dict[str, Any]) -> str:
    """The manifest with each vector on a line of its own: readable diffs, modest size."""
    lines = ["{"]
    for index, (key, value) in enumerate(manifest.items()):
        end = "," if index < len(manifest) - 1 else ""
        if isinstance(value, list):
            items = [json.dumps(item, ensure_ascii=False) for item in value]
            lines.append(f" {json.dumps(key)}: [")
            lines.extend(
                f"  {item}{',' if n < len(items) - 1 else ''}" for n, item in enumerate(items)
            )
            lines.append(f" ]{end}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"
