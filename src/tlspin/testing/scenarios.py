"""The pinning scenarios a client must survive (or refuse), as plain functions.

A `ServerPKI` is the certificate world of one test: the server's own root and intermediate,
its current leaf, an offline backup key, and an *attacker* CA. The trust bundle `ServerPKI.cafile`
holds the server's root **and** the attacker's root on purpose: pinning exists for the day a CA
that your client trusts issues a certificate it should not (a compromised public CA, a
corporate or malware root installed on the device). Without pins, a client that trusts that
bundle accepts the attacker; with pins it must refuse.

The scenario functions change what a running `tlspin.testing.servers.TLSServer` serves:

* `rotate_leaf` — the server renews its certificate, keeping its key or not;
* `rotate_to_backup` — the server moves to the backup key that the policy already pins;
* `rogue_ca_issues` — the attacker's (trusted) CA issues a certificate for the host;
* `expire_policy` — a copy of a policy whose rules are past their ``expires`` date.

The pytest plugin (`tlspin.testing.plugin`) wraps each of them in a fixture.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import serialization

from tlspin.testing.pki import CA, Leaf, backup_key

if TYPE_CHECKING:
    from cryptography import x509

    from tlspin.policy import Mode, Observer, OnExpiry, PinPolicy
    from tlspin.testing.pki import KeyKind, PrivateKey
    from tlspin.testing.servers import TLSServer

__all__ = [
    "DEFAULT_NAMES",
    "ServerPKI",
    "expire_policy",
    "rogue_ca_issues",
    "rotate_leaf",
    "rotate_to_backup",
]

#: The names the default leaf is valid for: the loopback server is reachable under each.
DEFAULT_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

Level = Literal["leaf", "intermediate", "root"]


def _key_pin(key: PrivateKey) -> str:
    # Computed with cryptography rather than tlspin, so tests never grade tlspin with itself.
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


class ServerPKI:
    """The certificates of one test: the server's CA chain, its leaf, a backup key, an attacker.

    Attributes:
        root: the server's root CA.
        intermediate: the intermediate that issues the server's leaves.
        leaf: the leaf the server presents now (the scenario functions replace it).
        names: DNS names and IP addresses of the leaf.
        backup_key: a private key with no certificate yet, kept "offline" for rotation.
        backup_csr: a certificate signing request for `backup_key`.
        attacker: a root CA that the client trusts (it is in `cafile`) but that no policy pins.
        cafile: PEM trust bundle holding `root` and `attacker`; hand it to the client under test.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        names: Sequence[str] = DEFAULT_NAMES,
        key_kind: KeyKind = "ec256",
    ) -> None:
        """Create the CAs, a leaf for *names* and a backup key; write `cafile` into *directory*.

        Args:
            directory: where to write the trust bundle (e.g. pytest's ``tmp_path``).
            names: names and addresses of the leaf; at least one.
            key_kind: key kind for every key made here (``"ec256"`` is the fast default).
        """
        if not names:
            msg = "expected at least one name for the server's leaf; found none"
            raise ValueError(msg)
        self.names: tuple[str, ...] = tuple(names)
        self.root = CA.root("tlspin test root", key_kind=key_kind)
        self.intermediate = self.root.intermediate("tlspin test intermediate", key_kind=key_kind)
        self.leaf: Leaf = self.intermediate.issue(*self.names, key_kind=key_kind)
        self.backup_key: PrivateKey
        self.backup_csr: x509.CertificateSigningRequest
        self.backup_key, self.backup_csr = backup_key(key_kind, names=self.names)
        self.attacker = CA.root("tlspin attacker CA (trusted, never pinned)", key_kind=key_kind)
        self.directory = Path(directory)
        bundle = self.directory / "tlspin-trust-bundle.pem"
        bundle.write_bytes(self.root.cert_pem + self.attacker.cert_pem)
        # A str, because that is what every client's cafile/verify argument accepts.
        self.cafile: str = str(bundle)

    def __repr__(self) -> str:
        return f"<ServerPKI names={list(self.names)} leaf_pin={self.leaf_pin}>"

    @property
    def leaf_pin(self) -> str:
        """``sha256/…`` pin of the current leaf's key."""
        return self.leaf.pin

    @property
    def intermediate_pin(self) -> str:
        """``sha256/…`` pin of the intermediate CA's key."""
        return self.intermediate.pin

    @property
    def root_pin(self) -> str:
        """``sha256/…`` pin of the root CA's key."""
        return self.root.pin

    @property
    def backup_pin(self) -> str:
        """``sha256/…`` pin of the backup key (no certificate carries it yet)."""
        return _key_pin(self.backup_key)

    @property
    def cadata(self) -> str:
        """The trust bundle as PEM text (for ``cadata=`` arguments)."""
        return Path(self.cafile).read_text("ascii")

    def pins(self, *, level: Level = "leaf") -> list[str]:
        """The recommended pin set: the key at *level* plus the backup key."""
        pin = {"leaf": self.leaf_pin, "intermediate": self.intermediate_pin, "root": self.root_pin}
        if level not in pin:
            raise ValueError(f"expected level 'leaf', 'intermediate' or 'root'; found {level!r}")
        return [pin[level], self.backup_pin]

    def policy(
        self,
        *hosts: str,
        level: Level = "leaf",
        mode: Mode = "enforce",
        expires: dt.date | str | None = None,
        on_expiry: OnExpiry = "fail-open",
        observers: Iterable[Observer] = (),
    ) -> PinPolicy:
        """A policy pinning *hosts* (default: every name of the leaf) to `pins` (*level*).

        Args:
            hosts: host patterns to pin; default `names`.
            level: which key of the chain to pin, besides the backup key.
            mode: ``"enforce"`` or ``"report"``.
            expires: the rule's expiry date.
            on_expiry: what the policy does once the rule expired.
            observers: callables that receive every violation.
        """
        from tlspin.policy import PinPolicy, PinRule

        rule = PinRule(hosts or self.names, self.pins(level=level), mode=mode, expires=expires)
        return PinPolicy([rule], on_expiry=on_expiry, observers=observers)

    def issue(self, *names: str, **options: object) -> Leaf:
        """Issue another leaf from the server's intermediate (options as `CA.issue`)."""
        return self.intermediate.issue(*(names or self.names), **options)  # type: ignore[arg-type]


def rotate_leaf(pki: ServerPKI, server: TLSServer | None = None, *, same_key: bool = True) -> Leaf:
    """Renew the server's certificate from the same intermediate and serve it.

    With ``same_key=True`` every SPKI pin still matches (a routine renewal); with
    ``same_key=False`` only intermediate, root or backup pins can still match.

    Returns:
        The new leaf, which is also `ServerPKI.leaf` from now on.
    """
    leaf = pki.intermediate.reissue(pki.leaf, same_key=same_key)
    _serve(pki, server, leaf)
    return leaf


def rotate_to_backup(pki: ServerPKI, server: TLSServer | None = None) -> Leaf:
    """Certify the backup key (as the CA would, from its CSR) and serve it.

    A client pinned with `ServerPKI.pins` keeps working: that is what the backup pin is for.
    """
    leaf = pki.intermediate.issue(*pki.names, key=pki.backup_key)
    _serve(pki, server, leaf)
    return leaf


def rogue_ca_issues(
    pki: ServerPKI, server: TLSServer | None = None, host: str | None = None
) -> Leaf:
    """Have the attacker's trusted CA issue a certificate for *host* and serve it.

    CA and hostname verification accept that certificate (the attacker's root is in
    `ServerPKI.cafile`); only pinning can refuse it.

    Args:
        pki: the test's certificates.
        server: the server to switch to the rogue certificate (None: only issue it).
        host: the name to forge (default: every name of the current leaf).
    """
    leaf = pki.attacker.issue(*((host,) if host else pki.names))
    if server is not None:
        server.set_leaf(leaf)
    return leaf


def expire_policy(
    policy: PinPolicy,
    *,
    expired_on: dt.date | None = None,
    on_expiry: OnExpiry | None = None,
) -> PinPolicy:
    """Return a copy of *policy* whose every rule expired on *expired_on* (default: yesterday).

    Args:
        policy: the policy to copy; its observers are kept.
        expired_on: the new ``expires`` date of every rule; it must be in the past.
        on_expiry: override the policy's ``on_expiry`` (``"fail-open"`` or ``"enforce"``).
    """
    from tlspin.policy import PinPolicy, PinRule

    today = dt.datetime.now(dt.UTC).date()
    date = expired_on if expired_on is not None else today - dt.timedelta(days=1)
    if date >= today:
        raise ValueError(f"expected an expiry date before today ({today}); found {date}")
    with warnings.catch_warnings():
        # Rebuilding a single-pin rule repeats the warning its author already saw.
        warnings.simplefilter("ignore")
        rules = [
            PinRule(
                rule.hosts,
                rule.pins,
                include_subdomains=rule.include_subdomains,
                expires=date,
                mode=rule.mode,
                deny=rule.deny,
                report_uri=rule.report_uri,
                pin_info=rule.pin_info,
                ports=rule.ports,
            )
            for rule in policy.rules
        ]
    return PinPolicy(
        rules, on_expiry=on_expiry or policy.on_expiry, observers=policy.observers
    )


def _serve(pki: ServerPKI, server: TLSServer | None, leaf: Leaf) -> None:
    pki.leaf = leaf
    if server is not None:
        server.set_leaf(leaf)
