"""Throwaway certificate authorities, leaves and TLS contexts for tests.

Everything here is in memory and made with `cryptography`; nothing is cached globally, so tests
stay independent of their order. EC P-256 keys are the default because they are generated in
well under a millisecond; RSA keys are made only when a test asks for them.

Key kinds (`KeyKind`): ``"ec256"`` (default), ``"ec384"``, ``"ec521"``, ``"rsa2048"``,
``"rsa-pss"``, ``"ed25519"`` and ``"ed448"``.

About ``"rsa-pss"``: `cryptography` always encodes an RSA public key as *rsaEncryption*, but a
pinning toolkit must be tested against certificates whose SubjectPublicKeyInfo carries the
*id-RSASSA-PSS* algorithm (OID 1.2.840.113549.1.1.10), because re-encoding such an SPKI changes
its pin. For that kind we let `cryptography` build and sign the certificate, then swap the SPKI's
AlgorithmIdentifier for id-RSASSA-PSS with absent parameters (the encoding ``openssl req
-newkey rsa-pss`` produces) and sign the edited TBSCertificate again with the issuer's key. The
private key gets the same treatment in its PKCS#8 wrapper, so OpenSSL loads it as an RSA-PSS key
that matches the certificate. A CA of that kind also signs with RSASSA-PSS.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlspin.testing._certs import (
    KEY_KINDS,
    KeyKind,
    Moment,
    PrivateKey,
    ca_builder,
    general_names,
    generate_key,
    hash_for,
    is_pss_spki,
    key_and_kind,
    kind_of,
    leaf_key_usage,
    pem,
    pkcs8_der,
    san_strings,
    sign_builder,
    spki_der_of,
    spki_pin,
    validity,
    x509_name,
)

__all__ = [
    "CA",
    "KEY_KINDS",
    "KeyKind",
    "Leaf",
    "Moment",
    "PrivateKey",
    "backup_key",
    "client_trust_context",
    "generate_key",
    "server_context",
    "spki_der_of",
    "spki_pin",
]


def backup_key(
    kind: KeyKind = "ec256", *, names: Sequence[str] = (), common_name: str = "tlspin backup key"
) -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    """Make a backup key that has no certificate yet, and a CSR for it.

    Args:
        kind: key kind; ``"rsa-pss"`` is refused because a CSR would carry an rsaEncryption
            SPKI whose pin differs from the certificate a CA would later issue.
        names: DNS names or IP addresses to request as subjectAltName.
        common_name: subject CN of the request.
    """
    if kind == "rsa-pss":
        msg = "expected a key kind other than 'rsa-pss' for a CSR; found 'rsa-pss'"
        raise ValueError(msg)
    key = generate_key(kind)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509_name(common_name))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(general_names(names)), critical=False
        )
    return key, builder.sign(key, hash_for(kind))


class _Certified:
    """A certificate and its private key: what a `Leaf` and a `CA` have in common."""

    __slots__ = ("_cert", "_key")

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self._cert = cert
        self._key = key

    @property
    def cert(self) -> x509.Certificate:
        """The certificate."""
        return self._cert

    @property
    def key(self) -> PrivateKey:
        """The certificate's private key."""
        return self._key

    @property
    def cert_der(self) -> bytes:
        """The certificate as DER."""
        return self._cert.public_bytes(serialization.Encoding.DER)

    @property
    def cert_pem(self) -> bytes:
        """The certificate as PEM."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def spki_der(self) -> bytes:
        """The SubjectPublicKeyInfo exactly as encoded in the certificate."""
        return spki_der_of(self.cert_der)

    @property
    def pin(self) -> str:
        """``sha256/<base64>`` SPKI pin of the certificate (independent of tlspin's own code)."""
        return spki_pin(self.cert_der)


class Leaf(_Certified):
    """An end-entity certificate, its private key and the chain a server sends.

    Usually made by `CA.issue` or `CA.reissue`; build one directly (or use
    `with_intermediates`) to serve an unusual chain, e.g. one carrying a cross-signed CA.
    """

    __slots__ = ("_chain", "_pss")

    def __init__(
        self,
        cert: x509.Certificate,
        key: PrivateKey,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> None:
        """Pair *cert* with its *key*; *intermediates* follow the leaf in the served chain."""
        super().__init__(cert, key)
        self._chain = (cert, *intermediates)
        self._pss = is_pss_spki(spki_der_of(cert))

    def __repr__(self) -> str:
        return f"<Leaf {self.cert.subject.rfc4514_string()} names={list(self.names)}>"

    @property
    def chain(self) -> list[x509.Certificate]:
        """Leaf first, then intermediates; the root is not included."""
        return list(self._chain)

    @property
    def names(self) -> tuple[str, ...]:
        """DNS names and IP addresses from the subjectAltName, in order."""
        return san_strings(self._cert)

    @property
    def key_der(self) -> bytes:
        """Unencrypted PKCS#8 DER of the private key (id-RSASSA-PSS wrapper for PSS leaves)."""
        return pkcs8_der(self._key, pss=self._pss)

    @property
    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM of the private key."""
        return pem("PRIVATE KEY", self.key_der)

    @property
    def chain_der(self) -> list[bytes]:
        """DER of every certificate in `chain`."""
        return [c.public_bytes(serialization.Encoding.DER) for c in self._chain]

    @property
    def chain_pem(self) -> bytes:
        """Leaf and intermediates as concatenated PEM, leaf first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self._chain)

    def with_intermediates(self, intermediates: Sequence[x509.Certificate]) -> Leaf:
        """Return the same certificate and key served with *intermediates* instead."""
        return Leaf(self._cert, self._key, intermediates)

    def write(self, directory: str | os.PathLike[str], *, name: str = "leaf") -> tuple[Path, Path]:
        """Write ``<name>-chain.pem`` and ``<name>-key.pem`` (mode 0600) into *directory*.

        Returns:
            ``(chain_path, key_path)``.
        """
        base = Path(directory)
        chain_path = base / f"{name}-chain.pem"
        key_path = base / f"{name}-key.pem"
        chain_path.write_bytes(self.chain_pem)
        from tlspin._shared.policyio import atomic_write

        # A private temporary file renamed into place: 0600 from the start, even over an
        # existing 0644 file, and never written through a symbolic link.
        atomic_write(key_path, self.key_pem, mode=0o600)
        return chain_path, key_path


class CA(_Certified):
    """A test certificate authority (root or intermediate).

    Build a root with `CA.root`, children with `intermediate`, and leaves with `issue`.
    """

    __slots__ = ("_kind", "_parent")

    def __init__(
        self, cert: x509.Certificate, key: PrivateKey, kind: KeyKind, parent: CA | None
    ) -> None:
        super().__init__(cert, key)
        self._kind: KeyKind = kind
        self._parent = parent

    def __repr__(self) -> str:
        return f"<CA {self._cert.subject.rfc4514_string()}>"

    @classmethod
    def root(
        cls,
        common_name: str = "tlspin test root",
        *,
        key: PrivateKey | None = None,
        key_kind: KeyKind | None = None,
        not_before: Moment | None = None,
        not_after: Moment | None = None,
        path_length: int | None = None,
    ) -> CA:
        """Create a self-signed root CA (valid for ten years unless told otherwise).

        Args:
            common_name: subject CN.
            key: use this key instead of generating one.
            key_kind: kind of key to generate (default ``"ec256"``); with *key* given, only
                ``"rsa-pss"`` matters (it turns an RSA key into an id-RSASSA-PSS SPKI).
            not_before: start of validity (datetime, or timedelta from now).
            not_after: end of validity (datetime, or timedelta from now).
            path_length: BasicConstraints pathLenConstraint.
        """
        key, kind = key_and_kind(key, key_kind)
        subject = x509_name(common_name)
        builder = ca_builder(
            subject,
            subject,
            key,
            path_length=path_length,
            not_before=not_before,
            not_after=not_after,
            default_days=3650,
        )
        return cls(sign_builder(builder, key, kind, kind), key, kind, None)

    @property
    def kind(self) -> KeyKind:
        """The kind of this CA's key."""
        return self._kind

    @property
    def parent(self) -> CA | None:
        """The issuing CA, or None for a root."""
        return self._parent

    @property
    def root_ca(self) -> CA:
        """The root at the top of this CA's hierarchy (itself for a root)."""
        return self if self._parent is None else self._parent.root_ca

    @property
    def chain(self) -> list[x509.Certificate]:
        """This CA and its parents up to, but excluding, the root (``[]`` for a root)."""
        if self._parent is None:
            return []
        return [self._cert, *self._parent.chain]

    def write(self, directory: str | os.PathLike[str], *, name: str = "ca") -> Path:
        """Write this CA's certificate as ``<name>.pem`` into *directory* and return the path."""
        path = Path(directory) / f"{name}.pem"
        path.write_bytes(self.cert_pem)
        return path

    def intermediate(
        self,
        common_name: str,
        *,
        key: PrivateKey | None = None,
        key_kind: KeyKind | None = None,
        path_length: int | None = None,
        not_before: Moment | None = None,
        not_after: Moment | None = None,
    ) -> CA:
        """Create an intermediate CA signed by this CA (arguments as for `CA.root`)."""
        self._check_may_issue_ca()
        key, kind = key_and_kind(key, key_kind)
        builder = ca_builder(
            x509_name(common_name),
            self._cert.subject,
            key,
            path_length=path_length,
            not_before=not_before,
            not_after=not_after,
            default_days=1825,
        ).add_extension(self._aki(), critical=False)
        return CA(sign_builder(builder, self._key, self._kind, kind), key, kind, self)

    def issue(
        self,
        *names: str,
        key: PrivateKey | None = None,
        key_kind: KeyKind | None = None,
        not_before: Moment | None = None,
        not_after: Moment | None = None,
        common_name: str | None = None,
    ) -> Leaf:
        """Issue a server leaf certificate.

        Args:
            names: DNS names (``"localhost"``, ``"*.example.test"``, IDNs) or IP address
                strings (``"127.0.0.1"``, ``"::1"``); at least one.
            key: certify this key instead of generating one (e.g. a `backup_key`).
            key_kind: kind of key to generate (default ``"ec256"``).
            not_before: start of validity (default: an hour ago).
            not_after: end of validity (default: 90 days from now).
            common_name: subject CN (default: the first name).

        Raises:
            ValueError: when no name is given.
        """
        if not names:
            msg = "expected at least one DNS name or IP address for the leaf; found none"
            raise ValueError(msg)
        key, kind = key_and_kind(key, key_kind)
        cn = common_name if common_name is not None else names[0]
        start, end = validity(not_before, not_after, 90)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509_name(cn))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(leaf_key_usage(kind), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(general_names(names)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(self._aki(), critical=False)
        )
        return Leaf(sign_builder(builder, self._key, self._kind, kind), key, self.chain)

    def reissue(
        self,
        leaf: Leaf,
        *,
        same_key: bool = True,
        not_before: Moment | None = None,
        not_after: Moment | None = None,
    ) -> Leaf:
        """Issue a new certificate (new serial) for *leaf*'s names, from this CA.

        Args:
            leaf: the leaf whose names and common name are copied.
            same_key: keep the leaf's key (pins survive) or generate a new one of the same kind.
            not_before: start of validity of the new certificate.
            not_after: end of validity of the new certificate.
        """
        kind = kind_of(leaf.key, pss=is_pss_spki(leaf.spki_der))
        cns = leaf.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return self.issue(
            *leaf.names,
            key=leaf.key if same_key else generate_key(kind),
            key_kind=kind,
            not_before=not_before,
            not_after=not_after,
            common_name=str(cns[0].value) if cns else None,
        )

    def cross_sign(self, other: CA) -> x509.Certificate:
        """Return a certificate with *other*'s subject and public key, issued by this CA."""
        self._check_may_issue_ca()
        constraints = other.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        builder = ca_builder(
            other.cert.subject,
            self._cert.subject,
            other.key,
            path_length=constraints.path_length,
            not_before=None,
            not_after=None,
            default_days=1825,
        ).add_extension(self._aki(), critical=False)
        return sign_builder(builder, self._key, self._kind, other.kind)

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _check_may_issue_ca(self) -> None:
        constraints = self._cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.path_length == 0:
            raise ValueError(f"expected a CA allowed to issue CAs; {self!r} has path length 0")


def server_context(
    source: Leaf | tuple[Sequence[x509.Certificate], PrivateKey],
    *,
    alpn: Sequence[str] | None = ("http/1.1",),
    maximum_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """Build a server-side context (TLS 1.2 or newer) serving a chain and key.

    Args:
        source: a `Leaf`, or ``(chain, key)`` with the chain leaf first.
        alpn: protocols to offer for ALPN, most preferred first; None or empty disables ALPN.
        maximum_version: cap the TLS version (e.g. ``ssl.TLSVersion.TLSv1_2``).
    """
    if not isinstance(source, Leaf):
        chain, key = source
        if not chain:
            msg = "expected a chain with at least the leaf certificate; found none"
            raise ValueError(msg)
        source = Leaf(chain[0], key, chain[1:])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    # The stdlib loads keys only from files; a private temporary directory is removed at once.
    with tempfile.TemporaryDirectory(prefix="tlspin-") as tmp:
        cert_path, key_path = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(source.chain_pem)
        key_path.write_bytes(source.key_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def client_trust_context(
    *cas: CA | x509.Certificate, alpn: Sequence[str] | None = None
) -> ssl.SSLContext:
    """Build a plain stdlib client context that trusts exactly *cas* (no pinning).

    The context verifies certificates and hostnames (CERT_REQUIRED, check_hostname) and never
    loads the system trust store; with no CA at all it trusts nothing.
    """
    pems = [
        ca.cert_pem if isinstance(ca, CA) else ca.public_bytes(serialization.Encoding.PEM)
        for ca in cas
    ]
    if pems:
        ctx = ssl.create_default_context(cadata=b"".join(pems).decode("ascii"))
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
