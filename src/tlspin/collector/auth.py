"""Dashboard and query-API authentication: a bearer token, or a login form and a session cookie.

Sessions are signed, so any collector process sharing the token accepts them: the cookie is
``<expiry>.<session id>.<HMAC-SHA256(key, expiry.id)>`` with a key derived from the token.
Logging out revokes the session id in the database (``revoked_sessions``), which every process
consults, so a copied cookie dies with the logout; changing the token logs everybody out. Form
posts carry a CSRF token derived from the session, and the cookie is ``SameSite=Strict`` and
``HttpOnly`` (``Secure`` over HTTPS, or always with ``Settings.secure_cookies``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from starlette.requests import Request

from tlspin._shared.numbers import decimal

__all__ = ["COOKIE", "Auth"]

COOKIE = "tlspin_session"


class Auth:
    """Checks credentials against the collector token (None: everything is open).

    Args:
        token: the shared secret, or None for an unauthenticated (loopback-only) collector.
        session_seconds: lifetime of a login.
        metrics_token: a second secret that opens ``/metrics`` only.
        is_revoked: tells whether a session id was revoked (a database lookup), or None when
            it cannot tell now (the session is refused this time); None: no revocation.
    """

    #: How long a session found unrevoked is taken as such without asking again: a logout in
    #: another collector process takes effect here within this many seconds.
    REVOCATION_CHECK_SECONDS = 5.0

    def __init__(self, token: str | None, *, session_seconds: float,
                 metrics_token: str | None = None,
                 is_revoked: Callable[[str], bool | None] | None = None) -> None:
        self.enabled = token is not None
        secret = (token or "").encode()
        self._token_digest = hashlib.sha256(secret).digest()
        self._metrics_digest = (
            hashlib.sha256(metrics_token.encode()).digest() if metrics_token else None
        )
        self._key = hashlib.sha256(b"tlspin-session-key\0" + secret).digest()
        self._session_seconds = session_seconds
        self._is_revoked = is_revoked
        self._checked: dict[str, float] = {}  # session id -> when it was last found unrevoked
        self._revoked_here: set[str] = set()

    def check_token(self, candidate: str) -> bool:
        """Constant-time comparison of *candidate* with the token."""
        digest = hashlib.sha256(candidate.encode("utf-8", "replace")).digest()
        return self.enabled and hmac.compare_digest(digest, self._token_digest)

    def _bearer(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def new_session(self) -> str:
        """A fresh session cookie value."""
        expiry = str(int(time.time() + self._session_seconds))
        body = f"{expiry}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign('session', body)}"

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def session(self, cookie: str | None) -> tuple[str, float] | None:
        """(session id, expiry) of *cookie* if this token issued it and it has not expired
        (revocation is not checked here)."""
        if not cookie or len(cookie) > 200 or cookie.count(".") != 2:
            return None
        body, _, mac = cookie.rpartition(".")
        expiry, _, sid = body.partition(".")
        # ASCII digits only: "²" passes str.isdigit(), and int() refuses it (a 500 here).
        seconds = decimal(expiry, max_digits=12)
        if seconds is None or seconds < time.time() or not sid:
            return None
        if not hmac.compare_digest(mac, self._sign("session", body)):
            return None
        return sid, float(seconds)

    def session_valid(self, cookie: str | None) -> bool:
        """True if *cookie* is a session this token issued, not expired and not revoked."""
        found = self.session(cookie)
        if found is None:
            return False
        sid = found[0]
        if sid in self._revoked_here:
            return False
        if self._is_revoked is None:
            return True
        now = time.monotonic()
        if now - self._checked.get(sid, -1e9) < self.REVOCATION_CHECK_SECONDS:
            return True
        revoked = self._is_revoked(sid)
        if revoked is None:  # cannot tell now: refuse, but remember nothing
            return False
        if revoked:
            self._revoked_here.add(sid)
            return False
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[sid] = now
        return True

    def forget(self, sid: str) -> None:
        """Take *sid* as revoked in this process at once (the caller stored the revocation)."""
        if len(self._revoked_here) > 10_000:
            self._revoked_here.clear()  # the database still holds every revocation
        self._revoked_here.add(sid)
        self._checked.pop(sid, None)

    def csrf_token(self, cookie: str | None) -> str:
        """The CSRF token that goes with a session cookie."""
        return self._sign("csrf", cookie or "")

    def csrf_valid(self, cookie: str | None, candidate: str) -> bool:
        """True if *candidate* is the CSRF token of *cookie*."""
        return hmac.compare_digest(candidate, self.csrf_token(cookie))

    def authorized(self, request: Request, *, session: bool = True) -> bool:
        """True if the request carries the bearer token or (if *session*) a valid session
        cookie.

        A cookie travels with any request the browser makes, a form posted by another site
        on the same registrable domain included, so routes that change state and check no
        CSRF token pass ``session=False``.
        """
        if not self.enabled:
            return True
        bearer = self._bearer(request)
        if bearer is not None and self.check_token(bearer):
            return True
        return session and self.session_valid(request.cookies.get(COOKIE))

    def authorized_for_metrics(self, request: Request) -> bool:
        """True if the request may read ``/metrics``: as :meth:`authorized`, or with the
        metrics token as its bearer token."""
        if self.authorized(request):
            return True
        bearer = self._bearer(request)
        if bearer is None or self._metrics_digest is None:
            return False
        digest = hashlib.sha256(bearer.encode("utf-8", "replace")).digest()
        return hmac.compare_digest(digest, self._metrics_digest)


def safe_next(target: str | None) -> str:
    """A same-site path to go to after login; anything else becomes the dashboard."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/dashboard"
    if any(ch in target for ch in "\r\n\\") or len(target) > 512:
        return "/dashboard"
    return target
