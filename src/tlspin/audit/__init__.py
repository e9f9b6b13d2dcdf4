"""``tlspin audit``: run any program through a forging proxy and see which hosts it pins.

The program runs with ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` pointing at a loopback
proxy, and with that proxy's CA made trusted through ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE`` and ``NODE_EXTRA_CA_CERTS``. For each CONNECT the proxy presents a
certificate forged for the host and signed by its CA, and records what the program did. Each
verdict names its evidence:

* any application byte through the forged session, whatever the protocol → **not pinned**
  (anyone whose CA the program trusts can read its traffic);
* an unencrypted ``http://`` request (or plain HTTP through a tunnel) → **plaintext**;
* the program aborts the handshake with a TLS alert → **refused** (a pin check inside the
  handshake, or the program does not trust the audit CA at all: the alert tells which);
* it completes the handshake, then rejects the certificate with a TLS alert before any byte →
  **pinned**;
* anything that proves neither → **inconclusive**. That includes a program that completes the
  handshake and closes without a byte: the post-handshake key check of curl's
  ``--pinnedpubkey``, tlspin and OkHttp looks exactly like that, but so does a program that had
  nothing to send, or whose bytes never arrived. Absence of data is not proof.

The proof is a **control run** (on by default with *expect_pinned*; see `tlspin.audit._control`
for what it proves and what it cannot): when an expected host was only *quiet* (it saw the
forgery and sent neither a byte nor an alert), the program runs again with that host's
connections passed, unchanged and undecrypted, to the genuine server at the address the audit
forwards to anyway; then a third time with the forgery. A host that sends application data to
the genuine server, and nothing through the forgery before and after, is **pinned**: the
certificate made the difference. With ``control_cert``/``control_key`` (the genuine certificate
and key), the control run presents them instead of passing connections through.

Only request lines are kept, with the query string blanked: never headers or bodies.

Safety: the proxy connects upstream only to loopback addresses (``localhost``, loopback IP
literals, and names mapped by *resolve* to loopback), in every run. It never resolves other
names; a request for anywhere else is answered with 502 and reported, and that host is never
contacted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from tlspin.audit._control import PINNED_BY_CONTROL, Run, RunKind, control_targets, settle
from tlspin.audit._proxy import AuditProxy, Connection
from tlspin.audit._wire import FORGED_ALPN

__all__ = [
    "AuditProxy",
    "AuditReport",
    "Connection",
    "Expectation",
    "HostReport",
    "HostVerdict",
    "Run",
    "audit_environment",
    "loopback_address",
    "run_audit",
    "summarize",
    "write_trust_bundle",
]

HostVerdict = Literal["not-pinned", "plaintext", "inconclusive", "pinned", "refused"]
ExpectationStatus = Literal["met", "not-pinned", "inconclusive"]

#: Environment variables that point at the proxy, and those that make its CA trusted.
PROXY_VARIABLES = (
    "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy",
)
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
# Bypass lists would let the program skip the proxy (curl and requests honour them).
_BYPASS_VARIABLES = ("NO_PROXY", "no_proxy")
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)


def loopback_address(value: str) -> str:
    """Return *value* if it is a loopback IP literal (127.0.0.0/8 or ::1).

    Raises:
        ValueError: *value* is not a loopback IP address.
    """
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise ValueError(
            f"expected a loopback IP address (127.0.0.1, ::1), found {value!r}"
        ) from None
    if not address.is_loopback:
        raise ValueError(
            f"the audit only ever connects to loopback: expected a loopback address "
            f"(127.0.0.0/8 or ::1), found {value!r}"
        )
    return str(address)


@dataclass(frozen=True, slots=True)
class HostReport:
    """What the program did with one host:port.

    Attributes:
        host: the host name (or address) the program asked the proxy for.
        port: the port.
        verdict: the worst of its connections' verdicts: ``"not-pinned"``, ``"plaintext"``,
            ``"inconclusive"``, ``"pinned"``, ``"refused"`` (in that order).
        connections: how many connections the program made to it.
        requests: request lines it sent (query strings blanked), first per connection.
        details: the evidence behind each connection's verdict (distinct texts), and the
            control run's conclusion when there was one.
        upstream: what the proxy did upstream (forwarded, passed through, failed or not
            contacted, and why).

    With a control run, *connections*, *requests* and the verdicts count every connection that
    met a forged certificate, in every run; the control run's own connections to the genuine
    server show in *details* and *upstream*, marked "control run:".
    """

    host: str
    port: int
    verdict: HostVerdict
    connections: int
    requests: tuple[str, ...] = ()
    details: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        """True when every connection refused the forgery, with evidence (an alert)."""
        return self.verdict in ("pinned", "refused")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "host": self.host,
            "port": self.port,
            "verdict": self.verdict,
            "pinned": self.pinned,
            "connections": self.connections,
            "requests": list(self.requests),
            "details": list(self.details),
            "upstream": list(self.upstream),
        }


@dataclass(frozen=True, slots=True)
class Expectation:
    """The outcome of one ``--expect-pinned HOST``.

    Attributes:
        host: the host expected to be pinned.
        status: ``"met"`` (every connection refused the forgery, with an alert as evidence),
            ``"not-pinned"`` (bytes went through the forgery, or plain HTTP) or
            ``"inconclusive"`` (no evidence either way, or never contacted).
        reason: the evidence, in words.
    """

    host: str
    status: ExpectationStatus
    reason: str

    @property
    def met(self) -> bool:
        """True when the host was shown to be pinned."""
        return self.status == "met"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"host": self.host, "met": self.met, "status": self.status, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of auditing a program: one run, or three with a control run.

    *exit_code* and *timed_out* are the first (forged) run's and whether any run was killed;
    *runs* lists each run.
    """

    command: tuple[str, ...]
    exit_code: int | None
    hosts: tuple[HostReport, ...]
    expectations: tuple[Expectation, ...] = ()
    timed_out: bool = False
    elapsed: float = 0.0
    runs: tuple[Run, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every ``--expect-pinned`` host was shown to be pinned."""
        return all(e.met for e in self.expectations)

    @property
    def status(self) -> ExpectationStatus:
        """``"not-pinned"`` if any expected host is not pinned, else ``"inconclusive"`` if any
        is inconclusive, else ``"met"`` (also with no expectations)."""
        statuses = {e.status for e in self.expectations}
        for status in ("not-pinned", "inconclusive"):
            if status in statuses:
                return status
        return "met"

    def host(self, name: str) -> HostReport | None:
        """The first report for host *name* (any port), or None if it was never contacted."""
        wanted = _norm(name)
        return next((h for h in self.hosts if _norm(h.host) == wanted), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output)."""
        return {
            "command": list(self.command),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "elapsed_seconds": round(self.elapsed, 3),
            "runs": [run.to_json() for run in self.runs],
            "hosts": [h.to_json() for h in self.hosts],
            "expectations": [e.to_json() for e in self.expectations],
            "ok": self.ok,
            "status": self.status,
        }


def _norm(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


_RANK: dict[str, int] = {
    "not-pinned": 4, "plaintext": 3, "inconclusive": 2, "pinned": 1, "refused": 0,
}


def summarize(connections: Iterable[Connection]) -> tuple[HostReport, ...]:
    """Group connections by host:port; the worst outcome decides each host's verdict.

    Control-run connections to the genuine server prove nothing by themselves and are left out.
    """
    groups: dict[tuple[str, int], list[Connection]] = {}
    for conn in connections:
        if not conn.control:
            groups.setdefault((_norm(conn.host), conn.port), []).append(conn)
    reports = []
    for (host, port), conns in groups.items():
        verdicts: list[HostVerdict] = [c.verdict for c in conns]
        worst = max(verdicts, key=lambda v: _RANK[v])
        reports.append(
            HostReport(
                host=host,
                port=port,
                verdict=worst,
                connections=len(conns),
                requests=tuple(c.request_line for c in conns if c.request_line is not None),
                details=tuple(dict.fromkeys(c.detail for c in conns if c.detail)),
                upstream=tuple(dict.fromkeys(c.upstream for c in conns if c.upstream)),
            )
        )
    return tuple(sorted(reports, key=lambda r: (r.host, r.port)))


def _expectations(hosts: Sequence[HostReport], expected: Iterable[str]) -> tuple[Expectation, ...]:
    out = []
    for name in dict.fromkeys(expected):
        matching = [h for h in hosts if _norm(h.host) == _norm(name)]
        if not matching:
            out.append(Expectation(
                name, "inconclusive", "no evidence: the program never connected to it through "
                "the proxy"))
            continue
        verdicts = {h.verdict for h in matching}
        evidence = "; ".join(dict.fromkeys(d for h in matching for d in h.details))
        if verdicts & {"not-pinned", "plaintext"}:
            bad = [h for h in matching if h.verdict in ("not-pinned", "plaintext")]
            sent = sum(len(h.requests) for h in bad)
            out.append(Expectation(
                name, "not-pinned", f"not pinned: {sent} request(s) went through the forgery or "
                f"in plaintext ({evidence})"))
        elif "inconclusive" in verdicts:
            out.append(Expectation(name, "inconclusive", f"inconclusive: {evidence}"))
        else:
            # A control run's conclusion says all (the forged run's own caveats included).
            settled = [d for h in matching for d in h.details if d.startswith(PINNED_BY_CONTROL)]
            out.append(Expectation(
                name, "met", "; ".join(settled) if settled else
                f"{', '.join(sorted(verdicts))}: {evidence}"))
    return tuple(out)


def write_trust_bundle(
    ca_pem: bytes, directory: str | os.PathLike[str], *, base_env: Mapping[str, str] | None = None
) -> Path:
    """Write the audit CA, plus the CAs the program trusted before, into a PEM bundle.

    Keeping the usual CAs means connections that bypass the proxy still verify as before.
    Certificates are de-duplicated, since the variables often name the same file.
    """
    env = os.environ if base_env is None else base_env
    paths = ssl.get_default_verify_paths()
    candidates = [env.get(name) for name in TRUST_VARIABLES] + [paths.cafile, paths.openssl_cafile]
    blocks: dict[bytes, None] = {ca_pem.strip() + b"\n": None}
    for candidate in dict.fromkeys(os.path.realpath(c) for c in candidates if c):
        with contextlib.suppress(OSError):
            data = Path(candidate).read_bytes()
            for match in _PEM_CERT.finditer(data):
                blocks.setdefault(match.group(0).strip() + b"\n", None)
    bundle = Path(directory) / "tlspin-audit-ca-bundle.pem"
    bundle.write_bytes(b"".join(blocks))
    return bundle


def audit_environment(
    proxy_url: str, bundle: str | os.PathLike[str], base_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The program's environment: proxy variables, trust variables, no bypass list."""
    env = dict(os.environ if base_env is None else base_env)
    for name in _BYPASS_VARIABLES:
        env.pop(name, None)
    for name in PROXY_VARIABLES:
        env[name] = proxy_url
    for name in TRUST_VARIABLES:
        env[name] = str(bundle)
    # Node 24+ honours the proxy variables only when asked to.
    env["NODE_USE_ENV_PROXY"] = "1"
    return env


def run_audit(
    command: Sequence[str],
    *,
    resolve: Mapping[str, str] | None = None,
    upstream_cafile: str | os.PathLike[str] | None = None,
    expect_pinned: Iterable[str] = (),
    timeout: float | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    base_env: Mapping[str, str] | None = None,
    control_run: bool | None = None,
    control_cert: str | os.PathLike[str] | None = None,
    control_key: str | os.PathLike[str] | None = None,
) -> AuditReport:
    """Run *command* through a forging proxy and report, per host, whether it is pinned.

    Args:
        command: the program and its arguments.
        resolve: host name → loopback address, for forwarding requests upstream.
        upstream_cafile: CA bundle trusted when forwarding to the real (loopback) server;
            default: the system store.
        expect_pinned: hosts that must turn out pinned (see `AuditReport.ok`).
        timeout: seconds after which the program is killed (per run).
        stdout: where the program's standard output goes (default: inherited).
        stderr: where the program's standard error goes (default: inherited).
        base_env: environment to start from (default: ``os.environ``).
        control_run: settle quiet hosts with a control run (the program then runs up to three
            times). Default: on when *expect_pinned* or *control_cert* is given; with
            *expect_pinned*, only the expected hosts are settled.
        control_cert: the genuine certificate chain (PEM) of the audited host(s), presented in
            the control run instead of passing connections through to the genuine server.
        control_key: the private key (PEM) of *control_cert*.

    Raises:
        OSError: the program could not be started, or the control files cannot be read.
        ValueError: a *resolve* address is not loopback, only one control file is given, or
            *control_cert* comes with ``control_run=False``.
    """
    if not command:
        msg = "expected a command to audit, found none"
        raise ValueError(msg)
    if (control_cert is None) != (control_key is None):
        msg = "give both the control certificate and its key, or neither"
        raise ValueError(msg)
    if control_cert is not None and control_run is False:
        msg = "a control certificate is for the control run, which is turned off"
        raise ValueError(msg)
    expected = tuple(dict.fromkeys(expect_pinned))
    if control_run is None:
        control_run = bool(expected) or control_cert is not None
    mapping = {_norm(k): loopback_address(v) for k, v in (resolve or {}).items()}
    present = None if control_cert is None else _control_context(control_cert, control_key)
    started = time.monotonic()
    options: dict[str, Any] = {
        "resolve": mapping, "upstream_cafile": upstream_cafile, "timeout": timeout,
        "stdout": stdout, "stderr": stderr, "base_env": base_env,
    }
    first, connections = _run(command, "forged", **options)
    runs = [first]
    hosts = summarize(connections)
    targets = control_targets(hosts, connections, expected) if control_run else frozenset()
    if targets:
        control, seen = _run(command, "control", control=targets, present=present, **options)
        runs.append(control)
        genuine = [c for c in seen if c.control]
        forged = connections + [c for c in seen if not c.control]
        confirmation = None
        if any(c.sent for c in genuine):
            # Only when the genuine run showed data: the refusal must be seen again after it.
            confirm, confirmation = _run(command, "confirmation", **options)
            runs.append(confirm)
            forged += confirmation
        hosts = settle(summarize(forged), targets, genuine=genuine, confirmation=confirmation,
                       runs=runs, certificate=present is not None)
    return AuditReport(
        command=tuple(command),
        exit_code=first.exit_code,
        hosts=hosts,
        expectations=_expectations(hosts, expected),
        timed_out=any(run.timed_out for run in runs),
        elapsed=time.monotonic() - started,
        runs=tuple(runs),
    )


def _control_context(
    cert: str | os.PathLike[str], key: str | os.PathLike[str] | None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(list(FORGED_ALPN))  # as offered with forged certificates
    ctx.num_tickets = 0  # as for forged certificates: nothing left unread when a client closes
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def _run(
    command: Sequence[str],
    kind: RunKind,
    *,
    resolve: Mapping[str, str],
    upstream_cafile: str | os.PathLike[str] | None,
    timeout: float | None,
    stdout: IO[Any] | int | None,
    stderr: IO[Any] | int | None,
    base_env: Mapping[str, str] | None,
    control: Collection[tuple[str, int]] = (),
    present: ssl.SSLContext | None = None,
) -> tuple[Run, list[Connection]]:
    """Run the program once through a proxy; return how the run ended and the connections the
    proxy saw."""
    with AuditProxy(
        resolve=resolve, upstream_cafile=upstream_cafile, control=control, present=present
    ) as proxy, tempfile.TemporaryDirectory(prefix="tlspin-audit-") as tmp:
        bundle = write_trust_bundle(proxy.ca_pem, tmp, base_env=base_env)
        env = audit_environment(proxy.url, bundle, base_env)
        timed_out = False
        # Running the user's own command is the point of the audit.
        with subprocess.Popen(  # noqa: S603
            list(command), env=env, stdout=stdout, stderr=stderr
        ) as child:
            try:
                code: int | None = child.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                child.kill()
                child.wait()
                code = None
        # The program is gone, so its sockets are closed; let the proxy record how they ended.
        proxy.wait_idle(5.0)
        return Run(kind, code, timed_out), proxy.connections
