"""The world the documentation's examples assume: keys, certificates and the user's own files.

The docs talk about `api.example.com`, a policy in `pins.toml`, a CA file `ca.pem`, a program
`client.py`… The harness makes each of them exist for real, on loopback: the certificates of
the servers it starts (`servers.py`) and the files it puts into every document's session
directory before the first block runs (`World.write_files`). The keys whose pins the docs print
are committed under keys/ (test-only, see keys/README.md), so those pins are the servers' real
pins; everything else is made afresh each run, with dates relative to today.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlspin.pins import Pin
from tlspin.testing.pki import CA, Leaf, PrivateKey

KEYS = Path(__file__).with_name("keys")

# Names the examples reach; in a block's processes each resolves to 127.0.0.1 (or ::1).
NAMES = ("api.example.com", "pins.example.com", "reports.example.com", "ct.example.net")
# What the harness's HTTPS server answers for a name that has no route of its own.
API_BODY = b"hello from api.example.com\n"


@cache
def key(name: str) -> PrivateKey:
    """A committed test key (keys/<name>.pem)."""
    loaded = serialization.load_pem_private_key((KEYS / f"{name}.pem").read_bytes(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)  # the committed keys are EC P-256
    return loaded


def pin(name: str) -> str:
    """The ``sha256/…`` pin of a committed test key."""
    return str(Pin.from_private_key((KEYS / f"{name}.pem").read_bytes()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class World:
    """The certificate authorities and leaves of one harness run."""

    root: CA
    issuing: CA
    leaf: Leaf  # served by every loopback server: api.example.com and its neighbours
    rotated: Leaf  # the backup key certified: the "new chain" of a planned rotation
    inspection: CA  # "Corporate Inspection CA", trusted by the client and not pinned
    forged: Leaf  # what that CA issues for api.example.com

    @classmethod
    def build(cls) -> World:
        """Make the authorities and leaves (the committed keys, fresh certificates)."""
        root = CA.root("tlspin docs root CA")
        issuing = root.intermediate("tlspin docs issuing CA", key=key("issuing-ca"))
        names = (*NAMES, "*.cdn.example.com", "localhost", "127.0.0.1", "::1")
        leaf = issuing.issue(*names, key=key("api-leaf"), common_name="api.example.com")
        rotated = issuing.issue(*names, key=key("api-backup"), common_name="api.example.com")
        inspection, forged = _inspection_proxy()
        return cls(root, issuing, leaf, rotated, inspection, forged)

    def policy_text(self) -> str:
        """The user's policy (pins.toml): the three hosts, leaf + intermediate + backup pins."""
        expires = dt.date.today() + dt.timedelta(days=180)
        backup = f'pin = "{pin("api-backup")}", role = "backup", note = "offline key in safe 3"'
        return (
            "# The policy the documentation's examples use (written by tests/docs/world.py).\n"
            "[[rule]]\n"
            'hosts = ["api.example.com", "pins.example.com", "reports.example.com"]\n'
            "pins = [\n"
            f'  {{ pin = "{pin("api-leaf")}", role = "leaf", note = "CN=api.example.com" }},\n'
            f'  {{ pin = "{pin("issuing-ca")}", role = "intermediate" }},\n'
            f"  {{ {backup} }},\n"
            "]\n"
            f"expires = {expires.isoformat()}\n"
        )

    def files(self) -> dict[str, bytes]:
        """The files every session directory starts with, by name."""
        policy = self.policy_text().encode()
        backup = key("api-backup")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.example.com")]))
            .sign(backup, hashes.SHA256())
        )
        return {
            "pins.toml": policy,
            "policy.toml": policy,
            "ca.pem": _pem(self.root.cert),
            "dev-ca.pem": _pem(self.root.cert),
            "chain.pem": self.leaf.chain_pem,
            "key.pem": backup.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "req.csr": csr.public_bytes(serialization.Encoding.PEM),
            "new-chain.pem": self.rotated.chain_pem,
            "edges.toml": (
                b'[[endpoint]]\nhost = "api.example.com"\nport = 443\n'
                b'ips = ["192.0.2.10", "2001:db8::10"]\n'
            ),
            "client.py": CLIENT,
            "app.py": APP,
            "old-bundle.json": self._old_bundle(),
            "passphrase.txt": secrets.token_urlsafe(24).encode() + b"\n",
        }

    def write_files(self, directory: Path) -> None:
        """Write `files` into *directory* (private files with mode 0600)."""
        for name, data in self.files().items():
            path = directory / name
            path.write_bytes(data)
            if name in ("key.pem", "passphrase.txt"):
                path.chmod(0o600)

    def _old_bundle(self) -> bytes:
        """The bundle published before (version 6, a retired pin, a throwaway signing key)."""
        from tlspin.bundles.sign import sign_bundle

        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        policy = {"rule": [{
            "hosts": ["api.example.com", "pins.example.com", "reports.example.com"],
            "pins": [pin("forged-leaf"), pin("api-leaf")],
        }]}
        document = sign_bundle(
            policy, keys=[ed25519.Ed25519PrivateKey.generate()], version=6,
            issued_at=now - dt.timedelta(days=10), expires_at=now + dt.timedelta(days=20),
        )
        return document.dumps()


def _inspection_proxy() -> tuple[CA, Leaf]:
    """A corporate inspection CA and the leaf it forges for api.example.com.

    Made by hand rather than with tlspin.testing.pki, whose names all carry O=tlspin testing:
    the README's failure example shows the subjects as such a proxy would.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key, leaf_key = key("inspection-ca"), key("forged-leaf")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corporate Inspection CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.example.com")]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CA(ca_cert, ca_key, "ec256", None), Leaf(leaf_cert, leaf_key)


CLIENT = b'''\
"""A program under audit: it fetches https://api.example.com/ pinned with pins.toml."""

import sys
import urllib.request

import tlspin

context = tlspin.create_context(tlspin.PinPolicy.load("pins.toml"))
try:
    with urllib.request.urlopen("https://api.example.com/", context=context, timeout=10) as r:
        print(r.read().decode().strip())
except OSError as exc:
    sys.exit(f"client.py: {exc}")
'''

APP = b'''\
"""A program that knows nothing of tlspin: it fetches https://api.example.com/ with urllib."""

import sys
import urllib.request

try:
    with urllib.request.urlopen("https://api.example.com/", timeout=10) as r:
        print(r.read().decode().strip())
except OSError as exc:
    sys.exit(f"app.py: {exc}")
'''
