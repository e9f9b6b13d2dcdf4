"""One asyncio TLS probe: connect, handshake with full verification, and record the chains.

The probe uses a *plain* verified context (CA and host name checks, no pinning): pins are judged
afterwards by :mod:`tlspin.monitor.evaluate`, so that a mismatch is reported with everything the
server sent instead of ending as a bare handshake error.

When verification fails, a second handshake with verification switched off fetches the chain the
server serves, so the report can say *what* is wrong (expired, unknown issuer…). That chain is
marked unverified and never counts for pins (RFC 7469 §2.6: pins apply to the validated chain).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Literal

from tlspin._shared.probing import ProbeOutcome, peer_chains, verify_reason, verifying_context
from tlspin.monitor.targets import Target

__all__ = ["ProbeResult", "probe", "unverified_context", "verified_context"]

ErrorKind = Literal["connect", "timeout", "verify", "tls"]


@dataclass(frozen=True, slots=True)
class ProbeResult(ProbeOutcome[Target, ErrorKind]):
    """What one probe saw (fields as in ``ProbeOutcome``).

    *error_kind* is ``"connect"`` (no TCP connection), ``"timeout"``, ``"verify"`` (the
    certificate failed CA or host name verification) or ``"tls"`` (another TLS failure).
    """

    @property
    def verified(self) -> bool:
        """True when the handshake completed with a verified chain."""
        return self.error is None and bool(self.verified_chain)


def verified_context(
    *, cafile: str | None = None, capath: str | None = None, cadata: str | None = None
) -> ssl.SSLContext:
    """Return a client context that verifies CA and host name (system store unless CAs given)."""
    return verifying_context(cafile=cafile, capath=capath, cadata=cadata)


def unverified_context() -> ssl.SSLContext:
    """Return a context that accepts any certificate: only for reading what a server serves."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_Chains = tuple[tuple[bytes, ...], tuple[bytes, ...], str | None]


def _chains(writer: asyncio.StreamWriter) -> _Chains:
    sslobj: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
    if sslobj is None:
        return (), (), None
    return *peer_chains(sslobj), sslobj.version()


def _close(writer: asyncio.StreamWriter | None) -> None:
    # abort(): a probe has nothing to flush, and a graceful TLS close can wait on a peer
    # that never answers for ssl_shutdown_timeout (30 s).
    if writer is not None:
        writer.transport.abort()


async def _handshake(
    target: Target, context: ssl.SSLContext, timeout: float
) -> tuple[asyncio.StreamWriter | None, ProbeResult | None]:
    """Connect and run the TLS handshake; return (writer, None) or (None, failure)."""
    address = target.ip or target.host
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, target.port), timeout)
    except TimeoutError:
        return None, ProbeResult(
            target, error=f"no TCP connection within {timeout:g} s", error_kind="timeout"
        )
    except OSError as exc:
        return None, ProbeResult(
            target, error=f"connection failed: {exc.strerror or exc}", error_kind="connect"
        )
    try:
        # wait_for bounds the handshake itself; the transport's own timeout is only a backstop.
        await asyncio.wait_for(
            writer.start_tls(
                context, server_hostname=target.host, ssl_handshake_timeout=timeout + 5
            ),
            timeout,
        )
    except TimeoutError:
        _close(writer)
        return None, ProbeResult(
            target, error=f"TLS handshake not finished within {timeout:g} s", error_kind="timeout"
        )
    except ssl.SSLCertVerificationError as exc:
        _close(writer)
        return None, ProbeResult(
            target,
            error=f"certificate verification failed: {verify_reason(exc)}",
            error_kind="verify",
        )
    except (ssl.SSLError, OSError, EOFError) as exc:
        _close(writer)
        text = str(exc) or type(exc).__name__
        return None, ProbeResult(target, error=f"TLS handshake failed: {text}", error_kind="tls")
    return writer, None


async def probe(
    target: Target,
    *,
    context: ssl.SSLContext,
    timeout: float = 10.0,
    fetch_unverified: bool = True,
) -> ProbeResult:
    """Probe *target* once; never raises for network or TLS failures.

    Args:
        target: the endpoint.
        context: a verifying client context (see :func:`verified_context`).
        timeout: seconds allowed for the TCP connection, and again for the TLS handshake.
        fetch_unverified: after a verification failure, connect again without verification
            to record the served chain.
    """
    writer, failure = await _handshake(target, context, timeout)
    if writer is not None:
        try:
            verified, served, version = _chains(writer)
        finally:
            _close(writer)
        if not verified:
            # A resumed session carries no verified chain; the monitor never resumes, so this
            # means something unexpected happened and the chain cannot be vouched for.
            return ProbeResult(
                target, served_chain=served, error="the TLS library gave no verified chain",
                error_kind="tls", tls_version=version,
            )
        return ProbeResult(target, verified, served, tls_version=version)
    assert failure is not None
    if failure.error_kind != "verify" or not fetch_unverified:
        return failure
    writer, _ = await _handshake(target, unverified_context(), timeout)
    if writer is None:
        return failure
    try:
        _, served, version = _chains(writer)
    finally:
        _close(writer)
    return ProbeResult(
        target, (), served, failure.error, failure.error_kind, tls_version=version
    )
