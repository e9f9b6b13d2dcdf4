"""Certificate names against rule patterns, and crt.sh-style exports (``--from-file``)."""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner

from tlspin.cli import main
from tlspin.ct import Frontier, check_records, merkle_root, name_covered, read_export
from tlspin.pins import Pin
from tlspin.policy import PinRule

from .conftest import mth

PINS = ["sha256/" + "A" * 43 + "=", "sha256/" + "B" * 43 + "="]


@pytest.mark.parametrize(
    ("name", "pattern", "covered"),
    [
        ("api.example.com", "api.example.com", True),
        ("API.Example.COM.", "api.example.com", True),
        ("www.example.com", "api.example.com", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("*.example.com", "*.example.com", True),
        ("*.example.com", "*.other.com", False),
        ("*.example.com", "**.example.com", True),
        ("*.b.example.com", "**.example.com", True),
        ("*.example.com", "**.api.example.com", True),
        ("*.example.com", "**.a.b.example.com", False),
        ("*.a.example.com", "*.example.com", False),
        ("x.a.example.com", "*.example.com", False),
        ("a.example.com", "*.example.com", True),
        ("deep.a.example.com", "**.example.com", True),
        ("not a host!", "**.example.com", False),
    ],
)
def test_certificate_name_against_pattern(name: str, pattern: str, covered: bool) -> None:
    """A certificate name (wildcards included) falls under a pattern when they share a host."""
    assert name_covered(name, PinRule([pattern], PINS)) is covered


def test_include_subdomains_widens_exact_patterns() -> None:
    """With include_subdomains an exact pattern covers wildcard names below it."""
    rule = PinRule(["example.com"], PINS, include_subdomains=True)
    assert name_covered("*.x.example.com", rule)
    assert not name_covered("*.example.org", rule)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31])
def test_frontier_matches_recursive_merkle_hash(size: int) -> None:
    """The resumable frontier computes the RFC 6962 root for any tree size, across a restore."""
    leaves = [bytes([i]) * (i + 1) for i in range(size)]
    half = Frontier()
    for leaf in leaves[: size // 2]:
        half.append(leaf)
    restored = Frontier.from_data(json.loads(json.dumps(half.to_data())))
    for leaf in leaves[size // 2 :]:
        restored.append(leaf)
    assert restored.root() == mth(leaves) == merkle_root(leaves)


def test_damaged_frontier_refused() -> None:
    """A frontier whose subtrees do not fit its size is refused."""
    with pytest.raises(ValueError, match="heights"):
        Frontier.from_data({"size": 3, "nodes": [[0, "00" * 32]]})


def export_file(tmp_path, records: list[dict[str, object]]):
    """Write an export as crt.sh would (a JSON list)."""
    path = tmp_path / "crtsh.json"
    path.write_text(json.dumps(records))
    return path


def crtsh(ident: int, names: str, **extra: object) -> dict[str, object]:
    """One crt.sh JSON record (its real field set) plus enrichment fields."""
    return {
        "issuer_ca_id": 1, "issuer_name": "C=US, O=Example CA, CN=Issuing 1",
        "common_name": names.split("\n", maxsplit=1)[0], "name_value": names, "id": ident,
        "entry_timestamp": "2026-01-02T03:04:05.678", "not_before": "2026-01-02T00:00:00",
        "not_after": "2026-04-02T00:00:00", "serial_number": "0abc", **extra,
    }


def test_export_with_keys_flags_only_unpinned(ct_pki, tmp_path) -> None:
    """Export records with Cert Spotter key hashes or a PEM body are checked like log entries."""
    policy_rule = PinRule(["api.example.test"], [ct_pki.pinned_int.pin, ct_pki.backup.pin])
    from tlspin.policy import PinPolicy

    policy = PinPolicy([policy_rule])
    pinned_hex = Pin.parse(ct_pki.pinned_int.pin).hex
    rogue = ct_pki.rogue_int.issue("api.example.test")
    known = ct_pki.pinned_int.issue("api.example.test")
    path = export_file(tmp_path, [
        crtsh(1, "api.example.test", pubkey_sha256="11" * 32, issuer_pubkey_sha256=pinned_hex),
        crtsh(2, "api.example.test\nwww.example.test", pubkey_sha256="22" * 32,
              issuer={"name": "CN=Other", "pubkey_sha256": "33" * 32}),
        crtsh(3, "api.example.test"),
        crtsh(4, "unrelated.example.org", pubkey_sha256="44" * 32),
        crtsh(5, "ignored", pem=(rogue.cert_pem + ct_pki.rogue_int.cert_pem).decode()),
        crtsh(6, "ignored", cert=base64.b64encode(known.cert_der).decode(),
              issuer_pubkey_sha256=ct_pki.pinned_int.pin),
        crtsh(7, "api.example.test", pubkey_sha256="not-hex"),
    ])
    records, malformed = read_export(path)
    report = check_records(policy, records, source=str(path))
    verdicts = {f.record.index: f.verdict for f in report.findings}
    assert verdicts == {2: "unpinned-key", 3: "unchecked", 5: "unpinned-key"}
    assert [position for position, _ in malformed] == [6]
    assert records[4].names == ("api.example.test",)  # read from the certificate itself


def test_from_file_cli(ct_pki, tmp_path) -> None:
    """``ct check --from-file`` exits 1 with flagged records and 0 with only known keys."""
    policy = tmp_path / "pins.toml"
    policy.write_text(
        '[[rule]]\nhosts = ["**.example.test"]\n'
        f'pins = ["{ct_pki.pinned_int.pin}", "{ct_pki.backup.pin}"]\n'
    )
    pinned_hex = Pin.parse(ct_pki.pinned_int.pin).hex
    clean = export_file(tmp_path, [crtsh(1, "a.example.test", pubkey_sha256="11" * 32,
                                         issuer_pubkey_sha256=pinned_hex)])
    runner = CliRunner()
    ok = runner.invoke(main, ["ct", "check", str(policy), "--from-file", str(clean)])
    dirty_path = tmp_path / "dirty.json"
    dirty_path.write_text(json.dumps([crtsh(2, "*.example.test", pubkey_sha256="22" * 32)]))
    flagged = runner.invoke(main, ["ct", "check", str(policy), "--from-file", str(dirty_path),
                                   "--json"])
    not_json = tmp_path / "bad.json"
    not_json.write_text("{")
    bad = runner.invoke(main, ["ct", "check", str(policy), "--from-file", str(not_json)])
    assert ok.exit_code == 0, ok.output
    assert flagged.exit_code == 1, flagged.output
    assert json.loads(flagged.stdout)["findings"][0]["names"] == ["*.example.test"]
    assert bad.exit_code == 64, bad.output
    assert "not JSON" in bad.stderr


def test_truncated_and_random_entries_raise_only_entry_errors(ct_pki, log) -> None:
    """Every truncation of real entries, and random bytes, give CTEntryError and nothing else."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tlspin.ct import CTEntryError, parse_entry

    from .conftest import der as to_der
    from .conftest import make_precert

    leaf = ct_pki.rogue_int.issue("api.example.test")
    log.add_x509(leaf.cert_der, [to_der(ct_pki.rogue_int.cert)])
    pre, tbs, _ = make_precert(ct_pki.rogue_int, "p.example.test")
    log.add_precert(tbs, ct_pki.rogue_int.spki_der, pre, [ct_pki.rogue_int.cert_der])
    for leaf_input, extra in zip(log.leaves, log.extra, strict=True):
        parse_entry(leaf_input, extra)  # the whole entry parses
        for cut in range(0, len(leaf_input), 7):
            with pytest.raises(CTEntryError):
                parse_entry(leaf_input[:cut], extra)
        for cut in range(0, len(extra), 97):
            with pytest.raises(CTEntryError):
                parse_entry(leaf_input, extra[:cut] if cut else b"\x00")

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300), st.binary(max_size=64))
    def random_input(data: bytes, extra: bytes) -> None:
        try:
            parse_entry(b"\x00\x00" + data, extra)
        except CTEntryError:
            pass

    random_input()
