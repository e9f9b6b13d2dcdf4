"""asyncpg never reaches a pinned host in clear text (installed by :func:`tlspin.inject`).

asyncpg's default ``sslmode=prefer`` treats TLS as optional: after any ``OSError`` from the TLS
upgrade (a pin refusal is one, as every ``ssl.SSLError``), it connects again **without TLS**,
and a server that answers ``N`` to its ``SSLRequest`` is used in clear text from the start
(``asyncpg/connect_utils.py``: ``_RetryConnectSignal``, ``TLSUpgradeProto``). An attacker who
can forge a certificate can as easily refuse TLS, so a pin would protect nothing.

While :func:`install` is in force, an asyncpg connection to a host that an enforced pin rule
covers must be TLS:

* a pin refusal during the TLS upgrade is raised as it is, never turned into a retry;
* a connection attempt without TLS (``sslmode`` ``disable`` or ``allow``, the retry of
  ``prefer``, or a server that declined TLS) is refused with
  :class:`tlspin.PinningUnavailableError` (reason ``"cleartext"``) before a byte of the
  PostgreSQL startup message is sent.

Hosts no rule covers keep asyncpg's behaviour. Unix-domain sockets are not TLS and not pinned.
:func:`tlspin.inject` installs this as soon as asyncpg is imported; :func:`tlspin.extract`
removes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from asyncpg import connect_utils

from tlspin.exceptions import PinConfigurationError, PinningUnavailableError
from tlspin.integrations._common import find_pin_error
from tlspin.policy import PinPolicy

__all__ = ["install", "installed", "uninstall"]

_CONNECT_ADDR = "__connect_addr"  # a module global (no name mangling outside a class)


class _Patch:
    """What :func:`install` replaced, and where the policy in force comes from."""

    policy: Callable[[], PinPolicy | None] | None = None
    originals: dict[str, Any] | None = None
    lock = threading.Lock()


def _pinned(host: object) -> bool:
    """True when an enforced rule of the policy in force covers *host*."""
    getter = _Patch.policy
    policy = getter() if getter is not None else None
    if policy is None or not policy.rules or not isinstance(host, str):
        return False
    try:
        rules = policy.rules_for(host.strip("[]"))
    except PinConfigurationError:
        return True  # a name the policy cannot canonicalise cannot be shown to be unpinned
    return any(rule.mode == "enforce" for rule in rules)


def _refuse_clear(host: str, port: object, why: str) -> PinningUnavailableError:
    msg = (
        f"refused a clear-text PostgreSQL connection to {host}:{port}: the host is pinned, so "
        f"the connection must use TLS with a pinned key, but {why}. Use sslmode=verify-full "
        "(or require) with TLS on the server."
    )
    return PinningUnavailableError(msg, hostname=host, reason="cleartext")


async def _connect_addr(params: Any, retry: bool, addr: Any, *args: Any) -> Any:
    original = _Patch.originals[_CONNECT_ADDR]  # type: ignore[index]
    host = addr[0] if isinstance(addr, tuple) else None
    if host is not None and not params.ssl and _pinned(host):
        raise _refuse_clear(host, addr[1], "this attempt was to be made without TLS")
    return await original(params, retry, addr, *args)


async def _create_ssl_connection(protocol_factory: Any, host: str, port: int, **kwargs: Any) -> Any:
    original = _Patch.originals["_create_ssl_connection"]  # type: ignore[index]
    try:
        transport, protocol = await original(protocol_factory, host, port, **kwargs)
    except connect_utils._RetryConnectSignal as signal:
        pin_error = find_pin_error(signal)
        if pin_error is not None and _pinned(host):
            # asyncpg would retry without TLS; the refusal stands instead.
            raise pin_error from None
        raise
    if not getattr(protocol, "is_ssl", True) and _pinned(host):
        transport.close()
        raise _refuse_clear(host, port, "the server declined TLS")
    return transport, protocol


def install(policy: Callable[[], PinPolicy | None]) -> None:
    """Refuse clear text to pinned hosts; *policy* returns the policy in force (or None).

    Idempotent: a second call only replaces *policy*.
    """
    with _Patch.lock:
        _Patch.policy = policy
        if _Patch.originals is None:
            _Patch.originals = {
                _CONNECT_ADDR: getattr(connect_utils, _CONNECT_ADDR),
                "_create_ssl_connection": connect_utils._create_ssl_connection,
            }
            setattr(connect_utils, _CONNECT_ADDR, _connect_addr)
            connect_utils._create_ssl_connection = _create_ssl_connection


def uninstall() -> None:
    """Restore asyncpg's own functions."""
    with _Patch.lock:
        originals, _Patch.originals = _Patch.originals, None
        _Patch.policy = None
        if originals is not None:
            for name, value in originals.items():
                setattr(connect_utils, name, value)


def installed() -> bool:
    """True while :func:`install` is in force."""
    return _Patch.originals is not None
