"""The collector's HTTP plumbing: security headers, JSON that always encodes, the per-IP token
bucket, the sender's address behind proxies, and the bare route of the intake path.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from tlspin.collector.settings import Settings

__all__ = [
    "CSP",
    "DirectRoute",
    "IPRateLimiter",
    "SafeJSONResponse",
    "SecurityHeaders",
    "client_ip",
    "content_length",
]

log = logging.getLogger("tlspin.collector")

#: Nothing runs but our own markup: no scripts at all, styles and images from this origin only.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# Query answers and exports hold reports: no cache, shared or private, may keep a copy.
_NO_STORE = (b"cache-control", b"no-store")
_NO_STORE_PREFIXES = ("/api/", "/metrics")
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped, so that no stored value can fail to
    encode: a lone surrogate from a report (JSON text may hold one, and a database's JSON
    column keeps it) becomes ``\\ud800`` instead of a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


class IPRateLimiter:
    """Token bucket per client IP (per process; the event loop is its only user)."""

    def __init__(self, count: int, per: float, *, max_clients: int = 100_000) -> None:
        self._rate = count / per
        self._burst = float(count)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max = max_clients

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token for *key*; False when its bucket is empty."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)  # the least recently seen client
        return allowed


def client_ip(request: Request, settings: Settings) -> str:
    """The sender's address: the TCP peer, or with *trust_forwarded_for* the
    ``X-Forwarded-For`` entry *forwarded_hops* places from the end, the one the outermost of
    your proxies wrote.

    Every entry before it is whatever the client sent, so it names nobody; an entry that is
    not an IP address, or a list too short to hold it (a request that bypassed a proxy),
    leaves the peer's address.
    """
    peer = request.scope.get("client")
    address = str(peer[0]) if peer else "unknown"
    if settings.trust_forwarded_for:
        # Several header lines count as one comma-separated list (RFC 9110 §5.3).
        values = [v for n, v in request.scope["headers"] if n == b"x-forwarded-for"]
        hops = settings.forwarded_hops
        entries = b",".join(values).decode("latin-1").split(",")[-hops:] if values else []
        if len(entries) == hops:
            entry = entries[0].strip()
            found = _forwarded_address(entry)
            if found is not None:
                return found
            log.warning("X-Forwarded-For holds %r where a proxy's entry belongs, not an "
                        "IP address: using the peer", entry[:64])
    return address


def _forwarded_address(entry: str) -> str | None:
    """The IP address of one X-Forwarded-For entry: ``1.2.3.4``, ``2001:db8::1``, or with the
    client's port as some proxies write it (Azure Application Gateway): ``1.2.3.4:5678``,
    ``[2001:db8::1]:5678``. Read as the peer's instead, every client of such a proxy would
    share one rate limit and one login limiter (10 wrong logins locked everybody out)."""
    host, colon, port = entry, "", ""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":"):
            return None
        colon, port = rest[:1], rest[1:]
    elif entry.count(":") == 1:  # IPv4 and a port; IPv6 has two colons at least
        host, colon, port = entry.partition(":")
    if colon and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if colon and entry.startswith("[") != (ip.version == 6):
        return None  # "[1.2.3.4]:80"
    return str(ip)


def content_length(scope: MutableMapping[str, Any]) -> str | None:
    """The first Content-Length header's value, read from the raw ASGI headers (the intake
    path needs no other header, so it builds no header mapping)."""
    for name, value in scope["headers"]:
        if name == b"content-length":  # ASGI servers give header names in lower case
            return str(value.decode("latin-1"))
    return None


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[..., Any],
        send: Callable[..., Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = list(_SECURITY_HEADERS)
        if str(scope.get("path", "")).startswith(_NO_STORE_PREFIXES):
            extra.append(_NO_STORE)
        if scope.get("scheme") == "https":
            extra.append(_HSTS)

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """A route that FastAPI documents (OpenAPI) but serves without its request machinery.

    For the intake path: the endpoint takes the bare :class:`Request` and returns a
    :class:`Response`, so dependency resolution, parameter validation and the exit stacks
    around each call would be pure overhead (about a third of the framework's time per
    report). The endpoint must never raise: every outcome is a response.
    """

    def get_route_handler(self) -> Endpoint:
        endpoint: Endpoint = self.endpoint
        return endpoint

    def __init__(self, path: str, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)

        async def app(
            scope: MutableMapping[str, Any], receive: Callable[..., Any],
            send: Callable[..., Awaitable[None]],
        ) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app
