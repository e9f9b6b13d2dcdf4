"""Live probes: connect to a TLS server and return the chain it is verified with.

Used by ``tlspin pin HOST``, ``check``, ``init``, ``lint --live`` and ``preflight --live`` (and the
monitor). A probe makes one ordinary verified TLS connection (CA and hostname checks on, SNI set),
sends nothing, and returns both the *verified* chain (what pins are checked against) and the
*served* chain (what the server sent). Failures come back as a value, not an exception, so callers
can report them next to other results.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tlspin._shared.numbers import tcp_port
from tlspin._shared.probing import ProbeOutcome, peer_chains, verify_reason, verifying_context

__all__ = ["ProbeResult", "Target", "parse_target", "probe"]

ErrorKind = Literal["dns", "connect", "timeout", "tls", "verify"]


@dataclass(frozen=True, slots=True)
class Target:
    """A host and port to probe.

    Attributes:
        host: the host name (or IP address) used for SNI and hostname verification.
        port: the TCP port.
    """

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(text: str, *, default_port: int = 443) -> Target:
    """Parse ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT`` or an ``https://`` URL.

    Raises:
        ValueError: the text is not one of those forms.
    """
    raw = text.strip()
    if not raw:
        msg = "expected HOST[:PORT] or an https:// URL, found an empty string"
        raise ValueError(msg)
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme.lower() != "https":
            msg = f"expected an https:// URL, found scheme {parts.scheme!r} in {text!r}"
            raise ValueError(msg)
        try:
            port = parts.port or default_port
        except ValueError:
            msg = f"the URL {text!r} has an invalid port"
            raise ValueError(msg) from None
        if not parts.hostname:
            msg = f"the URL {text!r} has no host"
            raise ValueError(msg)
        return Target(parts.hostname, port)
    host, port_text = raw, ""
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            msg = f"expected [IPv6]:PORT, found {text!r}"
            raise ValueError(msg)
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                msg = f"expected [IPv6]:PORT, found {text!r}"
                raise ValueError(msg)
            port_text = rest[1:]
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    if not host or "/" in host or " " in host:
        msg = f"expected HOST[:PORT] or an https:// URL, found {text!r}"
        raise ValueError(msg)
    port = default_port
    if port_text:
        number = tcp_port(port_text)  # ASCII digits: "²" passes isdigit(), int() refuses it
        if number is None:
            msg = f"expected a port between 1 and 65535, found {port_text!r} in {text!r}"
            raise ValueError(msg)
        port = number
    return Target(host, port)


@dataclass(frozen=True, slots=True)
class ProbeResult(ProbeOutcome[Target, ErrorKind]):
    """The outcome of one probe (fields as in ``ProbeOutcome``; both chains empty on error).

    *error_kind* is ``dns``, ``connect``, ``timeout``, ``tls`` or ``verify``; None on success.
    """

    @property
    def ok(self) -> bool:
        """True when the connection was made and verified."""
        return self.error is None


def probe(
    target: Target | str,
    *,
    cafile: str | None = None,
    timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Connect to *target* over TLS, verify it, and return its chains.

    Args:
        target: a :class:`Target` or text accepted by :func:`parse_target`.
        cafile: PEM file of trusted CA certificates (default: the system store).
        timeout: seconds for the TCP connection and the handshake together.
        context: use this client context instead of building one (must verify).

    Raises:
        ValueError: *target* is text that cannot be parsed.
        OSError: *cafile* cannot be read.
    """
    if isinstance(target, str):
        target = parse_target(target)
    ctx = context if context is not None else verifying_context(cafile=cafile)
    try:
        raw = socket.create_connection((target.host, target.port), timeout=timeout)
    except socket.gaierror as exc:
        return ProbeResult(
            target, error=f"cannot resolve {target.host}: {exc.strerror}", error_kind="dns"
        )
    except TimeoutError:
        return ProbeResult(target, error=f"connection to {target} timed out", error_kind="timeout")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return ProbeResult(
            target, error=f"cannot connect to {target}: {reason}", error_kind="connect"
        )
    try:
        with ctx.wrap_socket(raw, server_hostname=target.host) as sock:
            verified, served = peer_chains(sock)
            version = sock.version()
    except ssl.SSLCertVerificationError as exc:
        return ProbeResult(
            target,
            error=f"certificate verification failed for {target}: {verify_reason(exc)}",
            error_kind="verify",
        )
    except TimeoutError:
        return ProbeResult(
            target, error=f"TLS handshake with {target} timed out", error_kind="timeout"
        )
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc) or type(exc).__name__
        return ProbeResult(
            target, error=f"TLS handshake with {target} failed: {reason}", error_kind="tls"
        )
    finally:
        raw.close()
    return ProbeResult(target, verified, served, tls_version=version)
