"""What a :class:`~tlspin.bundles.BundleUpdater` reports: events for observers, refresh results."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

__all__ = ["BundleEvent", "EventKind", "Outcome", "RefreshResult"]

EventKind = Literal[
    "updated", "rejected", "fetch-failed", "store-fallback", "store-error", "expired"
]
Outcome = Literal["updated", "unchanged", "not-modified", "rejected", "failed"]


@dataclass(frozen=True, slots=True)
class BundleEvent:
    """Something observers of a :class:`BundleUpdater` should know (like :class:`tlspin.Violation`).

    Attributes:
        kind: ``"updated"`` (new pins in force), ``"rejected"`` (a served bundle failed an
            acceptance rule), ``"fetch-failed"``, ``"store-fallback"`` (a stored bundle was
            refused on load; an older one or the embedded policy is in force),
            ``"store-error"`` (the accepted bundle could not be written) or ``"expired"``
            (the bundle in force expired; the embedded policy is in force).
        message: what happened, for people.
        url: the update URL.
        time: when (UTC).
        reason: the :class:`~tlspin.bundles.BundleError` reason, when there is one.
        version: the version concerned (the served or stored bundle), when known.
        in_force: the bundle version in force afterwards; None means the embedded policy.
    """

    kind: EventKind
    message: str
    url: str
    time: dt.datetime
    reason: str | None = None
    version: int | None = None
    in_force: int | None = None


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """The outcome of one :meth:`BundleUpdater.refresh`.

    Attributes:
        outcome: ``updated``, ``unchanged`` (same bundle served again), ``not-modified``
            (HTTP 304), ``rejected`` (see *reason*) or ``failed`` (network or HTTP error).
        version: the bundle version in force afterwards; None means the embedded policy.
        reason: the rejection reason, or None.
        message: details.
    """

    outcome: Outcome
    version: int | None
    reason: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the update channel worked (updated, unchanged or not modified)."""
        return self.outcome in ("updated", "unchanged", "not-modified")
