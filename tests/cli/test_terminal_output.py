"""Attacker-controlled text reaches a real terminal literally: no escapes, no markup, no links.

The real CLI runs in a pseudo-terminal, so that click passes escape sequences through and rich
styles its output (the tests check that it does), against a loopback server whose certificate
subject, issuer and SAN hold rich markup, ANSI and OSC sequences, a C1 CSI, a bidi override and
a carriage return; and on a bundle whose notes and hosts hold the same.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlspin.bundles import canonical_json
from tlspin.testing.pki import CA, Leaf
from tlspin.testing.servers import TLSServer

# Each of these would do something to a terminal if printed raw, or to rich if parsed as markup.
MARKUP = "[green]✓ pin OK[/green][link=https://evil.test]x[/link]"
OSC_LINK = "\x1b]8;;https://evil.test\x07L\x1b]8;;\x07"
SGR = "\x1b[5;31m"
C1_CSI = "\x9b2J"
BIDI = "\u202e"
CR = "\rFAKE"
RAW_ATTACKS = [OSC_LINK, SGR, C1_CSI, BIDI]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TLSServer, Leaf, CA, Path]]:
    """A server for localhost whose leaf and root names carry every kind of payload."""
    tmp = tmp_path_factory.mktemp("hostile")
    root = CA.root(f"{OSC_LINK}{SGR}R{C1_CSI}{BIDI}Z{CR}")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, MARKUP),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{SGR}ou{BIDI}{CR}"),
        ]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(f"x{SGR}y.test"),
        ]), critical=False)
        # Key identifiers: Python 3.13's default strict verification requires them.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value,
        ), critical=False)
        .sign(root.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    leaf = Leaf(cert, key)
    cafile = tmp / "root.pem"
    cafile.write_bytes(root.cert_pem)
    (tmp / "leaf.pem").write_bytes(leaf.cert_pem)
    with TLSServer(leaf) as server:
        yield server, leaf, root, tmp


def run_in_terminal(*args: str, cwd: Path | None = None) -> tuple[int, bytes]:
    """Run ``tlspin ARGS`` with stdout and stderr on a pseudo-terminal; return its bytes."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="400", LINES="50")
    for name in ("NO_COLOR", "TERM_PROGRAM"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlspin", *args],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd,
    )
    os.close(slave)
    out = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the child closed the terminal
                    raise
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    return code, bytes(out)


_RICH_SGR = re.compile(rb"\x1b\[[0-9;]*m")


def assert_literal(output: bytes) -> str:
    """Assert no payload acted on the terminal or on rich; return the text for more checks."""
    for payload in RAW_ATTACKS:
        assert payload.encode() not in output, f"raw {payload!r} reached the terminal"
    assert b"\x1b]" not in output, "an OSC sequence (a link, a title…) reached the terminal"
    assert b"\xc2\x9b" not in output, "a C1 CSI reached the terminal"
    assert re.search(rb"\r(?!\n)", output) is None, "a bare carriage return reached the terminal"
    # What remains after tlspin's and rich's own colour codes holds no control byte at all.
    rest = _RICH_SGR.sub(b"", output).replace(b"\r\n", b"\n")
    assert re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", rest) is None, rest
    return rest.decode("utf-8")


def assert_styled(output: bytes) -> None:
    """The terminal was real: rich did emit its own styling, so markup would have been styled."""
    assert _RICH_SGR.search(output), "rich printed no style: the test would prove nothing"


def test_pin_host_shows_a_hostile_chain_literally(
    hostile: tuple[TLSServer, Leaf, CA, Path],
) -> None:
    """`tlspin pin HOST`: subject markup is printed as text, escapes as visible \\x1b…"""
    server, _, _, tmp = hostile
    code, output = run_in_terminal(
        "pin", f"localhost:{server.port}", "--cafile", str(tmp / "root.pem"))
    assert code == 0, output
    assert_styled(output)
    text = assert_literal(output)
    assert MARKUP in text, "the markup must appear as typed, not be interpreted"
    assert "\\x1b[5\\;31m" in text  # RFC 4514 escapes the ';' of the OU
    assert "\\u202e" in text
    assert "\\x9b2J" in text


def test_check_shows_a_hostile_chain_literally(hostile: tuple[TLSServer, Leaf, CA, Path]) -> None:
    """`tlspin check`: the chain table and the verdict line; no green "✓ pin OK" can be forged."""
    server, leaf, root, tmp = hostile
    code, output = run_in_terminal(
        "check", f"localhost:{server.port}", "--cafile", str(tmp / "root.pem"),
        "--pin", leaf.pin, "--pin", root.pin,
    )
    assert code == 0, output
    assert_styled(output)
    text = assert_literal(output)
    assert MARKUP in text
    assert f"PASS localhost:{server.port}" in text
    # The only ✓ on the screen is inside the literal markup text.
    assert text.count("✓") == text.count(MARKUP)


def test_pin_file_shows_a_hostile_subject_literally(
    hostile: tuple[TLSServer, Leaf, CA, Path],
) -> None:
    """`tlspin pin FILE` prints the subject label literally too."""
    code, output = run_in_terminal("pin", str(hostile[3] / "leaf.pem"))
    assert code == 0, output
    text = assert_literal(output)
    assert MARKUP in text
    assert "\\x1b[5\\;31m" in text


def _hostile_bundle(path: Path) -> None:
    """A bundle (never verified by `show`) whose notes, hosts and modes carry the payloads."""
    note = f"{MARKUP} {OSC_LINK}{SGR}{C1_CSI}{BIDI}{CR}\nforged line"
    pin = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    signed = {
        "format": "tlspin-bundle/1",
        "version": 3,
        "issued_at": "2025-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
        "policy": {
            "on_expiry": f"[red]open{SGR}",
            "rule": [{
                "hosts": [f"[bold]api{SGR}.example.com", f"b{BIDI}.example.com"],
                "pins": [pin, {"pin": pin, "role": "backup", "note": note}],
                "deny": [{"pin": pin, "note": f"{OSC_LINK}deny"}],
                "mode": f"enforce{C1_CSI}",
            }],
        },
    }
    canonical_json(signed)  # a well-formed signed object
    path.write_text(json.dumps({"signed": signed, "signatures": []}))


def test_bundle_show_prints_hostile_notes_literally(tmp_path: Path) -> None:
    """`tlspin bundle show`: notes, hosts and options from the bundle are shown as text; a
    newline in a note cannot start a line of its own."""
    _hostile_bundle(tmp_path / "b.json")
    code, output = run_in_terminal("bundle", "show", "b.json", "--diff", "b.json", cwd=tmp_path)
    assert code == 0, output
    text = assert_literal(output)
    assert MARKUP in text
    assert "[red]open\\x1b[5;31m" in text
    assert "\\x0aforged line" in text
    assert not any(line.startswith("forged line") for line in text.splitlines())


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("api.example.com", "api.example.com"),
        ("Ünïcødé 日本 ✓ 🔒 e\u0301", "Ünïcødé 日本 ✓ 🔒 e\u0301"),  # text is left alone
        ("a\x1b[31mb", "a\\x1b[31mb"),
        ("a\rb\nc\td", "a\\x0db\\x0ac\\x09d"),
        ("\x9b\x85\x7f", "\\x9b\\x85\\x7f"),
        ("\u202e\u2066\u200b\ufeff\u2028", "\\u202e\\u2066\\u200b\\ufeff\\u2028"),
    ],
)
def test_clean_escapes_controls_and_leaves_text_alone(raw: str, shown: str) -> None:
    """Control, format and separator characters become visible escapes; letters, marks, symbols
    and emoji of any script are kept as they are."""
    from tlspin.cli._text import clean, clean_lines

    assert clean(raw) == shown
    assert clean_lines("one\n" + raw) == "one\n" + shown.replace("\\x0a", "\n")


# Data outputs (policies, exports, bundles): the text must come back exactly, and reach the
# terminal inert. Every character below would act on a terminal or forge a line if printed raw.
NOTE = (
    f"key {C1_CSI} {BIDI}LIVE-PIN\u202c \u2028forged line\u2029 {SGR}ESC\x7f "
    "\u2066iso\u2069 zw\u200bsp \U000e0041tag e\u0301 日本"
)
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _hostile_policy(directory: Path) -> tuple[Path, str, str]:
    """A JSON policy whose pin note holds NOTE (and whose file name an ESC); its two pins."""
    import os

    a, b = (f"sha256/{__import__('base64').b64encode(os.urandom(32)).decode()}" for _ in "ab")
    path = directory / "p\x1b[31m.json"
    rule = {"hosts": ["api.example.com"], "pins": [{"pin": a, "role": "backup", "note": NOTE}, b],
            "expires": (dt.date.today() + dt.timedelta(days=90)).isoformat()}
    path.write_text(json.dumps({"rule": [rule]}), encoding="utf-8")
    return path, a, b


def _assert_inert(text: str) -> None:
    import unicodedata

    bad = [c for c in text if c not in "\n\r" and unicodedata.category(c) in _UNSAFE]
    assert bad == [], f"raw control or format characters in the output: {bad!r}"


@pytest.mark.parametrize(
    ("args", "fmt"),
    [
        (["import", "--from", "json", "{path}"], "toml"),
        (["import", "--from", "json", "{path}", "--format", "json"], "json"),
        (["export", "--format", "json", "{path}"], "json"),
    ],
    ids=["import-toml", "import-json", "export-json"],
)
def test_policy_output_carries_hostile_notes_inert_and_exact(
    tmp_path: Path, args: list[str], fmt: str
) -> None:
    """`tlspin import` and `tlspin export --format json` printed a note's raw C1 CSI, bidi
    override and U+2028 (and an ESC from the file name into a TOML comment, where TOML allows
    no control character). They are escapes now, and the output reads back to the very same
    note: on a terminal, nothing acts; in a pipe, nothing is lost."""
    from tlspin.policyfile import loads

    path, a, _ = _hostile_policy(tmp_path)
    argv = [arg.replace("{path}", path.name) for arg in args]
    code, output = run_in_terminal(*argv, cwd=tmp_path)
    assert code == 0, output
    assert_literal(output)
    _assert_inert(output.decode("utf-8"))
    piped = subprocess.run([sys.executable, "-m", "tlspin", *argv], cwd=tmp_path,
                           capture_output=True, check=True)
    text = piped.stdout.decode("utf-8")
    _assert_inert(text)
    policy = loads(text, format=fmt)  # type: ignore[arg-type]
    info = policy.rules[0].info(policy.rules[0].pins[0])
    assert info is not None
    assert info.note == NOTE
    assert str(policy.rules[0].pins[0]) == a


def test_bundle_sign_prints_hostile_notes_inert_and_exact(tmp_path: Path) -> None:
    """`tlspin bundle sign --out -` prints the document: its notes are escapes too, and the
    printed document parses to the same note (signatures cover the canonical form)."""
    from tlspin.bundles import parse_document

    path, _, _ = _hostile_policy(tmp_path)
    key = tmp_path / "signing.key"
    assert subprocess.run([sys.executable, "-m", "tlspin", "keygen", "--out", str(key)],
                          capture_output=True, check=False).returncode == 0
    argv = ["bundle", "sign", path.name, "--key", key.name, "--version", "1", "--out", "-"]
    code, output = run_in_terminal(*argv, cwd=tmp_path)
    assert code == 0, output
    assert_literal(output)
    piped = subprocess.run([sys.executable, "-m", "tlspin", *argv], cwd=tmp_path,
                           capture_output=True, check=True)
    _assert_inert(piped.stdout.decode("utf-8"))
    document = parse_document(piped.stdout)
    assert document.bundle.policy_data["rule"][0]["pins"][0]["note"] == NOTE
