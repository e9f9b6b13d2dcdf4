"""Scan a log (or an export) for certificates that a pinned rule's pins do not accept.

Each log scan resumes where the last one stopped: the state file keeps, per log URL, the next
index to read, the last tree head seen, and the Merkle frontier of every entry read so far. When
a scan reaches the end of the tree it recomputes the Merkle root of *all* entries ever read and
compares it with the signed tree head, so a log cannot show this monitor different entries from
those it signed, across any number of resumed runs. A tree head smaller than a remembered one is
refused as well.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlspin.ct.client import CTError, CTVerificationError, LogClient, SignedTreeHead
from tlspin.ct.entries import CertRecord, CTEntryError, parse_entry
from tlspin.ct.matching import Finding, check_record
from tlspin.ct.merkle import Frontier
from tlspin.monitor.store import StoreError, read_json, write_json_atomic
from tlspin.policy import PinPolicy

__all__ = ["CTState", "ScanReport", "check_records", "scan_log"]


class CTState:
    """Remembered positions per log, in one JSON file.

    Args:
        path: the state file (created on the first save).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        data = read_json(self.path, "CT state file")
        if data is None:
            return {"version": 1, "logs": {}}
        if not isinstance(data, dict) or not isinstance(data.get("logs"), dict):
            raise StoreError(f"CT state file {self.path} has no 'logs' table; fix or remove it")
        return data

    def get(self, log_url: str) -> dict[str, Any] | None:
        """The remembered position of *log_url*, or None."""
        entry = self._load()["logs"].get(log_url)
        return entry if isinstance(entry, dict) else None

    def put(self, log_url: str, entry: dict[str, Any]) -> None:
        """Remember *entry* for *log_url* (atomically; other logs are kept)."""
        data = self._load()
        data["logs"][log_url] = entry
        write_json_atomic(self.path, data)


@dataclass(slots=True)
class ScanReport:
    """The outcome of one scan.

    Attributes:
        source: the log URL or export path.
        start: first index read.
        end: one past the last index read.
        tree_size: the log's tree size (None for exports).
        findings: certificates needing attention, plus unchecked ones.
        malformed: ``(index, error)`` for entries that could not be parsed.
        root_verified: True when the Merkle root of everything read matched the signed tree
            head, False when it did not (the log served entries other than those it signed),
            None when it could not be checked this run (mid-tree stop, or no frontier).
        records: number of certificates read.
    """

    source: str
    start: int = 0
    end: int = 0
    tree_size: int | None = None
    findings: list[Finding] = field(default_factory=list)
    malformed: list[tuple[int | None, str]] = field(default_factory=list)
    root_verified: bool | None = None
    records: int = 0

    @property
    def flagged(self) -> list[Finding]:
        """Findings that need attention (unpinned or denied keys)."""
        return [f for f in self.findings if f.flagged]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "tree_size": self.tree_size,
            "records": self.records,
            "root_verified": self.root_verified,
            "flagged": len(self.flagged),
            "findings": [f.as_dict() for f in self.findings],
            "malformed": [{"index": i, "error": e} for i, e in self.malformed],
        }


def check_records(
    policy: PinPolicy, records: Iterable[CertRecord], *, source: str = ""
) -> ScanReport:
    """Check already-parsed records (an export) against *policy*."""
    report = ScanReport(source)
    for record in records:
        report.records += 1
        finding = check_record(policy, record, source=source)
        if finding is not None:
            report.findings.append(finding)
    return report


def _resume(
    remembered: dict[str, Any] | None, sth: SignedTreeHead, start: int | None
) -> tuple[int, Frontier | None]:
    if remembered is not None:
        size = remembered.get("tree_size")
        if isinstance(size, int) and sth.tree_size < size:
            raise CTVerificationError(
                f"the log's tree shrank from {size} to {sth.tree_size} entries since the last "
                "scan; a log must only grow"
            )
    if start is not None:
        return start, (Frontier() if start == 0 else None)
    if remembered is None:
        return 0, Frontier()
    position = remembered.get("next")
    if not isinstance(position, int) or position < 0:
        raise StoreError(f"the CT state for this log has no valid 'next' index: {position!r}")
    frontier = None
    if remembered.get("frontier") is not None:
        try:
            frontier = Frontier.from_data(remembered["frontier"])
        except ValueError as exc:
            raise StoreError(f"the CT state for this log is damaged: {exc}") from None
        if frontier.size != position:
            frontier = None
    return position, frontier


def scan_log(
    client: LogClient,
    policy: PinPolicy,
    *,
    state: CTState | None = None,
    start: int | None = None,
    max_entries: int | None = None,
    batch_size: int = 256,
    on_batch: Callable[[int, int], object] | None = None,
) -> ScanReport:
    """Read new entries of a log and check each certificate against *policy*.

    Args:
        client: the log client.
        policy: the pin policy.
        state: where positions are remembered; None reads from *start* (or 0) and forgets.
        start: read from this index instead of the remembered one.
        max_entries: stop after this many entries (the rest is read next time).
        batch_size: entries per ``get-entries`` request.
        on_batch: called with ``(next_index, tree_size)`` after each batch.

    Raises:
        CTError: the log is unreachable or malformed.
        CTVerificationError: the tree head or the entries fail verification.
        StoreError: the state file is damaged.
    """
    sth = client.get_sth()
    remembered = state.get(client.url) if state is not None else None
    position, frontier = _resume(remembered, sth, start)
    if position > sth.tree_size:
        raise CTError(
            f"the remembered position {position} is past the log's tree size {sth.tree_size}; "
            "is the state file from another log?"
        )
    end = sth.tree_size if max_entries is None else min(sth.tree_size, position + max_entries)
    report = ScanReport(client.url, start=position, end=position, tree_size=sth.tree_size)

    def remember() -> None:
        if state is not None:
            state.put(client.url, {
                "next": report.end,
                "tree_size": sth.tree_size,
                "root_hash": sth.root_hash.hex(),
                "frontier": frontier.to_data() if frontier is not None else None,
                "updated": dt.datetime.now(dt.UTC).isoformat(),
            })

    while report.end < end:
        upper = min(end, report.end + max(1, batch_size)) - 1
        batch = client.get_entries(report.end, upper)
        if not batch:
            raise CTError(f"get-entries returned no entries for {report.end}..{upper}")
        for leaf_input, extra_data in batch:
            index = report.end
            if frontier is not None:
                frontier.append(leaf_input)
            try:
                record = parse_entry(leaf_input, extra_data, index=index)
            except CTEntryError as exc:
                report.malformed.append((index, str(exc)))
            else:
                report.records += 1
                finding = check_record(policy, record, source=client.url)
                if finding is not None:
                    report.findings.append(finding)
            report.end += 1
        remember()
        if on_batch is not None:
            on_batch(report.end, sth.tree_size)
    if report.end == sth.tree_size and frontier is not None:
        # False is reported, not raised, so the findings of this run are still shown; the
        # frontier keeps the bad leaves, so every later run fails the same check.
        report.root_verified = frontier.root() == sth.root_hash
    remember()
    return report
