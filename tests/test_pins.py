"""Pins: agreement with the openssl CLI for every key type, parsing, formatting, constructors."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from tlspin import CertificatePin, InvalidPinError, Pin, _der, spki_sha256
from tlspin.testing.pki import CA, KeyKind, backup_key

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI is not installed")


def _openssl(*args: str, data: bytes) -> bytes:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args], input=data, capture_output=True, check=True, timeout=30
    ).stdout


def openssl_pin(cert_pem: bytes) -> str:
    """Pin *cert_pem* with ``openssl x509 -pubkey | openssl pkey -pubin -outform DER | dgst``."""
    public_pem = _openssl("x509", "-pubkey", "-noout", data=cert_pem)
    spki_der = _openssl("pkey", "-pubin", "-outform", "DER", data=public_pem)
    digest = _openssl("dgst", "-sha256", "-binary", data=spki_der)
    return _openssl("base64", data=digest).decode().strip()


@pytest.fixture(scope="module")
def issuer() -> CA:
    """A CA for the certificates of this module."""
    return CA.root("tlspin pins root")


KINDS: tuple[KeyKind, ...] = ("rsa2048", "rsa-pss", "ec256", "ec384", "ec521", "ed25519", "ed448")


@needs_openssl
@pytest.mark.parametrize("kind", KINDS)
def test_pin_equals_openssl_cli(issuer: CA, kind: KeyKind) -> None:
    """Pin.from_certificate gives the pin the openssl pipeline prints, for every key type."""
    leaf = issuer.issue("pins.test", key_kind=kind)
    expected = openssl_pin(leaf.cert_pem)
    assert str(Pin.from_certificate(leaf.cert_pem)) == f"sha256/{expected}"
    assert Pin.from_certificate(leaf.cert_der).b64 == expected
    assert Pin.from_certificate(leaf.cert) == Pin.parse(expected)
    assert base64.b64encode(spki_sha256(leaf.cert_der)).decode() == expected


def test_rsa_pss_certificate_has_a_pss_spki(issuer: CA) -> None:
    """The RSA-PSS certificate carries id-RSASSA-PSS; re-encoding it changes the pin."""
    leaf = issuer.issue("pss.test", key_kind="rsa-pss")
    assert bytes.fromhex("06092a864886f70d01010a") in leaf.spki_der
    reencoded = leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert Pin.from_spki(reencoded) != Pin.from_certificate(leaf.cert_der)


@needs_openssl
def test_openssl_generated_rsa_pss(tmp_path: Path) -> None:
    """A key and self-signed certificate made by `openssl genpkey -algorithm RSA-PSS` pin alike."""
    assert OPENSSL is not None
    key_path, cert_path = tmp_path / "pss.key", tmp_path / "pss.pem"
    subprocess.run(
        [
            OPENSSL,
            "genpkey",
            "-algorithm",
            "RSA-PSS",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(key_path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-key",
            str(key_path),
            "-subj",
            "/CN=pss.test",
            "-days",
            "2",
            "-out",
            str(cert_path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    expected = Pin.parse(openssl_pin(cert_pem))
    assert Pin.from_certificate(cert_pem) == expected
    assert Pin.from_private_key(key_pem) == expected
    public_pem = _openssl("pkey", "-pubout", data=key_pem)
    assert Pin.from_public_key(public_pem) == expected


# -- parsing and formatting ------------------------------------------------------------------

DIGEST = hashlib.sha256(b"tlspin").digest()
B64 = base64.b64encode(DIGEST).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"sha256/{B64}",
        f"SHA256/{B64}",
        f'pin-sha256="{B64}"',
        f"pin-sha256={B64}",
        f"sha256//{B64}",
        B64,
        B64.rstrip("="),
        f"  sha256/{B64}\n",
    ],
)
def test_parse_accepts_every_notation(text: str) -> None:
    """OkHttp, HPKP, curl and bare notations parse to the same pin."""
    assert Pin.parse(text) == Pin(DIGEST)


def test_parse_digest_starting_with_slash() -> None:
    """A digest whose base64 starts with '/' parses in OkHttp form despite looking like curl's."""
    digest = base64.b64decode("/" + "A" * 42 + "=")
    pin = Pin(digest)
    assert str(pin).startswith("sha256//")
    assert Pin.parse(str(pin)) == pin
    assert Pin.parse(pin.curl) == pin


def test_formatting() -> None:
    """str, hpkp, curl, digest, hex and repr render the digest in each notation."""
    pin = Pin(DIGEST)
    assert str(pin) == f"sha256/{B64}"
    assert pin.hpkp == f'pin-sha256="{B64}"'
    assert pin.curl == f"sha256//{B64}"
    assert pin.digest == DIGEST
    assert pin.b64 == B64
    assert pin.hex == DIGEST.hex()
    assert repr(pin) == f"Pin('sha256/{B64}')"
    assert pin.matches(DIGEST)
    assert not pin.matches(bytes(32))


SHORT = base64.b64encode(bytes(31)).decode()
SHA1 = base64.b64encode(bytes(20)).decode()
HEX = hashlib.sha256(b"cert").hexdigest()
COLON_HEX = ":".join(HEX[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (f"sha256/{SHORT}", "31 bytes, expected 32"),
        ("sha256/not*base64!", "not base64"),
        (f"sha1/{SHA1}", "SHA-1"),
        (f'pin-sha1="{SHA1}"', "SHA-1"),
        (f"md5/{B64}", "unknown algorithm 'md5'"),
        (f"pin-sha512={B64}", "unknown algorithm 'sha512'"),
        ("", "not base64"),
        ("pin-sha256", "no '='"),
    ],
)
def test_bad_pins_name_the_accepted_forms(text: str, detail: str) -> None:
    """Each malformed pin raises InvalidPinError (a ValueError) listing the accepted forms."""
    with pytest.raises(InvalidPinError) as excinfo:
        Pin.parse(text)
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert detail in message
    assert "sha256/<base64>" in message
    assert 'pin-sha256="<base64>"' in message


@pytest.mark.parametrize("value", [42, None, b"sha256/abc", ["sha256/x"]])
def test_non_string_pin_is_refused(value: object) -> None:
    """Non-string input raises InvalidPinError naming its type and the accepted forms."""
    with pytest.raises(InvalidPinError, match="must be a string") as excinfo:
        Pin.parse(value)  # type: ignore[arg-type]
    assert "sha256/<base64>" in str(excinfo.value)


@pytest.mark.parametrize("text", [HEX, COLON_HEX, f"sha256/{HEX}", f"pin-sha256={HEX}"])
def test_hex_digest_is_explained_both_ways(text: str) -> None:
    """64 hex digits get an error naming both readings: the SPKI pin it would be, and
    CertificatePin for a certificate fingerprint, with how to tell them apart."""
    as_pin = "sha256/" + base64.b64encode(bytes.fromhex(HEX)).decode()
    with pytest.raises(InvalidPinError) as excinfo:
        Pin.parse(text)
    message = str(excinfo.value)
    assert "64 hex digits" in message
    assert f"the pin is {as_pin} " in message
    assert "CertificatePin.parse()" in message
    assert "openssl x509 -noout -fingerprint -sha256" in message
    assert "tlspin pin CERT --form hex" in message
    assert "decodes to" not in message  # the old, misleading "48 bytes" complaint


@needs_openssl
def test_hex_hint_matches_what_openssl_prints(issuer: CA) -> None:
    """The SPKI hash openssl prints in hex leads to the certificate's own pin; the certificate
    fingerprint openssl prints is pointed to CertificatePin, which reads it."""
    leaf = issuer.issue("pins.test")
    public_pem = _openssl("x509", "-pubkey", "-noout", data=leaf.cert_pem)
    spki_der = _openssl("pkey", "-pubin", "-outform", "DER", data=public_pem)
    spki_hex = _openssl("dgst", "-sha256", "-r", data=spki_der).decode().split()[0]
    with pytest.raises(InvalidPinError) as excinfo:
        Pin.parse(spki_hex)
    assert f"the pin is {Pin.from_certificate(leaf.cert_pem)} " in str(excinfo.value)
    printed = _openssl("x509", "-noout", "-fingerprint", "-sha256", data=leaf.cert_pem).decode()
    fingerprint = printed.strip().split("=", 1)[1]
    assert CertificatePin.parse(fingerprint) == CertificatePin.from_certificate(leaf.cert_pem)
    with pytest.raises(InvalidPinError, match=r"CertificatePin\.parse\(\)"):
        Pin.parse(fingerprint)


def test_whole_certificate_fingerprint_is_pointed_elsewhere() -> None:
    """A cert-sha256 value is not an SPKI pin; the message names CertificatePin."""
    with pytest.raises(InvalidPinError, match=r"CertificatePin\.parse"):
        Pin.parse(f"cert-sha256/{HEX}")


def test_raw_digest_must_be_32_bytes() -> None:
    """The Pin constructor takes exactly 32 bytes."""
    with pytest.raises(InvalidPinError, match="32 bytes"):
        Pin(bytes(20))
    assert Pin(bytes(32)).digest == bytes(32)


# -- constructors ------------------------------------------------------------------------------


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_from_certificate_pem_der_object_agree(issuer: CA) -> None:
    """A certificate pins alike from PEM (bytes and str), DER and a cryptography object."""
    leaf = issuer.issue("c.test")
    expected = Pin.from_spki(leaf.spki_der)
    assert Pin.from_certificate(leaf.cert_pem) == expected
    assert Pin.from_certificate(leaf.cert_pem.decode()) == expected
    assert Pin.from_certificate(leaf.cert_der) == expected
    assert Pin.from_certificate(leaf.cert) == expected
    assert Pin.from_certificate(leaf.cert) != Pin.from_certificate(issuer.cert_der)


@pytest.mark.parametrize(
    "make",
    [lambda: ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate],
    ids=["ec256", "ed25519"],
)
def test_from_public_and_private_key(make: object) -> None:
    """Public keys (PEM, DER, object) and private keys (PEM, DER, encrypted) pin alike."""
    key = make()  # type: ignore[operator]
    expected = Pin.from_spki(_spki(key.public_key()))
    public = key.public_key()
    assert Pin.from_public_key(public) == expected
    assert Pin.from_public_key(_spki(public)) == expected
    pub_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert Pin.from_public_key(pub_pem) == expected
    assert Pin.from_public_key(pub_pem.decode()) == expected
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        plain = key.private_bytes(
            encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert Pin.from_private_key(plain) == expected
        secret = key.private_bytes(
            encoding,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
        assert Pin.from_private_key(secret, password=b"s3cret") == expected
        assert Pin.from_private_key(secret, password="s3cret") == expected
        with pytest.raises(InvalidPinError, match="private key"):
            Pin.from_private_key(secret, password=b"wrong")
    assert Pin.from_private_key(key) == expected


def test_from_private_key_traditional_formats() -> None:
    """Traditional 'EC PRIVATE KEY' and 'RSA PRIVATE KEY' PEM pin like their public key."""
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for key in (ec_key, rsa_key):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        assert Pin.from_private_key(pem) == Pin.from_spki(_spki(key.public_key()))
    pkcs1 = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PUBLIC KEY")
    assert Pin.from_public_key(pkcs1) == Pin.from_spki(_spki(rsa_key.public_key()))


def test_rsa_pss_private_key_matches_its_certificate(issuer: CA) -> None:
    """The pin of an RSA-PSS private key (PKCS#8 id-RSASSA-PSS) equals its certificate's pin."""
    leaf = issuer.issue("pss-key.test", key_kind="rsa-pss")
    assert Pin.from_private_key(leaf.key_pem) == Pin.from_certificate(leaf.cert_pem)
    assert Pin.from_private_key(leaf.key_der) == Pin.from_certificate(leaf.cert_der)


def test_from_csr_matches_the_later_certificate(issuer: CA) -> None:
    """A CSR pins like the certificate later issued for the same key (PEM, DER, object)."""
    key, csr = backup_key(names=["backup.test"])
    pem = csr.public_bytes(serialization.Encoding.PEM)
    der = csr.public_bytes(serialization.Encoding.DER)
    cert_pin = Pin.from_certificate(issuer.issue("backup.test", key=key).cert_der)
    assert Pin.from_csr(pem) == cert_pin
    assert Pin.from_csr(der) == cert_pin
    assert Pin.from_csr(csr) == cert_pin
    assert Pin.from_csr(x509.load_der_x509_csr(der)) == cert_pin


@pytest.mark.parametrize(
    ("call", "data"),
    [
        (Pin.from_certificate, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        (Pin.from_certificate, b"\x30\x03\x02\x01\x01"),
        (Pin.from_certificate, b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
        (Pin.from_public_key, b"not a key"),
        (Pin.from_private_key, b"not a key"),
        (Pin.from_csr, b"\x30\x00"),
    ],
)
def test_unreadable_input_raises_invalid_pin_error(call: object, data: bytes) -> None:
    """Garbage, truncated DER or the wrong PEM block raise InvalidPinError, not a crash."""
    with pytest.raises(InvalidPinError):
        call(data)  # type: ignore[operator]


def test_certificate_pin_never_equals_a_pin(issuer: CA) -> None:
    """A whole-certificate fingerprint and an SPKI pin differ even with equal digest bytes."""
    leaf = issuer.issue("fp.test")
    cert_pin = CertificatePin.from_certificate(leaf.cert_der)
    assert cert_pin.digest == hashlib.sha256(leaf.cert_der).digest()
    assert cert_pin != Pin(cert_pin.digest)
    assert Pin(cert_pin.digest) not in {cert_pin}
    assert CertificatePin.parse(cert_pin.hex) == cert_pin
    assert CertificatePin.parse(str(cert_pin)) == cert_pin
    assert str(cert_pin) == f"cert-sha256/{cert_pin.digest.hex()}"
    with pytest.raises(InvalidPinError, match="64 hex digits"):
        CertificatePin.parse("ab:cd")


# -- properties ------------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_round_trip_every_notation(digest: bytes) -> None:
    """Formatting a pin in any notation and parsing it back gives the same pin."""
    pin = Pin(digest)
    for text in (str(pin), pin.hpkp, pin.curl, pin.b64, pin.b64.rstrip("="), f" {pin} "):
        assert Pin.parse(text) == pin


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_invalid_pin(text: str) -> None:
    """Any text yields a Pin or InvalidPinError, never another exception."""
    try:
        pin = Pin.parse(text)
    except InvalidPinError:
        return
    assert len(pin.digest) == 32


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_certificate_parsing(data: bytes) -> None:
    """Attacker-controlled bytes as a certificate raise InvalidPinError or pin a SPKI slice."""
    try:
        Pin.from_certificate(data)
    except InvalidPinError:
        pass


# -- hostile input -------------------------------------------------------------------------------

_BIG_CERT = CA.root("tlspin hostile der").cert_der


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x00",  # an empty outer SEQUENCE once indexed past the end
        b"\x30\x02\x30\x00",  # an empty TBSCertificate
        b"\x30\x80\x30\x00\x00\x00",  # BER indefinite length
        b"\x30\x85\x00\x00\x00\x00\x02\x30\x00",  # a length of more than 4 bytes
        b"\x30\x81\x02\x30\x00",  # a non-minimal length
        b"\x30\x82\x00\x02\x30\x00",  # a non-minimal two-byte length
        b"\x30\x84\xff\xff\xff\xff",  # a length far past the end
        b"\x3f\x01\x00",  # a multi-byte tag
        b"\x02\x01\x00",  # not a SEQUENCE
        _BIG_CERT[:-1],  # truncated
        _BIG_CERT + b"\x00",  # trailing garbage
        _BIG_CERT[:4] + b"\x02\x01\x00" + _BIG_CERT[4:],  # an element overrunning its parent
    ],
)
def test_hostile_der_raises_a_clean_error(data: bytes) -> None:
    """Truncated, indefinite, over-long or padded DER raises DERError/InvalidPinError only."""
    with pytest.raises(_der.DERError):
        _der.spki_from_certificate(data)
    with pytest.raises(InvalidPinError):
        spki_sha256(data)
    with pytest.raises(InvalidPinError):
        Pin.from_certificate(data)


def test_hostile_der_twin_real_certificate_parses() -> None:
    """The untouched certificate of the hostile cases parses to its public key."""
    assert Pin(spki_sha256(_BIG_CERT)) == Pin.from_certificate(_BIG_CERT)


def _tlv(tag: int, body: bytes) -> bytes:
    return _der.encode_tlv(tag, body)


# Nested TLVs shaped like certificates, then truncated, spliced or padded.
_TREES = st.recursive(
    st.builds(_tlv, st.sampled_from([0x02, 0x03, 0x06, 0x05, 0x0C]), st.binary(max_size=6)),
    lambda kids: st.builds(
        lambda tag, items: _tlv(tag, b"".join(items)),
        st.sampled_from([0x30, 0x30, 0x31, 0xA0, 0xA3]),
        st.lists(kids, max_size=8),
    ),
    max_leaves=24,
)


@st.composite
def _hostile_der(draw: st.DrawFn) -> bytes:
    data = draw(_TREES)
    cut = draw(st.integers(0, len(data)))
    return draw(
        st.sampled_from(
            [
                data,
                data[:cut],
                data[:cut] + draw(st.binary(max_size=4)) + data[cut:],
                data + draw(st.binary(min_size=1, max_size=4)),
            ]
        )
    )


@given(_hostile_der())
def test_structured_der_never_crashes(data: bytes) -> None:
    """Certificate-shaped DER, truncated or spliced, yields an SPKI slice or a clean error."""
    try:
        spki = _der.spki_from_certificate(data)
    except _der.DERError:
        with pytest.raises(InvalidPinError):
            spki_sha256(data)
        return
    assert spki[0] == 0x30
    assert spki in data
    assert spki_sha256(data) == hashlib.sha256(spki).digest()


@given(_hostile_der())
def test_structured_der_never_crashes_csr_parsing(data: bytes) -> None:
    """Certificate-request parsing of the same inputs raises InvalidPinError or pins a slice."""
    try:
        Pin.from_csr(data)
    except InvalidPinError:
        pass


@pytest.mark.parametrize(
    "text",
    [
        "sha256/" + "-" * 42 + "A=",  # base64url alphabet
        "sha256/" + "_" * 42 + "A=",
        "sha256/" + "A" * 43 + "===",  # extra padding
        "sha256/" + "A" * 43 + "=\nsha256/" + "B" * 43 + "=",  # two pins on two lines
        "sha256/" + "A" * 22 + " " + "A" * 21 + "=",  # inner whitespace
        "sha256/" + "A" * 43 + "=garbage",  # trailing garbage
        "garbage sha256/" + "A" * 43 + "=",  # leading garbage
        'pin-sha256="' + "A" * 43 + '="; max-age=600',  # a whole HPKP header
    ],
)
def test_malformed_notations_are_refused(text: str) -> None:
    """base64url, bad padding, whitespace and garbage around a pin raise InvalidPinError."""
    with pytest.raises(InvalidPinError, match="accepted forms"):
        Pin.parse(text)


def test_huge_input_gives_a_short_error() -> None:
    """A megabyte of junk is refused with a message that quotes only its start."""
    for junk in ("x" * 1_000_000, "sha256/" + "A" * 1_000_000, "pin-" + "a" * 1_000_000 + "=x"):
        with pytest.raises(InvalidPinError) as excinfo:
            Pin.parse(junk)
        assert len(str(excinfo.value)) < 600
        assert f"({len(junk)} characters)" in str(excinfo.value)
    # Short input is still quoted in full.
    with pytest.raises(InvalidPinError, match="'sha1/abc'"):
        Pin.parse("sha1/abc")
