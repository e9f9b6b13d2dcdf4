"""`tlspin audit` against real programs: Python requests, curl, node and raw TLS clients.

Verdicts rest on evidence: application bytes through the forgery mean NOT PINNED; a TLS alert
means refused or pinned; a handshake followed by silence is only inconclusive. Every program
whose pin check the audit cannot prove has a twin run through an honest CONNECT tunnel, which
must succeed: it proves the pin is right and that only the forgery made the difference.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _httpd import HTTPThread, QuietHandler
from tlspin.testing.pki import CA, Leaf
from tlspin.testing.proxies import ConnectProxy
from tlspin.testing.servers import TLSServer

HOST = "api.audit.test"
SECRET = "s3cr3t-token-value"

PLAIN_REQUESTS = f"""
import sys, requests
response = requests.get(sys.argv[1], headers={{"X-Api-Key": "{SECRET}"}}, timeout=10)
print(response.status_code, response.text)
"""

PINNED_REQUESTS = f"""
import sys, tlspin
from tlspin.integrations.requests import session
policy = tlspin.PinPolicy.from_mapping({{"{HOST}": [sys.argv[2], sys.argv[3]]}})
response = session(policy).get(sys.argv[1], timeout=10)
print(response.status_code, response.text)
"""

# A node client that honours HTTPS_PROXY itself (as proxy agents do) and, given a pin,
# compares the SHA-256 of the server's SPKI in checkServerIdentity.
NODE_CLIENT = r"""
const http = require('http'), tls = require('tls'), crypto = require('crypto');
const target = new URL(process.argv[2]);
const pin = process.argv[3] || '';
const proxy = new URL(process.env.HTTPS_PROXY);
const req = http.request({host: proxy.hostname, port: proxy.port, method: 'CONNECT',
                          path: `${target.hostname}:${target.port}`});
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.error('proxy said', res.statusCode); process.exit(3); }
  const options = {socket, servername: target.hostname};
  if (pin) options.checkServerIdentity = (host, cert) => {
    const err = tls.checkServerIdentity(host, cert);
    if (err) return err;
    // cert.pubkey is the bare key (an EC point, or PKCS#1 for RSA), not the SPKI that pins
    // hash: re-export the certificate's key as DER SubjectPublicKeyInfo.
    const key = new crypto.X509Certificate(cert.raw).publicKey;
    const spki = key.export({type: 'spki', format: 'der'});
    const got = 'sha256/' + crypto.createHash('sha256').update(spki).digest('base64');
    if (got !== pin) return new Error(`pin mismatch for ${host}: ${got}`);
  };
  const s = tls.connect(options, () => {
    s.write(`GET ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nConnection: close\r\n\r\n`);
  });
  let data = '';
  s.on('data', (d) => { data += d; });
  s.on('end', () => { console.log(data.split('\r\n')[0]); process.exit(0); });
  s.on('error', (e) => { console.error('TLS error:', e.message); process.exit(4); });
});
req.on('error', (e) => { console.error('proxy error:', e.message); process.exit(5); });
req.end();
"""


@dataclass
class Origin:
    """The legitimate loopback HTTPS server the audited programs talk to."""

    server: TLSServer
    leaf: Leaf
    cafile: Path
    backup_pin: str
    scripts: Path

    def url(self, path: str) -> str:
        """``https://api.audit.test:PORT/path``."""
        return f"https://{HOST}:{self.server.port}{path}"


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """Start the origin once per module and write the client scripts."""
    tmp = tmp_path_factory.mktemp("audit")
    ca = CA.root("audit origin root")
    leaf = ca.issue(HOST, "localhost")
    backup = CA.root("unrelated").issue("backup.invalid")
    (tmp / "ca.pem").write_bytes(ca.cert_pem)
    (tmp / "plain.py").write_text(PLAIN_REQUESTS)
    (tmp / "pinned.py").write_text(PINNED_REQUESTS)
    (tmp / "client.js").write_text(NODE_CLIENT)
    with TLSServer(leaf) as server:
        yield Origin(server, leaf, tmp / "ca.pem", backup.pin, tmp)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def run_audit(
    origin: Origin, command: Sequence[str], *options: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run ``tlspin audit --json`` on *command*; return (status, report, program stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin", "audit", "--json", "--expect-pinned", HOST,
         "--resolve", f"{HOST}=127.0.0.1", "--upstream-cafile", str(origin.cafile),
         *options, "--", *command],
        capture_output=True, text=True, timeout=120, env=_env(**(env or {})), check=False,
    )
    assert proc.stdout.strip(), f"no report; stderr:\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def host_report(report: dict[str, Any]) -> dict[str, Any]:
    """The report entry of the audited host."""
    entries: list[dict[str, Any]] = [h for h in report["hosts"] if h["host"] == HOST]
    [entry] = entries
    return entry


def through_honest_tunnel(command: Sequence[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run *command* through a plain CONNECT proxy (no forgery) that resolves the test host."""
    with ConnectProxy(resolve={HOST: "127.0.0.1"}) as proxy:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False,
            env=_env(HTTPS_PROXY=proxy.url, https_proxy=proxy.url, **env),
        )


def received_during(origin: Origin, action: Any) -> list[str]:
    """Run *action* and return the request lines the origin received meanwhile."""
    before = len(origin.server.requests)
    action()
    origin.server.wait_idle()
    return origin.server.requests[before:]


def test_plain_requests_is_not_pinned(origin: Origin) -> None:
    """A script using plain requests trusts the forging CA: NOT PINNED, exit 1, no secrets shown."""
    out: list[Any] = []
    url = origin.url(f"/plain?token={SECRET}")
    script = [sys.executable, str(origin.scripts / "plain.py"), url]
    seen = received_during(origin, lambda: out.append(run_audit(origin, script)))
    status, report, stderr = out[0]
    entry = host_report(report)
    assert status == 1
    assert report["exit_code"] == 0, stderr
    assert entry["verdict"] == "not-pinned"
    assert entry["requests"] == ["GET /plain?… HTTP/1.1"]
    assert report["expectations"][0]["met"] is False
    assert "forwarded to 127.0.0.1" in entry["upstream"][0]
    assert seen == [f"GET /plain?token={SECRET} HTTP/1.1"], "the unpinned program still works"
    assert SECRET not in json.dumps(report["hosts"]), "query strings and headers are never kept"


def test_tlspin_pinned_requests_is_inconclusive_not_pinned(origin: Origin) -> None:
    """A tlspin-pinned script checks after the handshake and hangs up without a byte: without
    a control run the audit cannot tell that from a program with nothing to send, so it says
    inconclusive (exit 3), names that evidence, and the origin gets nothing."""
    script = [sys.executable, str(origin.scripts / "pinned.py"), origin.url("/pinned"),
              origin.leaf.pin, origin.backup_pin]
    out: list[Any] = []
    seen = received_during(origin, lambda: out.append(
        run_audit(origin, script, "--no-control-run")))
    status, report, stderr = out[0]
    entry = host_report(report)
    assert status == 3, report
    assert (entry["verdict"], report["status"]) == ("inconclusive", "inconclusive")
    assert entry["requests"] == []
    assert "handshake completed" in entry["details"][0]
    assert "without sending a byte" in entry["details"][0]
    assert report["exit_code"] != 0
    assert "Certificate pinning failure" in stderr
    assert seen == []


def test_tlspin_pinned_requests_works_through_an_honest_tunnel(origin: Origin) -> None:
    """Twin: the same pinned script succeeds through a non-forging proxy, so the pin is right."""
    script = [sys.executable, str(origin.scripts / "pinned.py"), origin.url("/pinned-ok"),
              origin.leaf.pin, origin.backup_pin]
    out: list[Any] = []
    seen = received_during(origin, lambda: out.append(
        through_honest_tunnel(script, REQUESTS_CA_BUNDLE=str(origin.cafile))))
    assert out[0].returncode == 0, out[0].stderr
    assert seen == ["GET /pinned-ok HTTP/1.1"]


curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
node = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")


@curl
def test_curl_without_pin_is_not_pinned(origin: Origin) -> None:
    """curl without --pinnedpubkey sends its request through the forgery; headers never shown."""
    status, report, _ = run_audit(
        origin, ["curl", "-sS", "-H", f"Authorization: Bearer {SECRET}", origin.url("/curl")]
    )
    entry = host_report(report)
    assert (status, entry["verdict"], report["exit_code"]) == (1, "not-pinned", 0)
    assert entry["requests"] == ["GET /curl HTTP/1.1"]
    assert SECRET not in json.dumps(report["hosts"])


@curl
def test_curl_with_pinnedpubkey_is_inconclusive(origin: Origin) -> None:
    """curl --pinnedpubkey hangs up after the forged handshake without a byte: on its own (no
    control run), inconclusive."""
    pin = origin.leaf.pin.replace("sha256/", "sha256//")
    out: list[Any] = []
    seen = received_during(origin, lambda: out.append(run_audit(
        origin, ["curl", "-sS", "--pinnedpubkey", pin, origin.url("/curl-pinned")],
        "--no-control-run")))
    status, report, stderr = out[0]
    entry = host_report(report)
    assert (status, entry["verdict"], report["exit_code"]) == (3, "inconclusive", 90), stderr
    assert seen == []


@curl
def test_curl_with_pinnedpubkey_works_through_an_honest_tunnel(origin: Origin) -> None:
    """Twin: the same curl command succeeds without the forgery."""
    pin = origin.leaf.pin.replace("sha256/", "sha256//")
    proc = through_honest_tunnel(
        ["curl", "-sS", "--pinnedpubkey", pin, "--cacert", str(origin.cafile),
         origin.url("/curl-ok")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok"


@node
def test_node_without_pin_check_is_not_pinned(origin: Origin) -> None:
    """node trusting NODE_EXTRA_CA_CERTS sends its request through the forgery."""
    status, report, stderr = run_audit(
        origin, ["node", str(origin.scripts / "client.js"), origin.url("/node")])
    entry = host_report(report)
    assert (status, entry["verdict"], report["exit_code"]) == (1, "not-pinned", 0), stderr
    assert entry["requests"] == ["GET /node HTTP/1.1"]


@node
def test_node_with_pin_check_sends_nothing(origin: Origin) -> None:
    """node comparing the SPKI SHA-256 in checkServerIdentity sends nothing through the forgery
    (it closes without an alert: inconclusive, never NOT PINNED)."""
    out: list[Any] = []
    seen = received_during(origin, lambda: out.append(run_audit(
        origin, ["node", str(origin.scripts / "client.js"), origin.url("/node-pinned"),
                 origin.leaf.pin])))
    status, report, stderr = out[0]
    entry = host_report(report)
    assert (status, entry["verdict"]) == (3, "inconclusive"), report
    assert entry["requests"] == []
    assert "pin mismatch" in stderr
    assert seen == []


@node
def test_node_with_pin_check_is_proven_pinned_by_the_control_run(origin: Origin) -> None:
    """The same node client, trusting the origin's CA as a deployed one would: the control run
    passes its connection to the origin, where it sends its request, and the forgery gets
    nothing before and after: pinned (exit 0). Only the control run's request arrives."""
    out: list[Any] = []
    seen = received_during(origin, lambda: out.append(run_audit(
        origin, ["node", str(origin.scripts / "client.js"), origin.url("/node-control"),
                 origin.leaf.pin], env={"NODE_EXTRA_CA_CERTS": str(origin.cafile)})))
    status, report, stderr = out[0]
    assert (status, host_report(report)["verdict"]) == (0, "pinned"), stderr
    assert seen == ["GET /node-control HTTP/1.1"]


@node
def test_node_with_pin_check_works_through_an_honest_tunnel(origin: Origin) -> None:
    """Twin: the same pinned node client succeeds without the forgery."""
    proc = through_honest_tunnel(
        ["node", str(origin.scripts / "client.js"), origin.url("/node-ok"), origin.leaf.pin],
        NODE_EXTRA_CA_CERTS=str(origin.cafile))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "HTTP/1.1 200 OK"


@curl
def test_curl_with_its_own_trust_store_is_refused(origin: Origin) -> None:
    """curl --cacert (ignoring the audit CA) aborts the handshake: refused, with the TLS alert."""
    status, report, _ = run_audit(
        origin, ["curl", "-sS", "--cacert", str(origin.cafile), origin.url("/own-store")])
    entry = host_report(report)
    assert (status, entry["verdict"], entry["requests"]) == (0, "refused", [])
    assert "unknown ca" in entry["details"][0]
    assert "does not trust the audit CA" in entry["details"][0]


@curl
def test_plain_http_is_flagged(origin: Origin) -> None:
    """A plain http:// request through HTTP_PROXY is reported as PLAINTEXT and forwarded."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

    with contextlib.closing(HTTPThread(Handler)) as plain:
        status, report, _ = run_audit(
            origin, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                     f"http://localhost:{plain.port}/plain?x=1"])
    [entry] = [h for h in report["hosts"] if h["host"] == "localhost"]
    assert entry["verdict"] == "plaintext"
    assert entry["upstream"][0].startswith("forwarded to 127.0.0.1")
    assert report["exit_code"] == 0
    assert entry["requests"][0].startswith("GET http://localhost:")
    assert entry["requests"][0].endswith("/plain?… HTTP/1.1")
    assert status == 3, "the expected host was never contacted: no evidence, inconclusive"


@curl
def test_non_loopback_hosts_are_never_contacted(origin: Origin) -> None:
    """A host that is not loopback is audited but never contacted: curl gets the proxy's 502."""
    status, report, _ = run_audit(
        origin, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "https://tlspin.invalid/x"])
    [entry] = [h for h in report["hosts"] if h["host"] == "tlspin.invalid"]
    assert entry["verdict"] == "not-pinned"
    assert entry["upstream"][0].startswith("not contacted: tlspin.invalid is not loopback")
    assert entry["upstream"][0].endswith("the program got 502 Bad Gateway")
    assert status == 3
    assert "never connected" in report["expectations"][0]["reason"]


def test_resolve_refuses_non_loopback_addresses() -> None:
    """--resolve to a non-loopback address is a usage error (exit 2) and runs nothing."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin", "audit", "--resolve", "api.test=192.0.2.1", "--",
         sys.executable, "-c", "print('ran')"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )
    assert proc.returncode == 2
    assert "loopback" in proc.stderr
    assert "ran" not in proc.stdout


@curl
def test_table_output_names_the_verdict(origin: Origin) -> None:
    """Without --json the report is a table that says NOT PINNED and shows the request line."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin", "audit", "--resolve", f"{HOST}=127.0.0.1",
         "--upstream-cafile", str(origin.cafile), "--",
         "curl", "-sS", "-o", "/dev/null", "-H", f"X-Api-Key: {SECRET}",
         origin.url("/table?page=2")],
        capture_output=True, text=True, timeout=60, env=_env(COLUMNS="160"), check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NOT PINNED" in proc.stdout
    assert "GET /table?… HTTP/1.1" in proc.stdout
    assert SECRET not in proc.stdout.replace(f"X-Api-Key: {SECRET}", "")


def test_audit_of_a_missing_program_exits_2() -> None:
    """A program that cannot be started is reported with exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "tlspin", "audit", "--", "/nonexistent/tlspin-no-such-program"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )
    assert proc.returncode == 2
    assert "could not run" in proc.stderr
    assert textwrap.dedent(proc.stdout) == ""


# A raw TLS client through HTTPS_PROXY, trusting SSL_CERT_FILE (the audit's CA bundle): it does
# what argv[2] says after the handshake, so each kind of evidence can be produced on purpose.
RAW_CLIENT = r"""
import os, socket, ssl, struct, sys
target = sys.argv[1]
host, port = target.rsplit(":", 1)
proxy = os.environ["HTTPS_PROXY"].rsplit("/", 1)[-1].rsplit(":", 1)
sock = socket.create_connection((proxy[0], int(proxy[1])), timeout=20)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the bytes leave before the reset
connect = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
if sys.argv[2] == "pipeline":
    sock.sendall(connect + b"GET /early HTTP/1.1\r\n\r\n")
    print(sock.recv(100).split(b"\r\n")[0].decode())
    sys.exit(0)
sock.sendall(connect)
answer = b""
while b"\r\n\r\n" not in answer:
    answer += sock.recv(1)
ctx = ssl.create_default_context()
tls = ctx.wrap_socket(sock, server_hostname=host)
if sys.argv[2] in ("secret-close", "secret-reset"):
    tls.sendall(b"SECRET-TOKEN-123")  # no newline: not a line of any protocol
if sys.argv[2] == "secret-reset":
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
tls.close()
"""


@pytest.fixture(scope="module")
def raw_client(origin: Origin) -> Path:
    """The raw client script."""
    path = origin.scripts / "raw.py"
    path.write_text(RAW_CLIENT)
    return path


@pytest.mark.parametrize("how", ["secret-close", "secret-reset"])
def test_bytes_without_a_newline_are_not_pinned(origin: Origin, raw_client: Path, how: str) -> None:
    """A client that sends SECRET-TOKEN-123 (no newline) through the forgery and then closes or
    resets is NOT PINNED (exit 1), with the byte count as evidence; the secret is never shown."""
    status, report, stderr = run_audit(
        origin, [sys.executable, str(raw_client), f"{HOST}:{origin.server.port}", how])
    entry = host_report(report)
    assert (status, entry["verdict"], report["exit_code"]) == (1, "not-pinned", 0), stderr
    assert "sent 16 byte(s) of application data" in entry["details"][0]
    assert report["expectations"][0]["status"] == "not-pinned"
    assert "SECRET" not in json.dumps(report)


def test_handshake_then_silence_is_inconclusive(origin: Origin, raw_client: Path) -> None:
    """Twin: the same client completing the handshake and closing without a byte proves
    nothing: inconclusive (exit 3), never 'pinned'."""
    status, report, _ = run_audit(
        origin, [sys.executable, str(raw_client), f"{HOST}:{origin.server.port}", "silent"])
    entry = host_report(report)
    assert (status, entry["verdict"]) == (3, "inconclusive")
    assert entry["details"][:1] == [
        "the handshake completed, then the program closed the connection without sending a "
        "byte; a client that checks pins after the handshake (curl --pinnedpubkey, tlspin, "
        "OkHttp) does this, and so does one that had nothing to send: not proof of a pin"]


def test_bytes_pipelined_after_connect_are_refused(origin: Origin, raw_client: Path) -> None:
    """A client that sends bytes right behind its CONNECT, before the proxy answered, gets 400:
    the tunnel is never opened, nothing reaches the origin, and the verdict says why."""
    out: list[Any] = []
    target = f"{HOST}:{origin.server.port}"
    seen = received_during(origin, lambda: out.append(
        run_audit(origin, [sys.executable, str(raw_client), target, "pipeline"])))
    status, report, _ = out[0]
    entry = host_report(report)
    assert (status, entry["verdict"]) == (3, "inconclusive")
    assert "byte(s) after its CONNECT request, before the proxy answered" in entry["details"][0]
    assert seen == []


def test_upstream_failure_is_reported_as_the_502_the_program_got(origin: Origin) -> None:
    """When forwarding fails (nothing listens on the mapped port), the audit says the program
    got 502, not that the request was forwarded; the program sees the 502 too."""
    import socket

    with socket.socket() as probe:  # a loopback port with no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = [sys.executable, str(origin.scripts / "plain.py"), f"https://{HOST}:{port}/gone"]
    status, report, stderr = run_audit(origin, script)
    entry = host_report(report)
    assert (status, entry["verdict"]) == (1, "not-pinned")
    assert entry["upstream"][0].startswith(f"forwarding to 127.0.0.1:{port} failed")
    assert entry["upstream"][0].endswith("the program got 502 Bad Gateway")
    assert "forwarded to" not in json.dumps(report)
    assert "502 tlspin audit: upstream failed" in stderr  # what the program printed


def test_a_long_host_name_is_audited_not_dropped(origin: Origin, raw_client: Path) -> None:
    """A CONNECT to a name longer than a certificate CN may be (64) is still forged and judged:
    bytes through the forgery make it NOT PINNED, and the report names the host."""
    long_host = "a" * 60 + ".audit.test"
    status, report, _ = run_audit(
        origin, [sys.executable, str(raw_client), f"{long_host}:{origin.server.port}",
                 "secret-close"])
    [entry] = [h for h in report["hosts"] if h["host"] == long_host]
    assert entry["verdict"] == "not-pinned"
    assert status == 3  # the expected host itself was never contacted


@pytest.fixture(scope="module")
def control(origin: Origin) -> list[str]:
    """``--control-cert/--control-key`` options with the origin's genuine certificate and key."""
    chain, key = origin.leaf.write(origin.scripts, name="genuine")
    return ["--control-cert", str(chain), "--control-key", str(key)]


def test_control_run_proves_a_post_handshake_pin(origin: Origin, control: list[str]) -> None:
    """With the genuine certificate as control, the tlspin-pinned script that sent nothing
    through the forgery sends its request: the certificate made the difference, so pinned
    (exit 0); only the control run's request reaches the origin."""
    script = [sys.executable, str(origin.scripts / "pinned.py"), origin.url("/control"),
              origin.leaf.pin, origin.backup_pin]
    out: list[Any] = []
    seen = received_during(origin, lambda: out.append(run_audit(
        origin, script, *control, env={"REQUESTS_CA_BUNDLE": str(origin.cafile)})))
    status, report, stderr = out[0]
    entry = host_report(report)
    assert (status, entry["verdict"], report["status"]) == (0, "pinned", "met"), stderr
    assert [run["kind"] for run in report["runs"]] == ["forged", "control", "confirmation"]
    assert entry["details"][-1].startswith("pinned, by control: the program sent nothing "
                                           "through the forged certificate")
    assert "to the genuine certificate (--control-cert)" in entry["details"][-1]
    assert seen == ["GET /control HTTP/1.1"]


@curl
def test_control_run_proves_curl_pinnedpubkey(origin: Origin, control: list[str]) -> None:
    """curl --pinnedpubkey: inconclusive alone, pinned with the control run."""
    pin = origin.leaf.pin.replace("sha256/", "sha256//")
    status, report, stderr = run_audit(
        origin, ["curl", "-sS", "--pinnedpubkey", pin, origin.url("/curl-control")], *control,
        env={"CURL_CA_BUNDLE": str(origin.cafile)})
    assert (status, host_report(report)["verdict"]) == (0, "pinned"), stderr


def test_control_run_cannot_turn_silence_into_a_pin(
    origin: Origin, raw_client: Path, control: list[str]
) -> None:
    """Twin: a program silent with the genuine certificate too stays inconclusive (exit 3), and
    one that sends through the forgery is NOT PINNED whatever the control says (exit 1)."""
    target = f"{HOST}:{origin.server.port}"
    env = {"SSL_CERT_FILE": str(origin.cafile)}
    status, report, _ = run_audit(
        origin, [sys.executable, str(raw_client), target, "silent"], *control, env=env)
    entry = host_report(report)
    assert (status, entry["verdict"]) == (3, "inconclusive")
    assert "no application data to the genuine certificate (--control-cert) either" in (
        entry["details"][-1])
    status, report, _ = run_audit(
        origin, [sys.executable, str(raw_client), target, "secret-close"], *control, env=env)
    assert (status, host_report(report)["verdict"]) == (1, "not-pinned")
