"""Report and webhook endpoints: which URLs are acceptable, and one bounded JSON POST.

Shared by :class:`tlspin.Reporter` and the collector's webhooks (re-exported by
:mod:`tlspin.reporting`). :func:`report_uri_concern` is the static check that lint (TP020) and
every import apply to a rule's ``report_uri``; :func:`is_public_address` is the check a
:class:`~tlspin.Reporter` applies, by default, to the address a rule's ``report_uri`` resolved to.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping

__all__ = [
    "check_endpoint_url", "is_public_address", "post_json", "redact_url", "report_uri_concern",
]

_USER_AGENT = "tlspin-reporter"


def check_endpoint_url(uri: str) -> urllib.parse.SplitResult:
    """Validate a report or webhook URL: http(s) with a host; plain http only to loopback.

    Raises:
        ValueError: the URL is not acceptable; the message says why.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        hostname = parts.hostname
    except ValueError:
        parts, hostname = None, None
    if parts is None or parts.scheme not in ("https", "http") or not hostname:
        raise ValueError(
            f"a report URI must be an http(s) URL with a host, found {redact_url(uri)!r}"
        )
    if parts.scheme == "http" and not _is_loopback(hostname):
        # Plain HTTP only for a collector on this machine: anywhere else the report channel
        # would be as interceptable as the connection whose interception it reports.
        raise ValueError(
            "a report URI must use https:// unless its host is loopback, found "
            f"{redact_url(uri)!r}"
        )
    return parts


def redact_url(uri: str) -> str:
    """*uri* without what may be secret: user info, and any path or query (shown as ``/…``).

    Chat webhooks (Slack, Teams, Discord…) carry their secret in the path or query, so an
    error message that quoted the whole URL would put a credential into terminals and logs.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme and not parts.netloc:
        return "<not a URL>" if uri else ""
    netloc = parts.netloc.rpartition("@")[2]
    hidden = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{netloc}{hidden}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_public_address(address: str) -> bool:
    """True for a global unicast IP address; False for loopback, private, link-local, shared,
    reserved, unspecified and multicast ones (IPv4-mapped IPv6 is judged by its IPv4 address).

    Anything that is not an IP address is not public.
    """
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone is not the address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal_address(host: str) -> str | None:
    """*host* as an IP address if it is one, including the forms ``inet_aton`` (and so the
    resolver) reads as IPv4: ``127.1``, ``0x7f.0.0.1``, ``2130706433``."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host and all(ch in "0123456789abcdefxABCDEFX." for ch in host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return None
    return None


def report_uri_concern(uri: str) -> str | None:
    """Why a rule's *uri* is not a public ``https://`` report endpoint, or None when it is.

    Checked by lint (TP020) and every import: a rule's ``report_uri`` travels with the policy,
    and every client would send its reports there. Plain ``http://`` is refused by a
    :class:`Reporter` unless the host is loopback; a loopback, private or other non-public
    address (or ``localhost``, or a single-label name, which resolves inside the client's
    network) is refused unless ``allow_private_report_uris=True``.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"it is not a valid URL ({exc})"
    if parts.scheme not in ("https", "http") or not host:
        return "it is not an http(s) URL with a host"
    local = (
        "a report sent there would reach the client's own machine or network; a Reporter "
        "sends a rule's reports there only with allow_private_report_uris=True"
    )
    address = _literal_address(host)
    if host == "localhost" or host.endswith(".localhost"):
        return f"its host {host} is the client's own machine: {local}"
    if address is not None and not is_public_address(address):
        return f"its host {host} is a loopback, private or otherwise non-public address: {local}"
    if address is None and "." not in host.rstrip("."):
        return (
            f"its host {host} is a single-label name, resolved inside the client's network: "
            f"{local}"
        )
    if parts.scheme == "http":
        return (
            "it uses plain http: reports (host names, certificate chains) would travel "
            "unencrypted, and a Reporter refuses to send them"
        )
    return None


def post_json(
    uri: str,
    body: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    allow_address: Callable[[str], bool] | None = None,
) -> int:
    """POST a JSON *body* to *uri* with the stdlib HTTP client and return the status code.

    TLS is verified with *ssl_context*, or the system trust store when it is None. *timeout*
    bounds the whole exchange (connect, handshake, response head and up to 64 KiB of body),
    not each read: an endpoint that drips its answer cannot hold the sender. With
    *allow_address* (e.g. :func:`is_public_address`), only the resolved addresses it accepts
    are connected to.

    Raises:
        ValueError: *uri* is not acceptable (:func:`check_endpoint_url`), or *allow_address*
            refused every address the host resolved to.
        OSError: the connection, TLS handshake or exchange failed (``TimeoutError`` when the
            deadline passed).
        http.client.HTTPException: the response was not valid HTTP.
    """
    from tlspin._shared.deadline import exchange

    parts = check_endpoint_url(uri)
    host = parts.hostname
    assert host is not None  # check_endpoint_url guarantees it
    context: ssl.SSLContext | None = None
    if parts.scheme == "https":
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    sent_headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "Connection": "close",
        **(headers or {}),
    }
    port = parts.port or (443 if parts.scheme == "https" else 80)
    response = exchange(
        "POST", host, port, path, context=context, timeout=timeout, headers=sent_headers,
        body=body, max_body=64 * 1024, allow_address=allow_address,
    )
    return response.status
