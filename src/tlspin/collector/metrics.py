"""Prometheus metrics of one collector app (its own registry, so many apps can coexist)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tlspin.collector.storage import Database

if TYPE_CHECKING:
    from tlspin.collector.alerts import AlertSender

__all__ = ["Metrics"]

log = logging.getLogger("tlspin.collector")


class _OpenIncidents(Collector):
    """Reads the open-incident count from the database at scrape time.

    The database is the only shared state, so every collector process reports the same value.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without this the registry would call collect() (a query) when registering.
        yield GaugeMetricFamily("tlspin_open_incidents", "Incidents currently open.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("tlspin_open_incidents", "Incidents currently open.")
        try:
            gauge.add_metric([], float(self._db.open_incidents()))
        except Exception:  # a scrape must not fail because the DB blipped
            log.exception("could not count open incidents for /metrics")
            return
        yield gauge


class _SuppressedAlerts(Collector):
    """Alerts held back by the rate caps and by deduplication, read from the sender."""

    def __init__(self, alerts: AlertSender) -> None:
        self._alerts = alerts

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("tlspin_alerts_suppressed", "Alerts not sent, by reason.",
                                  labels=["reason"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._alerts.stats
        family = CounterMetricFamily("tlspin_alerts_suppressed",
                                     "Alerts not sent, by reason (a rate cap, or a duplicate "
                                     "of an alert sent within the deduplication window).",
                                     labels=["reason"])
        family.add_metric(["cap"], float(stats.capped))
        family.add_metric(["duplicate-or-closed"], float(stats.suppressed - stats.capped))
        yield family


class Metrics:
    """The collector's metrics."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "tlspin_reports_received", "Report requests received.", registry=self.registry
        )
        self.accepted = Counter(
            "tlspin_reports_accepted", "Reports stored, by format.", ["format"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "tlspin_reports_rejected", "Reports refused, by reason.", ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tlspin_intake_seconds", "Time to validate and store one report.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.alerts = Counter(
            "tlspin_alerts", "Alerts queued for webhooks, by kind.", ["kind"],
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "tlspin_connections_refused", "Connections refused or closed by the limits, by "
            "reason (too-many-connections from one IP, slow-head).", ["reason"],
            registry=self.registry,
        )
        self.registry.register(_OpenIncidents(db))
        self._accepted_by_format: dict[str, Counter] = {}

    def count_accepted(self, kind: str) -> None:
        """Count one stored report of format *kind* (one of the parser's few formats).

        The labelled child is looked up once per format: ``labels()`` validates and locks on
        every call, a cost on each report.
        """
        child = self._accepted_by_format.get(kind)
        if child is None:
            child = self._accepted_by_format[kind] = self.accepted.labels(format=kind)
        child.inc()

    def watch_alerts(self, alerts: AlertSender) -> None:
        """Export *alerts*' suppression counts (``tlspin_alerts_suppressed_total``)."""
        self.registry.register(_SuppressedAlerts(alerts))

    def count_refused_connection(self, reason: str) -> None:
        """Count one connection refused or closed by the limits."""
        self.connections_refused.labels(reason=reason).inc()
