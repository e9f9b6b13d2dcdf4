"""When the monitor alerts: an endpoint goes red, or is amber (or red) for a new reason.

The decision compares this run's result with the previous run's, by reason *code* (the text
carries day counts that change daily). Delivery goes through the collector's webhook sender
(:class:`tlspin.collector.alerts.AlertSender`), which deduplicates by key; the key names the
endpoint, the status and the set of reason codes, so a condition that persists across runs, or
is seen again after a lost state file, is sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tlspin.monitor.evaluate import reason_codes

__all__ = ["Alert", "AlertSink", "alert_for", "send_alerts"]

log = logging.getLogger("tlspin.monitor")


class AlertSink(Protocol):
    """Anything with the collector's ``AlertSender.send(kind, key, payload)`` shape."""

    def send(self, kind: str, key: str, payload: dict[str, Any]) -> object:
        """Deliver one alert (deduplicated by *key*)."""
        ...


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert to send.

    Attributes:
        kind: ``"monitor.red"`` or ``"monitor.amber"``.
        key: the deduplication key.
        payload: the JSON body (endpoint, status, reasons, what is new).
    """

    kind: str
    key: str
    payload: dict[str, Any]


def alert_for(
    result: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> Alert | None:
    """Decide whether *result* (``as_dict`` form) warrants an alert, given the previous result.

    Fires when the endpoint turns red, or when it is amber or red with a reason code it did not
    have in the previous run. Nothing fires for green, or for an unchanged condition.
    """
    status = result.get("status")
    if status not in ("amber", "red"):
        return None
    codes = reason_codes(result.get("reasons") or ())
    before_status = previous.get("status") if previous else None
    before = reason_codes(previous.get("reasons") or ()) if previous else frozenset()
    new = codes - before
    if not (status == "red" and before_status != "red") and not new:
        return None
    endpoint = str(result.get("endpoint"))
    payload = {
        "endpoint": endpoint,
        "host": result.get("host"),
        "port": result.get("port"),
        "ip": result.get("ip"),
        "status": status,
        "previous_status": before_status,
        "reasons": list(result.get("reasons") or ()),
        "new_reasons": [
            r for r in result.get("reasons") or () if r.partition(":")[0].strip() in new
        ],
        "matched": list(result.get("matched") or ()),
        "changes": list(result.get("changes") or ()),
        "error": result.get("error"),
        "probed_at": result.get("probed_at"),
    }
    key = f"monitor:{endpoint}:{status}:{','.join(sorted(codes))}"
    return Alert(f"monitor.{status}", key, payload)


def send_alerts(
    results: Iterable[Mapping[str, Any]],
    previous: Mapping[str, Mapping[str, Any]],
    sink: AlertSink,
) -> list[Alert]:
    """Send the alerts this run calls for; a failing delivery is logged, never raised.

    Returns:
        The alerts that were handed to *sink*.
    """
    sent = []
    for result in results:
        alert = alert_for(result, previous.get(str(result.get("endpoint"))))
        if alert is None:
            continue
        try:
            sink.send(alert.kind, alert.key, alert.payload)
        except Exception:
            log.exception(
                "could not send the %s alert for %s", alert.kind, alert.payload["endpoint"]
            )
            continue
        sent.append(alert)
    return sent
