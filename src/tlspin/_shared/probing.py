"""What the two live TLS probes share: the verifying context, chain extraction, the result shape.

`tlspin._shared.probe` (blocking, for the CLI) and `tlspin.monitor.probe` (asyncio, for the monitor)
differ only in how they connect; both read a connection's chains the same way and answer with
the same fields.
"""

from __future__ import annotations

import _ssl
import ssl
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["ProbeOutcome", "peer_chains", "verify_reason", "verifying_context"]

_DER: int = _ssl.ENCODING_DER

TargetT = TypeVar("TargetT")
KindT = TypeVar("KindT", bound=str)


@dataclass(frozen=True, slots=True)
class ProbeOutcome(Generic[TargetT, KindT]):
    """The outcome of one probe.

    Attributes:
        target: what was probed.
        verified_chain: the chain OpenSSL built to a trusted root (DER, leaf first); empty
            when the handshake failed.
        served_chain: the certificates as the server sent them (may be empty).
        error: a one-line description of the failure, or None.
        error_kind: what kind of failure; None on success.
        tls_version: the negotiated protocol version.
    """

    target: TargetT
    verified_chain: tuple[bytes, ...] = ()
    served_chain: tuple[bytes, ...] = ()
    error: str | None = None
    error_kind: KindT | None = None
    tls_version: str | None = None


def verifying_context(
    *, cafile: str | None = None, capath: str | None = None, cadata: str | None = None
) -> ssl.SSLContext:
    """Return a client context (TLS 1.2+) that verifies CA and host name.

    It trusts the given CAs, or the system store when none is given.
    """
    ctx = ssl.create_default_context(cafile=cafile, capath=capath, cadata=cadata)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _der(cert: Any) -> bytes:
    # The Python wrappers' public chain methods (3.13+) return DER bytes; the C object returns
    # Certificate objects.
    return cert if isinstance(cert, bytes) else bytes(cert.public_bytes(_DER))


def peer_chains(conn: ssl.SSLSocket | ssl.SSLObject) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Return the verified and the served chain (DER, leaf first) of a TLS connection."""
    # The C object has both methods on every supported version; the wrappers only from 3.13.
    inner: Any = conn._sslobj  # type: ignore[union-attr]
    verified = tuple(_der(c) for c in (inner.get_verified_chain() or ()))
    served = tuple(_der(c) for c in (inner.get_unverified_chain() or ()))
    return verified, served


def verify_reason(exc: ssl.SSLCertVerificationError) -> str:
    """The most specific text of a verification failure (e.g. ``certificate has expired``)."""
    return exc.verify_message or exc.reason or str(exc)
