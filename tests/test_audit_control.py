"""`tlspin audit`'s control run: "pinned" proven without the server's key, on real programs.

A client that checks its pins after the handshake (tlspin's blocking clients, curl
``--pinnedpubkey``) or hangs up inside it (tlspin's asyncio path) is only *quiet* through the
forgery. The control run passes its connections, undecrypted, to the genuine loopback server
and counts the application-data records it sends there; a confirmation run with the forgery
must then see it refuse again. Each program here trusts the genuine server's CA
(``SSL_CERT_FILE`` and friends), as a deployed program does, so only pins make the difference.

The hostile programs try to turn the control run into a false "pinned": changing behaviour
between runs, another port, another server name, records without a handshake, a protocol the
forgery did not offer, a server that speaks first, a cipher the forgery cannot do, and names
that are not loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tlspin.testing.pki import CA, Leaf, server_context
from tlspin.testing.servers import TLSServer

HOST = "api.control.test"
CURL = os.environ.get("TLSPIN_CURL") or shutil.which("curl")

PINNED_URLLIB = f"""
import sys, urllib.request, tlspin
policy = tlspin.PinPolicy.from_mapping({{"{HOST}": sys.argv[2:]}})
with urllib.request.urlopen(sys.argv[1], context=tlspin.create_context(policy), timeout=10) as r:
    print(r.status, r.read().decode())
"""

PINNED_REQUESTS = f"""
import sys, tlspin
from tlspin.integrations.requests import session
policy = tlspin.PinPolicy.from_mapping({{"{HOST}": sys.argv[2:]}})
print(session(policy).get(sys.argv[1], timeout=10).status_code)
"""

# tlspin's asyncio path: CONNECT through HTTPS_PROXY, then a pinned start_tls.
PINNED_ASYNCIO = f"""
import asyncio, os, sys, urllib.parse, tlspin
from tlspin.integrations.stdlib import open_tunnel

async def main():
    url = urllib.parse.urlsplit(sys.argv[1])
    proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    policy = tlspin.PinPolicy.from_mapping({{"{HOST}": sys.argv[2:]}})
    reader, writer = await open_tunnel(proxy.hostname, proxy.port, url.hostname, url.port, policy)
    head = f"GET {{url.path}} HTTP/1.1\\r\\nHost: {HOST}\\r\\nConnection: close\\r\\n\\r\\n"
    writer.write(head.encode())
    print((await reader.readline()).decode().strip())
    writer.close()

asyncio.run(main())
"""

PLAIN_URLLIB = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    print(r.status, r.read().decode())
"""

# A raw TLS client through HTTPS_PROXY for the cases no library produces on purpose. argv: MODE
# HOST:PORT STATE-FILE [EXTRA]; the state file counts the runs, for the programs that change.
RAW = r"""
import os, socket, ssl, sys
mode, target, state = sys.argv[1:4]
run = int(open(state).read()) if os.path.exists(state) else 0
open(state, "w").write(str(run + 1))
host = target.rsplit(":", 1)[0].strip("[]")
proxy = os.environ["HTTPS_PROXY"].rsplit("/", 1)[-1].rsplit(":", 1)

def tunnel(to):
    sock = socket.create_connection((proxy[0], int(proxy[1])), timeout=20)
    sock.sendall(f"CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("the proxy hung up")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ConnectionError("the proxy said " + answer.split(b"\r\n")[0].decode())
    return sock

def request(tls):
    tls.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    tls.recv(100)

def quiet(to=target, name=host):
    # Handshake, then hang up without a byte: what a post-handshake pin check looks like.
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.wrap_socket(tunnel(to), server_hostname=name).close()

ctx = ssl.create_default_context()
if mode == "silent":
    ctx.wrap_socket(tunnel(target), server_hostname=host).close()
elif mode == "first-run-quiet":
    tls = ctx.wrap_socket(tunnel(target), server_hostname=host)
    if run > 0:
        request(tls)
    tls.close()
elif mode == "other-port":
    if run == 0:
        quiet()
    else:
        tls = ctx.wrap_socket(tunnel(f"{host}:{sys.argv[4]}"), server_hostname=host)
        request(tls)
elif mode == "other-sni":
    if run == 0:
        quiet()
    else:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        request(ctx.wrap_socket(tunnel(target), server_hostname="other.control.test"))
elif mode == "fake-records":
    if run == 0:
        quiet()
    else:  # "application data" records with no handshake at all
        sock = tunnel(target)
        sock.sendall(b"\x17\x03\x03\x00\x40" + b"\x01" * 64)
        sock.close()
elif mode in ("h2-only", "custom-alpn"):
    # An unpinned client that needs its protocol: without it, it hangs up after the handshake.
    wanted = "h2" if mode == "h2-only" else "x-custom"
    ctx.set_alpn_protocols([wanted])
    tls = ctx.wrap_socket(tunnel(target), server_hostname=host)
    if tls.selected_alpn_protocol() == wanted:
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" if wanted == "h2" else b"HELLO custom\r\n")
    tls.close()
elif mode == "server-first":
    # An unpinned client of a protocol whose server speaks first (SMTP, IMAP): it waits for the
    # greeting, answers it, and hangs up if none comes.
    tls = ctx.wrap_socket(tunnel(target), server_hostname=host)
    tls.settimeout(1.0)
    try:
        greeting = tls.recv(100)
    except TimeoutError:
        greeting = b""
    if greeting:
        tls.sendall(b"EHLO client\r\n")
        tls.recv(100)
    tls.close()
elif mode == "rsa-only":
    # An unpinned client that only does RSA: the forgery's EC key cannot serve it.
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    request(ctx.wrap_socket(tunnel(target), server_hostname=host))
elif mode == "elsewhere":
    for to in sys.argv[4:]:
        try:
            quiet(to, to.rsplit(":", 1)[0].strip("[]"))
        except ConnectionError as exc:  # the proxy's 502: on to the next one
            print(exc, file=sys.stderr)
else:
    sys.exit(f"unknown mode {mode}")
"""


class GreetingServer:
    """A loopback TLS server that speaks first ("220"), as SMTP and IMAP servers do."""

    def __init__(self, leaf: Leaf, maximum: ssl.TLSVersion | None = None) -> None:
        self._ctx = server_context(leaf, alpn=None, maximum_version=maximum)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.received = bytearray()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._sock.accept()
            except OSError:
                return
            try:
                with self._ctx.wrap_socket(raw, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.sendall(b"220 greetings\r\n")
                    while data := tls.recv(100):
                        self.received += data
                        tls.sendall(b"250 ok\r\n")
            except (OSError, ssl.SSLError):
                continue

    def close(self) -> None:
        self._sock.close()


@dataclass
class World:
    """The genuine servers, their CA, the pins and the scripts."""

    ca: CA
    leaf: Leaf
    servers: dict[str, Any]
    cafile: Path
    scripts: Path
    wrong_pin: str

    def url(self, server: str, path: str) -> str:
        return f"https://{HOST}:{self.servers[server].port}{path}"

    def target(self, server: str) -> str:
        return f"{HOST}:{self.servers[server].port}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """TLS 1.3, TLS 1.2-only, h2, custom-ALPN, RSA and greeting servers for HOST."""
    tmp = tmp_path_factory.mktemp("control")
    ca = CA.root("control origin root")
    leaf = ca.issue(HOST)
    # Named so that none shadows a module the scripts import (their directory is sys.path[0]).
    for name, text in (("pinned_urllib.py", PINNED_URLLIB), ("pinned_requests.py", PINNED_REQUESTS),
                       ("pinned_asyncio.py", PINNED_ASYNCIO), ("plain_urllib.py", PLAIN_URLLIB),
                       ("raw_client.py", RAW)):
        (tmp / name).write_text(text)
    servers: dict[str, Any] = {
        "tls13": TLSServer(leaf).start(),
        "tls12": TLSServer(leaf, tls_max_version=ssl.TLSVersion.TLSv1_2).start(),
        "h2": TLSServer(leaf, alpn=("h2", "http/1.1")).start(),
        "custom": TLSServer(leaf, alpn=("x-custom",)).start(),
        "rsa": TLSServer(ca.issue(HOST, key_kind="rsa2048"),
                         tls_max_version=ssl.TLSVersion.TLSv1_2).start(),
        "greet13": GreetingServer(leaf),
        "greet12": GreetingServer(leaf, ssl.TLSVersion.TLSv1_2),
    }
    try:
        yield World(ca, leaf, servers, ca.write(tmp, name="genuine-ca"), tmp,
                    CA.root("unrelated").issue("wrong.invalid").pin)
    finally:
        for server in servers.values():
            server.stop() if isinstance(server, TLSServer) else server.close()


def audit(world: World, command: Sequence[str], *options: str,
          expect: Sequence[str] = (HOST,), wrapper: Sequence[str] = ()) -> tuple[int, Any]:
    """Run ``tlspin audit --json`` with the genuine CA trusted; return (status, report)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env[name] = str(world.cafile)
    expected = [arg for host in expect for arg in ("--expect-pinned", host)]
    proc = subprocess.run(
        [sys.executable, *(wrapper or ["-m", "tlspin"]), "audit", "--json", *expected,
         "--resolve", f"{HOST}=127.0.0.1", *options, "--", *command],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )
    assert proc.stdout.strip(), f"no report; stderr:\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def entry(report: dict[str, Any], port: int, host: str = HOST) -> dict[str, Any]:
    """The report of host:port."""
    [found] = [h for h in report["hosts"] if (h["host"], h["port"]) == (host, port)]
    return found


def kinds(report: dict[str, Any]) -> list[str]:
    """The kinds of the runs the audit made."""
    return [run["kind"] for run in report["runs"]]


def python(world: World, script: str, *args: str) -> list[str]:
    return [sys.executable, str(world.scripts / script), *args]


def raw(world: World, mode: str, server: str, tmp_path: Path, *extra: str) -> list[str]:
    state = str(tmp_path / "runs")
    return python(world, "raw_client.py", mode, world.target(server), state, *extra)


# --- pinned clients: proven pinned --------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "server"),
    [("pinned_urllib.py", "tls13"), ("pinned_urllib.py", "tls12"),
     ("pinned_requests.py", "tls13"), ("pinned_asyncio.py", "tls13"),
     ("pinned_asyncio.py", "tls12")],
)
def test_a_tlspin_pinned_client_is_proven_pinned(world: World, script: str, server: str) -> None:
    """tlspin's blocking clients (quiet after the handshake) and its asyncio client (quiet
    inside it) send nothing through the forgery, their request to the genuine server in the
    control run, and nothing through the forgery again: pinned, exit 0, three runs; the genuine
    server got exactly the control run's request."""
    origin = world.servers[server]
    origin.reset()
    status, report = audit(world, python(world, script, world.url(server, "/pinned"),
                                         world.leaf.pin))
    found = entry(report, origin.port)
    assert (status, found["verdict"], report["status"]) == (0, "pinned", "met"), report
    assert kinds(report) == ["forged", "control", "confirmation"]
    assert [run["exit_code"] != 0 for run in report["runs"]] == [True, False, True]
    assert found["requests"] == [], "nothing went through a forgery"
    version = "TLSv1.2" if server == "tls12" else "TLSv1.3"
    assert any(f"control run: {version}: the handshake completed, then the program sent" in d
               for d in found["details"]), found["details"]
    assert found["details"][-1].startswith("pinned, by control: the program sent nothing "
                                           "through the forged certificate")
    assert f"passed through to 127.0.0.1:{origin.port}" in " ".join(found["upstream"])
    origin.wait_idle()
    assert origin.requests == ["GET /pinned HTTP/1.1"]


@pytest.mark.skipif(CURL is None, reason="needs curl (scripts/test installs it)")
@pytest.mark.parametrize("server", ["tls13", "tls12"])
def test_curl_pinnedpubkey_is_proven_pinned(world: World, server: str) -> None:
    """curl --pinnedpubkey (its check after the handshake, then a hang-up) is pinned."""
    assert CURL is not None
    pin = world.leaf.pin.replace("sha256/", "sha256//")
    status, report = audit(world, [CURL, "-sS", "--pinnedpubkey", pin, world.url(server, "/c")])
    assert (status, entry(report, world.servers[server].port)["verdict"]) == (0, "pinned"), report
    assert kinds(report) == ["forged", "control", "confirmation"]


# --- clients that must not come out pinned ------------------------------------------------------


def test_an_unpinned_client_is_not_pinned_in_one_run(world: World) -> None:
    """Twin: plain urllib sends its request through the forgery: NOT PINNED, exit 1, and no
    control run (there is nothing to settle)."""
    status, report = audit(world, python(world, "plain_urllib.py", world.url("tls13", "/plain")))
    found = entry(report, world.servers["tls13"].port)
    assert (status, found["verdict"], kinds(report)) == (1, "not-pinned", ["forged"])
    assert found["requests"] == ["GET /plain HTTP/1.1"]


def test_a_client_that_never_sends_stays_inconclusive(world: World, tmp_path: Path) -> None:
    """Handshake then silence, with the forgery and with the genuine server alike: nothing to
    prove a pin with, inconclusive (exit 3), and no confirmation run."""
    status, report = audit(world, raw(world, "silent", "tls13", tmp_path))
    found = entry(report, world.servers["tls13"].port)
    assert (status, found["verdict"], kinds(report)) == (3, "inconclusive", ["forged", "control"])
    assert "control run: TLSv1.3: the handshake completed, then the program sent no " \
        "application data" in found["details"]
    assert found["details"][-1].startswith(
        "control run: no application data to the genuine server either")


@pytest.mark.parametrize("client", ["tlspin", "curl"])
def test_a_client_pinned_to_the_wrong_key_stays_inconclusive(
    world: World, client: str
) -> None:
    """A client pinned to a key the genuine server does not have refuses both servers: its
    handshake with the genuine one completes, then it hangs up (curl with a close_notify),
    which is not application data. Inconclusive, never pinned; the server gets nothing."""
    if client == "curl" and CURL is None:
        pytest.skip("needs curl (scripts/test installs it)")
    origin = world.servers["tls13"]
    origin.reset()
    url = world.url("tls13", "/wrong")
    command = (python(world, "pinned_urllib.py", url, world.wrong_pin) if client == "tlspin" else
               [str(CURL), "-sS", "--pinnedpubkey", world.wrong_pin.replace("sha256/", "sha256//"),
                url])
    status, report = audit(world, command)
    found = entry(report, origin.port)
    assert (status, found["verdict"], kinds(report)) == (3, "inconclusive", ["forged", "control"])
    assert "a wrong pin?" in found["details"][-1]
    origin.wait_idle()
    assert origin.received == b""


def test_no_control_run_leaves_a_pinned_client_inconclusive(world: World) -> None:
    """--no-control-run: one run, and the quiet pinned client is only inconclusive."""
    status, report = audit(world, python(world, "pinned_urllib.py", world.url("tls13", "/x"),
                                         world.leaf.pin), "--no-control-run")
    assert (status, entry(report, world.servers["tls13"].port)["verdict"]) == (3, "inconclusive")
    assert kinds(report) == ["forged"]


def test_control_run_without_expectations(world: World) -> None:
    """--control-run settles quiet hosts without --expect-pinned; --control-cert with
    --no-control-run is a usage error that runs nothing."""
    status, report = audit(world, python(world, "pinned_urllib.py", world.url("tls13", "/y"),
                                         world.leaf.pin), "--control-run", expect=())
    assert (status, entry(report, world.servers["tls13"].port)["verdict"]) == (0, "pinned")
    assert kinds(report) == ["forged", "control", "confirmation"]
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin", "audit", "--no-control-run", "--control-cert",
         str(world.cafile), "--control-key", str(world.cafile), "--", sys.executable, "-c",
         "print('ran')"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--no-control-run" in proc.stderr
    assert "ran" not in proc.stdout


# --- attacks on the control run -----------------------------------------------------------------


def test_a_program_quiet_only_on_its_first_run_is_not_pinned(
    world: World, tmp_path: Path
) -> None:
    """A program that hangs up on its first run for a reason of its own, then sends: the control
    run sees data, but the confirmation run sees it send through the forgery: NOT PINNED."""
    status, report = audit(world, raw(world, "first-run-quiet", "tls13", tmp_path))
    found = entry(report, world.servers["tls13"].port)
    assert (status, found["verdict"]) == (1, "not-pinned"), report
    assert kinds(report) == ["forged", "control", "confirmation"]
    assert found["requests"] == ["GET /raw HTTP/1.1"]


def test_the_control_run_cannot_be_moved_to_another_port(world: World, tmp_path: Path) -> None:
    """Quiet on HOST:P1, then data to HOST:P2 in the control run: P2 was never a control
    target, so it met the forgery, and HOST is NOT PINNED."""
    other = world.servers["tls12"].port
    status, report = audit(world, raw(world, "other-port", "tls13", tmp_path, str(other)))
    assert (status, entry(report, other)["verdict"]) == (1, "not-pinned"), report
    assert entry(report, world.servers["tls13"].port)["verdict"] == "inconclusive"


@pytest.mark.parametrize("mode", ["other-sni", "fake-records"])
def test_data_that_is_not_for_the_host_does_not_count(
    world: World, tmp_path: Path, mode: str
) -> None:
    """In the control run, data sent under another server name (SNI), or "application data"
    records with no handshake at all, prove nothing: inconclusive, no confirmation run."""
    status, report = audit(world, raw(world, mode, "tls13", tmp_path))
    found = entry(report, world.servers["tls13"].port)
    assert (status, found["verdict"], kinds(report)) == (3, "inconclusive", ["forged", "control"])
    detail = " ".join(found["details"])
    if mode == "other-sni":
        assert "to server name 'other.control.test', not 'api.control.test': not counted" in detail
    else:
        assert "could not follow the TLS records" in detail


def test_a_client_that_needs_h2_gets_it_from_the_forgery(world: World, tmp_path: Path) -> None:
    """An unpinned client that only speaks h2 would hang up on a forgery without h2, and then
    send to a genuine h2 server: the forgery offers h2, so it sends through it: NOT PINNED."""
    status, report = audit(world, raw(world, "h2-only", "h2", tmp_path))
    found = entry(report, world.servers["h2"].port)
    assert (status, found["verdict"], kinds(report)) == (1, "not-pinned", ["forged"]), report


def test_a_protocol_the_forgery_did_not_offer_does_not_count(
    world: World, tmp_path: Path
) -> None:
    """An unpinned client that needs ALPN "x-custom" hangs up on the forgery (which does not
    offer it) and sends to the genuine server (which does): the runs differed in more than the
    certificate, so that data does not count: inconclusive."""
    status, report = audit(world, raw(world, "custom-alpn", "custom", tmp_path))
    found = entry(report, world.servers["custom"].port)
    assert (status, found["verdict"], kinds(report)) == (3, "inconclusive", ["forged", "control"])
    assert "'x-custom', which the forged run did not offer" in " ".join(found["details"])


@pytest.mark.parametrize("server", ["greet13", "greet12"])
def test_a_server_that_speaks_first_cannot_make_a_pin(
    world: World, tmp_path: Path, server: str
) -> None:
    """An unpinned client of a server-speaks-first protocol waits for a greeting the forging
    proxy never relays, and gives up. The control run holds the genuine server's greeting back
    the same way until the client speaks, so the client gives up there too: inconclusive, and
    the genuine server never hears from it."""
    greeter = world.servers[server]
    status, report = audit(world, raw(world, "server-first", server, tmp_path))
    found = entry(report, greeter.port)
    assert (status, found["verdict"], kinds(report)) == (3, "inconclusive", ["forged", "control"])
    assert greeter.received == b""


def test_a_handshake_the_forgery_could_not_serve_is_not_quiet(
    world: World, tmp_path: Path
) -> None:
    """An unpinned RSA-only client cannot complete a handshake with the forgery's EC key: the
    failure is the audit's (no shared cipher), not a hang-up by the program, so there is no
    control run to mistake its later data for a pin: inconclusive, one run."""
    status, report = audit(world, raw(world, "rsa-only", "rsa", tmp_path))
    found = entry(report, world.servers["rsa"].port)
    assert (status, found["verdict"], kinds(report)) == (3, "inconclusive", ["forged"]), report
    assert "no TLS alert" in found["details"][0]


AUDIT_HOOK = """
import json, runpy, sys
log = open(sys.argv[1], "a")
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        log.write(json.dumps([event, repr(args[1] if event == "socket.connect" else args[0])])
                  + "\\n")
        log.flush()
sys.addaudithook(hook)
sys.argv = ["tlspin", *sys.argv[2:]]
runpy.run_module("tlspin", run_name="__main__")
"""


def test_a_program_cannot_make_the_audit_connect_off_loopback(
    world: World, tmp_path: Path
) -> None:
    """A program that is quiet towards names and addresses that are not loopback gets a control
    run for them, and the audit still never resolves or connects to any of them: every socket
    the audit opens (Python's audit hook sees each connect) goes to loopback, and those hosts
    stay inconclusive, "not contacted". The genuine loopback host in the same run is reached."""
    (tmp_path / "hook.py").write_text(AUDIT_HOOK)
    log = tmp_path / "sockets.log"
    elsewhere = ["evil.control.invalid:443", "192.0.2.10:443", "[2001:db8::7]:443"]
    status, report = audit(
        world, raw(world, "elsewhere", "tls13", tmp_path, *elsewhere, world.target("tls13")),
        expect=("evil.control.invalid", "192.0.2.10", "2001:db8::7", HOST),
        wrapper=[str(tmp_path / "hook.py"), str(log)],
    )
    assert status == 3
    assert kinds(report) == ["forged", "control"]
    for host in ("evil.control.invalid", "192.0.2.10", "2001:db8::7"):
        found = entry(report, 443, host)
        assert found["verdict"] == "inconclusive"
        assert any(u.startswith(f"control run: not contacted: {host} is not loopback")
                   for u in found["upstream"]), found
        assert "the genuine server could not be reached" in found["details"][-1]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    connects = [value for event, value in events if event == "socket.connect"]
    assert f"('127.0.0.1', {world.servers['tls13'].port})" in connects, "the hook sees connects"
    for value in connects:
        address = value.strip("()'").split("'")[0]
        assert ipaddress.ip_address(address).is_loopback, value
    lookups = [value for event, value in events if event == "socket.getaddrinfo"]
    assert not [v for v in lookups if "invalid" in v or "192.0.2" in v or "2001:db8" in v]
