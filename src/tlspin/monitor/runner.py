"""Run the monitor: probe every target concurrently, judge each, and loop in daemon mode."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tlspin.monitor.evaluate import EndpointResult, Status, evaluate
from tlspin.monitor.probe import probe
from tlspin.monitor.targets import Target
from tlspin.policy import PinPolicy

__all__ = ["EXIT_CODES", "MonitorRun", "exit_code", "run_forever", "run_once"]

#: Exit status per worst endpoint status (for cron); bad input exits with 64 (EX_USAGE).
EXIT_CODES: Mapping[Status, int] = {"green": 0, "amber": 1, "red": 2}
_RANK: Mapping[Status, int] = {"green": 0, "amber": 1, "red": 2}


@dataclass(frozen=True, slots=True)
class MonitorRun:
    """One pass over every target."""

    run_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    results: tuple[EndpointResult, ...]
    policy_name: str | None = None
    counts: Mapping[Status, int] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """The worst status of any endpoint (green for an empty run)."""
        worst: Status = "green"
        for result in self.results:
            if _RANK[result.status] > _RANK[worst]:
                worst = result.status
        return worst

    def as_dict(self) -> dict[str, Any]:
        """The run's summary row (``monitor_runs``), JSON-ready."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "policy_name": self.policy_name,
            "status": self.status,
            "endpoints": len(self.results),
            "green": self.counts.get("green", 0),
            "amber": self.counts.get("amber", 0),
            "red": self.counts.get("red", 0),
        }


def exit_code(run: MonitorRun) -> int:
    """0 when everything is green, 1 when something is amber, 2 when something is red."""
    return EXIT_CODES[run.status]


def _quiet(policy: PinPolicy) -> PinPolicy:
    # The monitor reports failures itself; the policy's observers (reporters) must not fire
    # for what is only a health probe.
    return PinPolicy(policy.rules, on_expiry=policy.on_expiry)


async def run_once(
    policy: PinPolicy,
    targets: Sequence[Target],
    *,
    context: ssl.SSLContext,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    concurrency: int = 50,
    timeout: float = 10.0,
    warn_days: int = 30,
    on_result: Callable[[EndpointResult], object] | None = None,
    policy_name: str | None = None,
) -> MonitorRun:
    """Probe *targets* (at most *concurrency* at once) and judge each result.

    Args:
        policy: the pin policy.
        targets: the endpoints.
        context: the verifying client context.
        previous: the previous run's results keyed by endpoint (``as_dict`` form).
        concurrency: the maximum number of probes in flight.
        timeout: seconds allowed for the TCP connection, and again for the handshake.
        warn_days: the expiry warning window.
        on_result: called with each result as it completes (progress display).
        policy_name: recorded with the run.

    Returns:
        The run, with results in the order of *targets*.
    """
    quiet = _quiet(policy)
    previous = previous or {}
    limit = asyncio.Semaphore(max(1, concurrency))
    started = dt.datetime.now(dt.UTC)

    async def one(target: Target) -> EndpointResult:
        async with limit:
            outcome = await probe(target, context=context, timeout=timeout)
        result = evaluate(
            outcome, quiet, previous=previous.get(target.endpoint), warn_days=warn_days
        )
        if on_result is not None:
            on_result(result)
        return result

    results = tuple(await asyncio.gather(*(one(t) for t in targets)))
    counts: dict[Status, int] = {s: sum(1 for r in results if r.status == s) for s in EXIT_CODES}
    return MonitorRun(
        run_id=uuid.uuid4().hex,
        started_at=started,
        finished_at=dt.datetime.now(dt.UTC),
        results=results,
        policy_name=policy_name,
        counts=counts,
    )


async def run_forever(
    run: Callable[[], Any],
    *,
    interval: float,
    stop: asyncio.Event,
) -> int:
    """Call the coroutine function *run* every *interval* seconds until *stop* is set.

    Returns:
        The number of completed runs.
    """
    done = 0
    while not stop.is_set():
        await run()
        done += 1
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            continue
    return done
