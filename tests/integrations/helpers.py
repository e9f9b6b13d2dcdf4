"""Assertions shared by the integration tests."""

from __future__ import annotations

from tlspin import PinVerificationError
from tlspin.testing.servers import TLSServer


def pin_errors(exc: BaseException) -> list[PinVerificationError]:
    """Every PinVerificationError reachable from *exc* (cause, context, reason, args, groups).

    Written independently of tlspin.integrations.find_pin_error, so the tests do not trust the
    code under test to find the evidence.
    """
    found: list[PinVerificationError] = []
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, PinVerificationError):
            found.append(item)
        stack += [item.__cause__, item.__context__, *item.args]
        stack += [getattr(item, name, None) for name in ("reason", "certificate_error")]
        if isinstance(item, BaseExceptionGroup):
            stack += list(item.exceptions)
    return found


def assert_refused(exc: BaseException, server: TLSServer) -> PinVerificationError:
    """Assert *exc* carries a pin refusal and *server* got no application byte; return it."""
    errors = pin_errors(exc)
    assert errors, f"expected a PinVerificationError in the chain of {exc!r}"
    server.wait_idle()
    assert server.received == b"", f"the refused origin received {server.received!r}"
    return errors[0]


def url_for(host: str, port: int, path: str = "/") -> str:
    """``https://host:port/path`` with IPv6 brackets."""
    return f"https://[{host}]:{port}{path}" if ":" in host else f"https://{host}:{port}{path}"
