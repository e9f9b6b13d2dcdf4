"""``tlspin demo``: pinning, an attack, reports and a rotation, live on loopback.

Everything runs in this process and binds 127.0.0.1 only: a legitimate HTTPS API with its own
CA, the report collector (SQLite in a temporary directory), and an intercepting proxy whose CA
the client trusts, as on a device where a corporate, malware or compromised CA is installed.

The demo checks every claim it prints (the API received zero bytes on a refusal, the collector
stored the reports...) and exits non-zero if one does not hold. The collector's token is never
printed: it is in a mode-0600 file in the demo's temporary directory, which lasts as long as the
demo runs.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

if TYPE_CHECKING:
    import requests
    from rich.console import Console

    from tlspin.policy import PinPolicy
    from tlspin.reporting import Reporter
    from tlspin.testing.pki import CA, Leaf, PrivateKey
    from tlspin.testing.proxies import MitmProxy
    from tlspin.testing.servers import TLSServer

__all__ = ["Check", "Demo", "run_demo"]

API_HOST = "localhost"
APP_ID = "tlspin-demo"
_BODY = b'{"account": "demo", "balance": 42}'


@dataclass(frozen=True, slots=True)
class Check:
    """One claim the demo made, and whether it held."""

    step: int
    claim: str
    ok: bool


class _Collector:
    """The collector app on uvicorn, in a thread, on an ephemeral loopback port."""

    def __init__(self, db_url: str, token: str) -> None:
        import uvicorn

        from tlspin.collector import Settings, create_app

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        app = create_app(Settings(db_url=db_url, token=token))
        # A bounded graceful shutdown: Ctrl-C must not wait on a browser's idle keep-alive.
        config = uvicorn.Config(
            app, log_level="warning", server_header=False, lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True,
            name="tlspin-demo-collector",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                msg = "the demo collector did not start (see the messages above)"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


@dataclass
class Demo:
    """The running cast: API, attacker proxy, collector, and the client's trust and pins."""

    console: Console
    api_root: CA
    api_intermediate: CA
    leaf: Leaf
    backup_key: PrivateKey
    backup_pin: str
    api: TLSServer
    attacker: MitmProxy
    collector_url: str
    token: str = field(repr=False)
    token_file: Path
    cafile: str
    reporter: Reporter
    sabotage: frozenset[str] = frozenset()
    checks: list[Check] = field(default_factory=list)

    # --- helpers ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The API endpoint the client calls."""
        return f"https://{API_HOST}:{self.api.port}/v1/balance"

    def policy(self, *, mode: str = "enforce", with_backup: bool = True) -> PinPolicy:
        """The app's pins (leaf key + offline backup key), reporting to the collector."""
        from tlspin.policy import PinPolicy, PinRule

        pins = [self.leaf.pin, self.backup_pin] if with_backup else [self.leaf.pin]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the single-pin rule of step 4 is the point
            rule = PinRule(API_HOST, pins, mode=mode)  # type: ignore[arg-type]
        return self.reporter.attach(PinPolicy([rule]))

    def client(self, policy: PinPolicy | None, *, via_attacker: bool = False) -> requests.Session:
        """A fresh app instance: a requests session, pinned unless *policy* is None."""
        import requests

        from tlspin.integrations.requests import session

        if policy is None or "no-pins" in self.sabotage:
            client = requests.Session()
            client.verify = self.cafile
        else:
            client = session(policy, cafile=self.cafile)
        client.trust_env = False  # the demo's own proxy only, never the machine's
        if via_attacker:
            client.proxies = {"https": self.attacker.url}
        return client

    def check(self, step: int, claim: str, ok: bool) -> bool:
        """Record and print one verified claim."""
        self.checks.append(Check(step, claim, ok))
        mark = "[bold green]✓[/]" if ok else "[bold red]✗ FAILED:[/]"
        self.say(f"   {mark} {claim}")
        return ok

    def say(self, text: str) -> None:
        """Print one line (rich markup allowed), never hard-wrapped."""
        self.console.print(text, highlight=False, soft_wrap=True)

    def reports(self, **query: str) -> list[dict[str, Any]]:
        """Reports stored by the collector, through its query API."""
        return self._api("/api/reports", query)

    def incidents(self, **query: str) -> list[dict[str, Any]]:
        """Incidents stored by the collector, through its query API."""
        return self._api("/api/incidents", query)

    def page(self, path: str) -> str:
        """A collector page (HTML or JSON text), fetched with the token."""
        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
            f"{self.collector_url}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(response.read().decode("utf-8"))

    def _api(self, path: str, query: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            self.page(f"{path}?{urllib.parse.urlencode(query)}")
        )["items"]
        return items


def _step(demo: Demo, number: int, title: str, explanation: str) -> None:
    demo.console.print()
    demo.console.rule(f"[bold cyan]Step {number}[/] · [bold]{title}[/]", align="left", style="cyan")
    demo.say(f"[italic]{explanation}[/]")


def _request(demo: Demo, client: requests.Session) -> tuple[int | None, BaseException | None]:
    try:
        with client:
            response = client.get(demo.url, timeout=10)
        return response.status_code, None
    except Exception as exc:  # noqa: BLE001 - the story shows whatever the client raised
        return None, exc


def step_pinned(demo: Demo) -> None:
    """Step 1: the pinned app reaches its API."""
    _step(demo, 1, "Pinned requests succeed",
          "The app pins its API's key plus an offline backup key; the real server matches.")
    demo.say(f"   pinned  [green]{demo.leaf.pin}[/]  (the server's key)")
    demo.say(f"           [green]{demo.backup_pin}[/]  (backup key, kept offline)")
    before = len(demo.api.requests)
    statuses = [_request(demo, demo.client(demo.policy()))[0] for _ in range(2)]
    demo.say(f"   GET {demo.url} → {statuses[0]} {_BODY.decode()}")
    demo.check(1, "two pinned requests answered 200 OK", statuses == [200, 200])
    demo.check(1, "the API received both requests", len(demo.api.requests) - before == 2)


def step_attack(demo: Demo) -> None:
    """Step 2: the same app through the attacker's proxy is refused, and it reports."""
    _step(demo, 2, "An attacker with a trusted CA is refused",
          "A proxy whose CA the device trusts intercepts the traffic: CA checks pass, pins do not.")
    from tlspin.integrations import find_pin_error

    received = len(demo.api.received)
    intercepted = len(demo.attacker.intercepted)
    status, error = _request(demo, demo.client(demo.policy(), via_attacker=True))
    pin_error = find_pin_error(error) if error is not None else None
    if error is not None:
        kind = f"{type(error).__module__}.{type(error).__qualname__}"
        demo.say(f"   the app got [red]{kind}[/]; tlspin's message:")
        for line in str(pin_error or error).splitlines():
            demo.say(f"   [yellow]│ {escape(line)}[/]")
    demo.check(2, "the pinned request was refused with a pinning failure",
               status is None and pin_error is not None)
    demo.api.wait_idle(5)
    demo.attacker.wait_idle(5)
    demo.check(2, "the attacker read no request, and the API received 0 bytes",
               len(demo.attacker.intercepted) == intercepted
               and len(demo.api.received) == received)

    status, _ = _request(demo, demo.client(None, via_attacker=True))
    seen = [line for _, line in demo.attacker.intercepted[intercepted:]]
    demo.say(f"   for contrast, an app without pins through the same proxy → {status}, and the "
             f"attacker read: [red]{', '.join(seen) or '-'}[/]")
    demo.check(2, "without pins the attacker reads the request", status == 200 and bool(seen))

    demo.reporter.flush(10)
    stored = [r for r in demo.reports(host=API_HOST) if r.get("mode") == "enforce"]
    demo.check(2, f"the collector stored the violation report ({len(stored)} enforce report)",
               len(stored) >= 1)


def step_report_only(demo: Demo) -> None:
    """Step 3: a report-only rule lets the request through and reports it."""
    _step(demo, 3, "Report-only: allow, but tell me",
          "Trying new pins? Report-only mode lets failing connections through and reports them.")
    intercepted = len(demo.attacker.intercepted)
    status, error = _request(demo, demo.client(demo.policy(mode="report"), via_attacker=True))
    demo.say(f"   GET through the proxy, report-only rule → {status or type(error).__name__}")
    demo.check(3, "the report-only request went through (200 OK)", status == 200)
    demo.check(3, "the attacker could read it (report-only does not protect)",
               len(demo.attacker.intercepted) > intercepted)
    demo.reporter.flush(10)
    stored = [r for r in demo.reports(host=API_HOST) if r.get("mode") == "report"]
    demo.check(3, "the collector stored a report-only report", len(stored) >= 1)


def step_rotation(demo: Demo) -> None:
    """Step 4: the server moves to the backup key; the pinned app keeps working."""
    from tlspin.integrations import find_pin_error

    _step(demo, 4, "Key rotation to the backup key",
          "The server moves to the backup key the app already pins: nothing breaks.")
    new_leaf = demo.api_intermediate.issue(API_HOST, "127.0.0.1", key=demo.backup_key)
    demo.api.set_leaf(new_leaf)
    demo.say(f"   the API now serves [green]{new_leaf.pin}[/] (the backup key)")
    status, _ = _request(demo, demo.client(demo.policy()))
    demo.check(4, "the app pinned to leaf + backup still gets 200 OK", status == 200)
    demo.check(4, "the served key is the backup key", new_leaf.pin == demo.backup_pin)
    status, error = _request(demo, demo.client(demo.policy(with_backup=False)))
    demo.check(4, "an app that pinned only the old key is refused (why backups matter)",
               status is None and error is not None and find_pin_error(error) is not None)


def step_dashboard(demo: Demo) -> None:
    """Step 5: where the incidents are."""
    _step(demo, 5, "The incidents are on the dashboard",
          "The collector groups reports into incidents by host and keys.")
    demo.reporter.flush(10)
    incidents = demo.incidents(host=API_HOST)
    demo.check(5, f"the collector holds {len(incidents)} open incident(s) for {API_HOST}",
               len(incidents) >= 1)
    html = demo.page("/dashboard")
    demo.check(5, "the dashboard lists them", all(f'/incidents/{i["id"]}"' in html
                                                   for i in incidents) and bool(incidents))
    demo.say(f"   dashboard  [bold underline]{demo.collector_url}/dashboard[/]")
    # The path, never the token: terminal scroll-back and recordings outlive the demo.
    demo.say(f"   log in at  {demo.collector_url}/login")
    demo.say(f"   token: in  {escape(str(demo.token_file))}  (mode 0600)")
    demo.say("   [dim](generated for this run; the file goes away when the demo stops)[/]")


STEPS: tuple[Callable[[Demo], None], ...] = (
    step_pinned, step_attack, step_report_only, step_rotation, step_dashboard,
)


@contextlib.contextmanager
def running_demo(console: Console, *, sabotage: frozenset[str] = frozenset()) -> Iterator[Demo]:
    """Start the API, the attacker and the collector; stop them all afterwards."""
    from tlspin.collector.tokenfile import create_token_file
    from tlspin.reporting import Reporter
    from tlspin.testing.pki import CA, backup_key
    from tlspin.testing.proxies import MitmProxy
    from tlspin.testing.servers import TLSServer

    with tempfile.TemporaryDirectory(prefix="tlspin-demo-") as tmp:
        root = CA.root("Demo Bank Root CA")
        intermediate = root.intermediate("Demo Bank Issuing CA")
        leaf = intermediate.issue(API_HOST, "127.0.0.1")
        key, _ = backup_key(names=(API_HOST,))
        attacker_ca = CA.root("Totally Legit Inspection CA")
        cafile = Path(tmp, "device-trust-store.pem")
        cafile.write_bytes(root.cert_pem + attacker_ca.cert_pem)
        token_file = Path(tmp, "collector.token")
        token = create_token_file(token_file)
        collector = _Collector(f"sqlite:///{Path(tmp, 'collector.db')}", token)
        collector.start()
        reporter = Reporter(f"{collector.url}/reports", app_id=APP_ID, dedup_window=0.0)
        api = TLSServer(leaf, host="127.0.0.1", response_body=_BODY).start()
        attacker = MitmProxy(ca=attacker_ca, upstream_ca=root).start()
        try:
            yield Demo(
                console=console, api_root=root, api_intermediate=intermediate, leaf=leaf,
                backup_key=key, backup_pin=_backup_pin(key), api=api, attacker=attacker,
                collector_url=collector.url, token=token, token_file=token_file,
                cafile=str(cafile),
                reporter=reporter, sabotage=sabotage,
            )
        finally:
            reporter.close(5)
            attacker.stop()
            api.stop()
            collector.stop()


def _backup_pin(key: PrivateKey) -> str:
    from tlspin.pins import Pin

    return str(Pin.from_public_key(key.public_key()))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Make Ctrl-C and SIGTERM stop the demo cleanly (servers stopped, token file removed).

    Installed explicitly because a program started from a non-interactive shell's background
    job inherits SIGINT as *ignored*, and Python then installs no KeyboardInterrupt handler.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)


def run_demo(
    *, once: bool, console: Console, sabotage: frozenset[str] = frozenset()
) -> int:
    """Tell the story; with *once* return at the end, otherwise serve until Ctrl-C.

    Args:
        once: exit after the story instead of serving the dashboard.
        console: where to print.
        sabotage: for tests only: ``{"no-pins"}`` makes the app unpinned, so that the demo's
            own checks must fail.

    Returns:
        0 when every claim held, 1 otherwise.
    """
    console.print("[bold]tlspin demo[/] · public-key pinning, live on 127.0.0.1", highlight=False)
    with running_demo(console, sabotage=sabotage) as demo:
        demo.say(f"[dim]the API {demo.url}, an attacker's proxy {demo.attacker.url}, "
                 f"the report collector {demo.collector_url}[/]")
        for number, step in enumerate(STEPS, 1):
            try:
                step(demo)
            except Exception as exc:  # noqa: BLE001 - a broken step is a failed claim, not a crash
                demo.check(number, f"the step ran to the end ({type(exc).__name__}: {exc})", False)
        failed = [c for c in demo.checks if not c.ok]
        console.print()
        if failed:
            console.print(f"[bold red]{len(failed)} of {len(demo.checks)} checks failed.[/]")
        else:
            console.print(f"[bold green]All {len(demo.checks)} checks passed.[/]")
        if not once:
            _stop_on_signals()
            # Ctrl-C may come as soon as the line is printed: be inside the handler by then.
            with contextlib.suppress(KeyboardInterrupt):
                demo.say(f"Serving the dashboard at {demo.collector_url}/dashboard (token in "
                         f"{escape(str(demo.token_file))}); press Ctrl-C to stop.")
                while True:
                    time.sleep(3600)
        return 1 if failed else 0
