"""Shared plumbing of the client integrations: one pinned context, and finding pin errors.

Every integration hands one pinned :class:`ssl.SSLContext` to its client library; this module
builds it from a policy (or checks a context the caller pinned), and finds the
:class:`~tlspin.PinVerificationError` inside whatever exception the library wraps it in.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator

from tlspin._state import _PinState
from tlspin.context import PolicySource, create_context, policy_of
from tlspin.exceptions import (
    PinConfigurationError,
    PinningUnavailableError,
    PinVerificationError,
    PolicyError,
)
from tlspin.hosts import canonical_host
from tlspin.policy import PinPolicy

__all__ = [
    "check_proxy_context",
    "find_pin_error",
    "is_pinned_host",
    "pinned_context",
    "policy_source",
    "proves_pins",
    "same_host",
    "trust_context",
]


def pinned_context(
    policy: PinPolicy | PolicySource | None,
    *,
    ssl_context: ssl.SSLContext | None,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
) -> ssl.SSLContext:
    """Return the pinned context an integration should use.

    Exactly one of *policy* (a context is created with :func:`tlspin.create_context`) and
    *ssl_context* (already pinned with :func:`tlspin.pin_context`) must be given.

    Raises:
        PinConfigurationError: both or neither are given, the context is not pinned, or CA
            options are combined with a ready-made context.
    """
    if ssl_context is not None:
        if policy is not None:
            msg = (
                "pass either a policy or a pinned ssl_context, not both (to pin an existing "
                "context, call tlspin.pin_context(ctx, policy) and pass ssl_context=ctx)"
            )
            raise PinConfigurationError(msg)
        if cafile is not None or capath is not None or cadata is not None:
            msg = (
                "cafile/capath/cadata apply only when tlspin creates the context; load CAs into "
                "the ssl_context you pass instead"
            )
            raise PinConfigurationError(msg)
        if not isinstance(ssl_context, ssl.SSLContext):
            msg = f"ssl_context must be an ssl.SSLContext, found {type(ssl_context).__name__}"
            raise PinConfigurationError(msg)
        if policy_of(ssl_context) is None:
            msg = (
                "ssl_context is not pinned: expected a context from tlspin.create_context() or "
                "tlspin.pin_context(), found a plain one (it would check no pins)"
            )
            raise PinConfigurationError(msg)
        return ssl_context
    if policy is None:
        msg = "expected a PinPolicy (or a policy source) or a pinned ssl_context, found neither"
        raise PinConfigurationError(msg)
    return create_context(policy, cafile=cafile, capath=capath, cadata=cadata)


def policy_source(ctx: ssl.SSLContext) -> PinPolicy | PolicySource:
    """Return what *ctx* was pinned to: the policy, or the source it reads policies from.

    Lets an integration build sibling contexts (another trust store) that follow the same,
    possibly updating, policy.

    Raises:
        PinConfigurationError: *ctx* is not pinned.
    """
    state = getattr(ctx, "_tlspin", None)
    if not isinstance(state, _PinState):
        msg = "expected a context pinned with tlspin.pin_context(), found a plain one"
        raise PinConfigurationError(msg)
    return state.source


def is_pinned_host(ctx: ssl.SSLContext, host: str | None) -> bool:
    """Return True if the policy in force for *ctx* has a rule (any mode) covering *host*.

    A name the policy cannot canonicalise counts as pinned when the policy has any rule, as in
    the handshake: it cannot be shown to be unpinned (``127.0.0.01`` reaches ``127.0.0.1``).
    """
    policy = policy_of(ctx)
    if policy is None or not host:
        return False
    try:
        return bool(policy.rules_for(host.strip("[]")))
    except PinConfigurationError:
        return bool(policy.rules)


def _strength(policy: PinPolicy | None, host: str, today: dt.date) -> int:
    """0: no rule covers *host*; 1: only report-only or expired rules; 2: an enforced rule."""
    if policy is None or not host:
        return 0
    try:
        rules = policy.rules_for(host.strip("[]"))
    except PinConfigurationError:
        return 2 if policy.rules else 0
    if not rules:
        return 0
    for rule in rules:
        in_force = policy.on_expiry == "enforce" or not rule.expired(today)
        if rule.mode == "enforce" and in_force:
            return 2
    return 1


def proves_pins(ctx: ssl.SSLContext, other: object, host: str | None) -> bool:
    """True if *other* (a context a caller chose instead of *ctx* for *host*) checks *host* at
    least as strictly as *ctx* does.

    Where a context's pins stand as proof, a rule that only reports, or whose ``expires`` has
    passed (with ``on_expiry="fail-open"``), counts for less than an enforced rule in force: a
    context pinned to such a rule proves nothing for a host that *ctx* enforces.
    """
    if not host:
        return True
    today = dt.datetime.now(dt.UTC).date()
    need = _strength(policy_of(ctx), host, today)
    if need == 0:
        return True
    if not isinstance(other, ssl.SSLContext):
        return False
    return _strength(policy_of(other), host, today) >= need


def same_host(a: str, b: str) -> bool:
    """Return True if *a* and *b* are spellings of one host (False if either is malformed).

    Integrations use it where a client lets the TLS server name differ from the URL's host.
    """
    try:
        return canonical_host(a.strip("[]")) == canonical_host(b.strip("[]"))
    except PolicyError:
        return False


def server_name_refusal(host: str, name: str) -> PinningUnavailableError:
    """The refusal of a request to the pinned *host* whose ``sni_hostname`` is *name*.

    httpcore pools connections by URL origin, whatever server name opened them; the explicit
    httpx transport and the injected httpcore patch raise their library's ``ConnectError``
    from this error.
    """
    msg = (
        f"refused a request to {host} with sni_hostname={name!r}: {host} is pinned, and a "
        "connection opened under another server name is checked against that name's pins, "
        f"then pooled for {host} (expected no sni_hostname, or {host!r})"
    )
    return PinningUnavailableError(msg, hostname=host, reason="server-name-mismatch")


def check_proxy_context(
    ctx: ssl.SSLContext, proxy_host: str | None, proxy_ctx: ssl.SSLContext | None
) -> None:
    """Refuse a context for an HTTPS proxy's TLS leg that would skip pins the policy has for it.

    *ctx* is the integration's pinned context; when its policy pins *proxy_host*, the proxy's
    own context must check that host at least as strictly (:func:`proves_pins`: an enforced
    rule in force is not stood in for by a report-only or expired one).

    Raises:
        PinConfigurationError: the proxy host is pinned and *proxy_ctx* does not check it.
    """
    if not is_pinned_host(ctx, proxy_host) or proves_pins(ctx, proxy_ctx, proxy_host):
        return
    found = (
        "none"
        if proxy_ctx is None
        else "one that does not enforce the pins for it"
        if is_pinned_host(proxy_ctx, proxy_host)
        else "one that pins nothing for it"
    )
    msg = (
        f"the policy pins the proxy host {proxy_host}, but the context for the TLS to the "
        f"proxy ({found}) would not check those pins; pass one made with "
        "tlspin.create_context(policy, cafile=...)"
    )
    raise PinConfigurationError(msg)


def trust_context(
    *,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: str | bytes | None = None,
) -> ssl.SSLContext:
    """Return a plain verifying client context (no pins), e.g. for the TLS leg to a proxy.

    Without CA options it trusts the system store, as :func:`ssl.create_default_context` does.
    """
    ctx = ssl.create_default_context(cafile=cafile, capath=capath, cadata=cadata)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _linked(exc: BaseException) -> Iterator[object]:
    yield exc.__cause__
    yield exc.__context__
    # urllib3 MaxRetryError / urllib URLError keep the cause in .reason; aiohttp's
    # ClientConnectorCertificateError in .certificate_error; most wrappers also in .args.
    for attr in ("reason", "certificate_error", "os_error"):
        yield getattr(exc, attr, None)
    yield from exc.args
    # Twisted's ResponseNeverReceived / ResponseFailed keep twisted Failures in .reasons.
    reasons = getattr(exc, "reasons", None)
    if isinstance(reasons, list | tuple):
        yield from (getattr(reason, "value", reason) for reason in reasons)
    if isinstance(exc, BaseExceptionGroup):
        yield from exc.exceptions


def find_pin_error(exc: BaseException) -> PinVerificationError | None:
    """Find the :class:`~tlspin.PinVerificationError` behind an HTTP client's exception.

    Clients wrap TLS errors in their own types (``requests.exceptions.SSLError``,
    ``httpx.ConnectError``, ``urllib3.exceptions.MaxRetryError``,
    ``aiohttp.ClientConnectorCertificateError``, ``urllib.error.URLError``, Twisted's
    ``ResponseNeverReceived``…). This walks ``__cause__``, ``__context__``, ``.reason``,
    ``.args``, Twisted's ``.reasons`` (failures) and exception groups.

    Example::

        try:
            client.get(url)
        except httpx.ConnectError as exc:
            if (pin_error := find_pin_error(exc)) is not None:
                log.error("refused %s: %s", pin_error.hostname, pin_error)
    """
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, PinVerificationError):
            return item
        todo.extend(_linked(item))
    return None
