"""Pin-health monitor: probe pinned endpoints, judge them green/amber/red, store and alert.

Typical use (what ``tlspin monitor`` does)::

    policy = PinPolicy.load("pins.toml")
    targets = load_targets(policy, "endpoints.toml")
    run = asyncio.run(run_once(policy, targets, context=verified_context()))
    for result in run.results:
        print(result.target.endpoint, result.status, result.reasons)

Modules: :mod:`~tlspin.monitor.targets` (what to probe), :mod:`~tlspin.monitor.probe` (asyncio
TLS probe), :mod:`~tlspin.monitor.evaluate` (status and reasons),
:mod:`~tlspin.monitor.runner` (concurrency, daemon loop), :mod:`~tlspin.monitor.store`
(previous run, collector database), :mod:`~tlspin.monitor.alerts` (webhook alerts).
"""

from __future__ import annotations

from tlspin.monitor.alerts import Alert, alert_for, send_alerts
from tlspin.monitor.evaluate import EndpointResult, evaluate
from tlspin.monitor.probe import ProbeResult, probe, verified_context
from tlspin.monitor.runner import EXIT_CODES, MonitorRun, exit_code, run_forever, run_once
from tlspin.monitor.store import CollectorStore, DatabaseStore, StateFile, StoreError
from tlspin.monitor.targets import Target, load_targets, policy_targets

__all__ = [
    "EXIT_CODES",
    "Alert",
    "CollectorStore",
    "DatabaseStore",
    "EndpointResult",
    "MonitorRun",
    "ProbeResult",
    "StateFile",
    "StoreError",
    "Target",
    "alert_for",
    "evaluate",
    "exit_code",
    "load_targets",
    "policy_targets",
    "probe",
    "run_forever",
    "run_once",
    "send_alerts",
    "verified_context",
]
