"""Assertions that prove a pinning outcome, not just an exception.

`assert_refused` passes only if the call failed *because of pinning* (a
`tlspin.PinVerificationError` sits somewhere in its exception chain, however the HTTP client
wrapped it) **and** not one application byte reached any of the watched servers, and no
request reached the watched intercepting proxies. `assert_accepted` is its twin: the call
succeeded and the request really reached a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from tlspin.exceptions import PinVerificationError

__all__ = ["ByteRecorder", "RequestRecorder", "assert_accepted", "assert_refused"]

T = TypeVar("T")

# How long to wait for a server thread to finish with a connection the client dropped. The
# wait ends as soon as the connection is gone; the bound only matters if something is stuck.
_SETTLE = 5.0


class ByteRecorder(Protocol):
    """A server that records the application bytes it receives (`tlspin.testing.servers`)."""

    @property
    def received(self) -> bytes:
        """Every decrypted application byte received so far."""
        ...

    @property
    def requests(self) -> list[str]:
        """Request lines received so far."""
        ...

    @property
    def active(self) -> int:
        """Connections being served now."""
        ...

    def wait_for(self, predicate: Callable[..., object], timeout: float = 5.0) -> bool:
        """Block until the predicate holds."""
        ...


class RequestRecorder(Protocol):
    """An intercepting proxy that records the requests it read (`MitmProxy`)."""

    @property
    def intercepted(self) -> list[tuple[str, str]]:
        """``(host, request_line)`` of every request read from a client."""
        ...

    @property
    def active(self) -> int:
        """Connections being served now."""
        ...

    def wait_for(self, predicate: Callable[..., object], timeout: float = 5.0) -> bool:
        """Block until the predicate holds."""
        ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    received: tuple[int, ...]
    intercepted: tuple[int, ...]
    active: tuple[int, ...]


def _snapshot(servers: list[ByteRecorder], proxies: list[RequestRecorder]) -> _Snapshot:
    return _Snapshot(
        received=tuple(len(s.received) for s in servers),
        intercepted=tuple(len(p.intercepted) for p in proxies),
        active=tuple(s.active for s in servers) + tuple(p.active for p in proxies),
    )


def _settle(watched: list[ByteRecorder | RequestRecorder], before: _Snapshot) -> None:
    # Wait until every connection opened during the call has been closed and fully recorded
    # (keep-alive connections opened earlier may stay), so a late byte cannot slip past.
    for thing, active in zip(watched, before.active, strict=True):
        thing.wait_for(lambda s, n=active: s.active <= n, _SETTLE)


def _describe(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    item: BaseException | None = exc
    while item is not None and id(item) not in seen and len(parts) < 6:
        seen.add(id(item))
        parts.append(f"{type(item).__module__}.{type(item).__qualname__}: {item}")
        item = item.__cause__ or item.__context__
    return "\n  caused by ".join(parts)


def assert_refused(
    call: Callable[[], object],
    *,
    servers: Iterable[ByteRecorder] = (),
    proxies: Iterable[RequestRecorder] = (),
) -> PinVerificationError:
    """Assert that *call* is refused by pinning and leaks nothing.

    Args:
        call: a no-argument callable making the request (e.g. ``lambda: client.get(url)``).
        servers: servers that must receive zero application bytes during the call.
        proxies: intercepting proxies that must read no request during the call.

    Returns:
        The `tlspin.PinVerificationError` found in the exception chain.

    Raises:
        AssertionError: the call succeeded, failed for another reason, or bytes leaked.
    """
    __tracebackhide__ = True  # a failure points at the test's line, not at this function
    from tlspin.integrations import find_pin_error

    servers, proxies = list(servers), list(proxies)
    before = _snapshot(servers, proxies)
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - any client's error type may wrap the pin failure
        error = exc
    else:
        raise AssertionError(
            f"expected the call to be refused by pinning, but it succeeded and returned {result!r}"
        )
    pin_error = find_pin_error(error)
    if pin_error is None:
        raise AssertionError(
            "expected a tlspin.PinVerificationError in the exception chain (a pinning refusal), "
            f"found another failure:\n  {_describe(error)}"
        ) from error
    _settle([*servers, *proxies], before)
    for server, n in zip(servers, before.received, strict=True):
        leaked_bytes = server.received[n:]
        if leaked_bytes:
            raise AssertionError(
                f"pinning refused the connection, but the server at {_where(server)} received "
                f"{len(leaked_bytes)} application bytes during the call (expected 0): "
                f"{leaked_bytes[:80]!r}"
            )
    for proxy, n in zip(proxies, before.intercepted, strict=True):
        seen = proxy.intercepted[n:]
        if seen:
            raise AssertionError(
                f"pinning refused the connection, but the intercepting proxy read {len(seen)} "
                f"request(s) during the call (expected none): {seen}"
            )
    return pin_error


def assert_accepted(call: Callable[[], T], *, servers: Iterable[ByteRecorder] = ()) -> T:
    """Assert that *call* succeeds and that its request reached one of *servers*.

    Args:
        call: a no-argument callable making the request.
        servers: servers of which at least one must receive application bytes during the call
            (no check when empty).

    Returns:
        Whatever *call* returned (e.g. the response).

    Raises:
        AssertionError: the call raised (the message says whether pinning refused it), or no
            server received anything.
    """
    __tracebackhide__ = True
    from tlspin.integrations import find_pin_error

    servers = list(servers)
    before = _snapshot(servers, [])
    try:
        result = call()
    except Exception as exc:
        pin_error = find_pin_error(exc)
        what = "was refused by pinning" if pin_error is not None else "failed"
        detail = str(pin_error) if pin_error is not None else _describe(exc)
        msg = f"expected the call to succeed, but it {what}:\n  {detail}"
        raise AssertionError(msg) from exc
    if servers and all(
        len(s.received) == n for s, n in zip(servers, before.received, strict=True)
    ):
        msg = (
            "the call succeeded, but none of the watched servers received its request "
            "(did it go somewhere else, e.g. through an intercepting proxy?)"
        )
        raise AssertionError(msg)
    return result


def _where(server: object) -> str:
    address = getattr(server, "address", None)
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else repr(server)
