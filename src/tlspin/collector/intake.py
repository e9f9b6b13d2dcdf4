"""Report intake behind ``POST /reports``: validate, store, and say what happened.

Two implementations, one interface (:class:`Intake`):

* :class:`~tlspin.collector.intake_worker.IntakeProcess` (the default): a worker process
  parses and stores, so validation and database writes run beside the event loop, on another
  core, and a slow commit never stalls the dashboard or other requests;
* :class:`InProcessIntake`: the same work in the app's own process, with group commit
  (:class:`~tlspin.collector.writer.GroupWriter`). An in-memory SQLite database, which
  another process cannot open, always uses it.

Either way a report is acknowledged only once its transaction has committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from tlspin.collector.formats import ParsedReport, parse_report
from tlspin.collector.storage import Database, Stored
from tlspin.collector.writer import GroupWriter

__all__ = [
    "Accepted",
    "AlertFacts",
    "InProcessIntake",
    "Intake",
    "IntakeUnavailable",
    "alert_facts",
]


class IntakeUnavailable(Exception):  # noqa: N818 - names the condition, like TimeoutError
    """The report could not be stored now (the database or the intake worker is down); the
    sender should retry later (503)."""


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What an alert about a stored report says about it."""

    hostname: str
    observed_pins: tuple[str, ...]
    expected_pins: tuple[str, ...]
    issuer: str | None
    app_id: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A stored report: where it went, its format, and what alerts need to know."""

    stored: Stored
    kind: str
    facts: AlertFacts | None


def alert_facts(report: ParsedReport) -> AlertFacts:
    """The alert-relevant facts of *report*."""
    return AlertFacts(
        hostname=report.hostname,
        observed_pins=tuple(report.observed_pins),
        expected_pins=tuple(sorted(set(report.known_pins))),
        issuer=report.issuer,
        app_id=report.app_id,
    )


class Intake(Protocol):
    """Validates and stores report bodies."""

    async def submit(
        self, body: bytes, *, received_at: dt.datetime, client_ip: str | None
    ) -> Accepted:
        """Validate and store *body*; returns once the report is committed.

        Raises:
            ReportError: the body is not a valid report (400, with the reason).
            IntakeUnavailable: it could not be stored now (503).
        """
        ...

    async def aclose(self) -> None:
        """Finish what is in flight and release the resources."""
        ...


class InProcessIntake:
    """Parses on the event loop and stores through a :class:`GroupWriter`.

    Args:
        db: where to store.
        facts: include :class:`AlertFacts` in each result (when alerts are configured).
    """

    def __init__(self, db: Database, *, facts: bool = False) -> None:
        self._writer = GroupWriter(db)
        self._facts = facts

    async def submit(
        self, body: bytes, *, received_at: dt.datetime, client_ip: str | None
    ) -> Accepted:
        """See :meth:`Intake.submit`."""
        report = parse_report(body)
        try:
            stored = await self._writer.store(report, received_at=received_at,
                                              client_ip=client_ip)
        except Exception as exc:
            raise IntakeUnavailable(str(exc)) from exc
        return Accepted(stored, report.kind, alert_facts(report) if self._facts else None)

    async def aclose(self) -> None:
        """Finish the queued reports, then stop the writer."""
        await asyncio.to_thread(self._writer.close)
