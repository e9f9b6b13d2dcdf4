"""What a connection is checked against: pin state, the injected state, per-connection snapshots.

Three small things the engine's modules share (no I/O):

* :class:`PolicySource` and :class:`_PinState`: the policy in force for a context (or for the
  whole process under :func:`tlspin.inject`) and the leaves that passed a full check under
  *that* policy, held as one value so that a policy switch can never mix the two.
* :data:`INJECTED`: the process-wide state :func:`tlspin.inject` installs, read by connections
  whose context carries no pin state of its own.
* :class:`Snapshot`: what OpenSSL copied into one connection when it was created (verify mode
  and host-name check), recorded by :mod:`tlspin._guard`, together with the pin state that
  applies to it.
"""

from __future__ import annotations

import threading
from typing import NamedTuple, Protocol, runtime_checkable

from tlspin.exceptions import PinningUnavailableError
from tlspin.policy import PinPolicy

__all__ = ["INJECTED", "PolicySource", "Snapshot"]

#: Remembered leaves per policy before the set starts again (a bound on memory, not a cache).
_SEEN_LIMIT = 10_000


@runtime_checkable
class PolicySource(Protocol):
    """Anything that can say which policy is in force now (e.g. :class:`tlspin.BundleUpdater`).

    A context pinned to a source reads ``current_policy()`` at every handshake, so new
    connections pick up new pins without rebuilding contexts.
    """

    def current_policy(self) -> PinPolicy:
        """Return the policy to apply to the next handshake."""
        ...


Current = tuple[PinPolicy, set[tuple[str, bytes]]]


class _PinState:
    """A policy (or its source) and the leaves that passed a full check under that policy.

    The policy and its remembered-leaf set travel as one tuple, :meth:`current`, read once per
    handshake. A leaf is remembered only into the set of the policy that checked its chain: a
    handshake checked under a report-only policy can never vouch for a resumed session under
    the enforcing policy that replaced it, whatever the interleaving of threads.
    """

    __slots__ = ("_current", "_lock", "_source", "explicit")

    def __init__(self, policy: PinPolicy | PolicySource, *, explicit: bool = True) -> None:
        self._source: PolicySource | None = None
        self._current: Current | None = None
        if isinstance(policy, PinPolicy):
            self._current = (policy, set())
        else:
            self._source = policy
        # Re-entrant: nothing user-supplied runs under it, but a nested handshake must not hang.
        self._lock = threading.RLock()
        #: True for a context pinned with pin_context(); False for the injected state.
        self.explicit = explicit

    @property
    def source(self) -> PinPolicy | PolicySource:
        """What this state was made from: a fixed policy or a policy source."""
        if self._source is not None:
            return self._source
        assert self._current is not None  # Defensive: one of the two is always set.
        return self._current[0]

    def current(self) -> Current:
        """Return ``(policy, remembered leaves)`` for one handshake, as one consistent value."""
        current = self._current
        if self._source is None:
            assert current is not None  # Defensive: a fixed policy is set at construction.
            return current
        try:
            policy = self._source.current_policy()
        except Exception as exc:
            # An ssl.SSLError subclass, so asyncio and every client see a TLS failure.
            msg = (
                f"refused the connection: the policy source {type(self._source).__name__} "
                f"failed ({type(exc).__name__}: {exc})"
            )
            raise PinningUnavailableError(msg, reason="no-policy") from exc
        if not isinstance(policy, PinPolicy):
            # A buggy source (e.g. returning None) must refuse clearly, not fail on an attribute.
            msg = (
                f"refused the connection: the policy source {type(self._source).__name__} "
                f"returned {type(policy).__name__}, expected a PinPolicy"
            )
            raise PinningUnavailableError(msg, reason="no-policy")
        if current is None or current[0] is not policy:
            # Leaves remembered under an older policy must not vouch for sessions under a new
            # one: a new policy starts with an empty set.
            with self._lock:
                current = self._current
                if current is None or current[0] is not policy:
                    current = (policy, set())
                    self._current = current
        return current

    def policy(self) -> PinPolicy:
        """The policy in force now."""
        return self.current()[0]


def remember(seen: set[tuple[str, bytes]], hostname: str, leaf: bytes) -> None:
    """Add a leaf that passed a full check to the set of the policy that checked it.

    *hostname* is the canonical host (``Verdict.hostname``), so a session resumed under another
    spelling of the same host is recognised (:func:`tlspin.verify.check_resumed`).
    """
    if len(seen) > _SEEN_LIMIT:
        seen.clear()
    seen.add((hostname, leaf))


class _Injected:
    """The process-wide pin state installed by :func:`tlspin.inject` (None when not injected)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: _PinState | None = None


#: Read by a connection whose context has no pin state of its own (see Snapshot).
INJECTED = _Injected()


class Snapshot(NamedTuple):
    """What one connection was created with.

    Attributes:
        state: the pin state that applies: the creating context's own (``pin_context``), else
            the injected one, else None.
        verified: OpenSSL was told to verify the chain (``CERT_REQUIRED``) when it created
            this connection. False also when that cannot be known for sure.
        hostname_checked: OpenSSL was told to check the host name for this connection.
        injected: when *state* is the context's own, the injected state at that time (it
            applies to hosts the context's own policy does not cover: pinning only adds).
    """

    state: _PinState | None
    verified: bool
    hostname_checked: bool
    injected: _PinState | None = None


def unknown(context: object) -> Snapshot:
    """The snapshot of a connection created without the guard: verification state unknown.

    Such a connection counts as unverified (fail closed).
    """
    state = getattr(context, "_tlspin", None)
    if not isinstance(state, _PinState):
        return Snapshot(INJECTED.state, verified=False, hostname_checked=False)
    return Snapshot(state, verified=False, hostname_checked=False, injected=INJECTED.state)
