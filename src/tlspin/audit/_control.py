"""The control run of ``tlspin audit``: proof of a pin where the forged run saw only silence.

A client that checks pins after the handshake (tlspin's blocking clients, curl
``--pinnedpubkey``, OkHttp) completes the forged handshake and hangs up without a byte, and an
asyncio client may hang up inside it; so does a program with nothing to send. One run cannot
tell them apart, so such a host is *quiet* and inconclusive. The control run changes one thing,
the certificate, and looks at what the program does:

1. **forged run**: every connection to HOST:PORT saw the forged certificate and sent neither a
   byte nor an alert (or refused it with an alert);
2. **control run**: the program runs again, and its connections to HOST:PORT go to the genuine
   server (passed through unchanged, to the address the audit forwards to anyway) or, with
   ``--control-cert``, to the genuine certificate. It must send application data there;
3. **confirmation run**: the program runs a third time with the forgery, and again sends nothing
   through it.

Only all three make HOST:PORT **pinned**: the program sent data when, and only when, the
certificate was genuine. The confirmation run is why a program that is quiet on its first run
for some other reason (a cold cache, a first-run set-up, a fluke) is not taken for a pinned one:
the refusal must be seen on both sides of the genuine run. What no number of runs can rule out
is a program that behaves differently between runs on purpose (it can tell it is being audited:
the proxy variables and the CA bundle are there to see).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from tlspin.audit._wire import PASSED_THROUGH, norm_host

if TYPE_CHECKING:
    from tlspin.audit import HostReport, HostVerdict
    from tlspin.audit._proxy import Connection

__all__ = ["PINNED_BY_CONTROL", "Run", "RunKind", "control_targets", "refused_forgery", "settle"]

#: How the evidence of a host that a control run proved pinned begins.
PINNED_BY_CONTROL = "pinned, by control"

RunKind = Literal["forged", "control", "confirmation"]


@dataclass(frozen=True, slots=True)
class Run:
    """One run of the audited program.

    Attributes:
        kind: ``"forged"`` (the audit itself), ``"control"`` (the genuine server for the quiet
            hosts) or ``"confirmation"`` (the forgery again).
        exit_code: the program's exit status, None when it was killed.
        timed_out: True when it was killed after ``timeout`` seconds.
    """

    kind: RunKind
    exit_code: int | None
    timed_out: bool = False

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"kind": self.kind, "exit_code": self.exit_code, "timed_out": self.timed_out}


def refused_forgery(connections: Collection[Connection]) -> bool:
    """True when there are connections and each refused the forgery with an alert or was quiet
    (saw it, then sent neither a byte nor an alert)."""
    return bool(connections) and all(
        c.quiet or c.verdict in ("pinned", "refused") for c in connections)


def control_targets(
    hosts: Iterable[HostReport], connections: Iterable[Connection], expected: Collection[str]
) -> frozenset[tuple[str, int]]:
    """The host:port pairs a control run can settle: inconclusive, and only because they were
    quiet. With *expected* names, only theirs (the run is for them)."""
    conns = list(connections)
    wanted = {norm_host(name) for name in expected}
    targets = set()
    for host in hosts:
        if host.verdict != "inconclusive" or (wanted and host.host not in wanted):
            continue
        mine = [c for c in conns if (norm_host(c.host), c.port) == (host.host, host.port)]
        if refused_forgery(mine):
            targets.add((host.host, host.port))
    return frozenset(targets)


def _key(conn: Connection) -> tuple[str, int]:
    return norm_host(conn.host), conn.port


def settle(
    hosts: Sequence[HostReport],
    targets: Collection[tuple[str, int]],
    *,
    genuine: Sequence[Connection],
    confirmation: Sequence[Connection] | None,
    runs: Sequence[Run],
    certificate: bool,
) -> tuple[HostReport, ...]:
    """Apply the control and confirmation runs to the quiet hosts (see the module docstring).

    Args:
        hosts: the hosts, summarized over every connection that met a forgery, in all runs.
        targets: the host:port pairs the control run passed to the genuine server.
        genuine: the control run's connections to the genuine server (or certificate).
        confirmation: the confirmation run's connections, None when it did not run.
        runs: the runs, for their exit statuses.
        certificate: True when the control run presented ``--control-cert`` instead of
            passing connections through.
    """
    statuses = ", ".join(f"{run.kind} run: {_status(run)}" for run in runs)
    genuine_name = "the genuine certificate (--control-cert)" if certificate else (
        "the genuine server")
    out = []
    for host in hosts:
        key = (host.host, host.port)
        if key not in targets or host.verdict != "inconclusive":
            out.append(host)
            continue
        mine = [c for c in genuine if _key(c) == key]
        seen = tuple(dict.fromkeys(f"control run: {c.detail}" for c in mine if c.detail))
        upstream = tuple(dict.fromkeys(f"control run: {c.upstream}" for c in mine if c.upstream))
        sent = sum(c.sent for c in mine)
        again = None if confirmation is None else [c for c in confirmation if _key(c) == key]
        verdict: HostVerdict
        if not mine:
            verdict, note = "inconclusive", (
                f"control run: the program did not connect to {host.host}:{host.port} again, "
                "so nothing settles it")
        elif not certificate and not any(c.upstream.startswith(PASSED_THROUGH) for c in mine):
            verdict, note = "inconclusive", (
                "control run: the genuine server could not be reached (see upstream), so "
                "nothing settles it")
        elif sent == 0:
            verdict, note = "inconclusive", (
                f"control run: no application data to {genuine_name} either: the program had "
                "nothing to send, or it refuses the genuine server too (a wrong pin?); no proof "
                "of a pin")
        elif not again:
            verdict, note = "inconclusive", (
                f"control run: the program sent {sent} byte(s) of application data to "
                f"{genuine_name}, but did not connect to {host.host}:{host.port} in the "
                "confirmation run, so its refusal of the forgery was not seen twice")
        elif not refused_forgery(again):
            verdict, note = "inconclusive", (
                f"control run: the program sent {sent} byte(s) of application data to "
                f"{genuine_name}, but in the confirmation run it did not refuse the forgery "
                "again")
        else:
            records = sum(c.records for c in mine)
            how = f" in {records} encrypted record(s)" if records else ""
            verdict, note = "pinned", (
                f"{PINNED_BY_CONTROL}: the program sent nothing through the forged certificate "
                f"(forged and confirmation runs) and {sent} byte(s) of application data{how} to "
                f"{genuine_name} (control run); {statuses}")
        out.append(replace(
            host, verdict=verdict, details=(*host.details, *seen, note),
            upstream=(*host.upstream, *upstream),
        ))
    return tuple(out)


def _status(run: Run) -> str:
    return "killed (timeout)" if run.timed_out else f"exit status {run.exit_code}"
