"""Real software pinned with no change to its code: first under ``tlspin.inject``, then under
``tlspin run``, against real servers on 127.0.0.1.

In every case the real server works; a leaf forged by a CA the client trusts is refused; and
the forging endpoint receives zero application bytes (nor does the real server behind it). The
``plain`` twin shows that without pins the same client goes through the forging relay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tlspin
from tlspin.integrations import asyncpg as asyncpg_block
from tlspin.testing.servers import TLSServer

from . import _clients, _servers
from .conftest import CLIENTS, World, child_env, tlspin_run
from .test_scrapy import SPIDER

MODES = ["inject", "run"]
Outcome = Callable[..., dict[str, Any]]


def _refused(result: dict[str, Any]) -> None:
    assert not result["ok"], result
    assert result["pin_error"] in ("PinMismatchError", "PinningUnavailableError"), result


@pytest.fixture
def servers(world: World) -> Iterator[tuple[TLSServer, TLSServer]]:
    """An HTTPS origin with the real leaf and one with the forged leaf (both count bytes)."""
    with TLSServer(world.pki.leaf) as good, TLSServer(world.forged) as bad:
        yield good, bad


@pytest.mark.parametrize("mode", MODES)
def test_boto3_s3(mode: str, moto: _servers.Service, relay: Callable[..., Any],
                  outcome: Outcome) -> None:
    """boto3 (CERT_REQUIRED, check_hostname=False) reaches moto's S3 and refuses a forgery."""
    legit = outcome(mode, "boto3", port=moto.port, bucket=f"legit-{mode}")
    assert legit["ok"], legit
    forging = relay(moto.port)
    _refused(outcome(mode, "boto3", port=forging.port, bucket=f"forged-{mode}"))
    assert forging.received == b""
    check = outcome("plain", "boto3", port=moto.port, bucket=f"check-{mode}")
    assert f"forged-{mode}" not in check["value"]
    if mode == "inject":
        twin = outcome("plain", "boto3", port=forging.port, bucket="twin-unpinned")
        assert twin["ok"], twin
        assert forging.received


@pytest.mark.parametrize("mode", MODES)
def test_sdk_built_before_inject(mode: str, world: World, servers: tuple[TLSServer, TLSServer],
                                 outcome: Outcome) -> None:
    """An SDK that made its SSLContext and httpx client before inject is still pinned."""
    good, bad = servers
    if mode == "inject":
        sdk = _clients._SDK.setdefault(world.cafile, _clients.Sdk(world.cafile))
        assert sdk.get(good.url) == "ok"  # made and used before inject
        # The twin gets a client of its own: a kept-alive connection is not a new handshake.
        twin = _clients.Sdk(world.cafile)
        try:
            assert twin.get(bad.url) == "ok"
        finally:
            twin.close()
        assert bad.received
        bad.reset()
    assert outcome(mode, "sdk-httpx", port=good.address[1])["ok"]
    _refused(outcome(mode, "sdk-httpx", port=bad.address[1]))
    assert bad.received == b""


@pytest.mark.parametrize("mode", MODES)
def test_websockets(mode: str, ws_echo: _servers.Service, relay: Callable[..., Any],
                    outcome: Outcome) -> None:
    """websockets' client echoes through the real server and refuses the forged one."""
    message = f"hello-{mode}-{uuid.uuid4().hex}"
    assert outcome(mode, "websockets", port=ws_echo.port, message=message)["value"] == message
    forging = relay(ws_echo.port)
    _refused(outcome(mode, "websockets", port=forging.port, message="forged " + message))
    assert forging.received == b""
    assert "forged " + message not in ws_echo.extra["messages"]


class _Subscriber:
    """A plain MQTT client on the real broker that records every message on tlspin/#."""

    def __init__(self, port: int, cafile: str) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self._client.tls_set(ca_certs=cafile)
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_a: c.subscribe("tlspin/#", qos=1)
        self._client.connect("localhost", port)
        self._client.loop_start()
        assert subscribed.wait(10), "the subscriber could not subscribe"

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload))
            self._cond.notify_all()

    def until(self, topic: str) -> list[tuple[str, bytes]]:
        """Everything received up to a message on *topic* (the broker keeps order)."""
        with self._cond:
            assert self._cond.wait_for(lambda: any(t == topic for t, _ in self.messages), 10)
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()  # paho keeps the socket pair that wakes its loop open


@pytest.mark.parametrize("mode", MODES)
def test_paho_mqtt(mode: str, world: World, mosquitto: _servers.Service,
                   relay: Callable[..., Any], outcome: Outcome) -> None:
    """paho-mqtt publishes to Debian's mosquitto; through the forgery no PUBLISH arrives."""
    subscriber = _Subscriber(mosquitto.port, world.cafile)
    try:
        legit = outcome(mode, "paho", port=mosquitto.port, client_id=f"legit-{mode}",
                        topic=f"tlspin/legit/{mode}", message="hi")
        assert legit["ok"], legit
        assert legit["value"]
        forging = relay(mosquitto.port)
        _refused(outcome(mode, "paho", port=forging.port, client_id=f"forged-{mode}",
                         topic=f"tlspin/forged/{mode}", message="forged"))
        assert forging.received == b""
        marker = outcome("plain", "paho", port=mosquitto.port, client_id=f"marker-{mode}",
                         topic=f"tlspin/marker/{mode}", message="end")
        assert marker["ok"], marker
        topics = [t for t, _ in subscriber.until(f"tlspin/marker/{mode}")]
        assert f"tlspin/legit/{mode}" in topics
        assert f"tlspin/forged/{mode}" not in topics
        assert f"as forged-{mode}" not in (mosquitto.log.read_text() if mosquitto.log else "")
    finally:
        subscriber.close()


@pytest.mark.parametrize("mode", MODES)
def test_redis(mode: str, world: World, redis_server: _servers.Service,
               relay: Callable[..., Any], outcome: Outcome) -> None:
    """redis-py sets a key on Debian's redis-server; through the forgery the key is never set."""
    import redis

    assert outcome(mode, "redis", port=redis_server.port, key=f"legit-{mode}")["ok"]
    forging = relay(redis_server.port)
    _refused(outcome(mode, "redis", port=forging.port, key=f"forged-{mode}"))
    assert forging.received == b""
    check = redis.Redis(host="localhost", port=redis_server.port, ssl=True,
                        ssl_ca_certs=world.cafile)
    try:
        assert check.get(f"legit-{mode}") == b"1"
        assert check.get(f"forged-{mode}") is None
    finally:
        check.close()


@pytest.mark.parametrize("mode", MODES)
def test_smtplib_starttls(mode: str, smtp_servers: tuple[_servers.Service, _servers.Service],
                          outcome: Outcome) -> None:
    """smtplib's default starttls() (CERT_NONE) passes on the pinned leaf key, refuses a forgery."""
    good, bad = smtp_servers
    assert outcome(mode, "smtplib", port=good.port, sender=f"legit-{mode}@example.test")["ok"]
    _refused(outcome(mode, "smtplib", port=bad.port, sender=f"forged-{mode}@example.test"))
    assert f"legit-{mode}@example.test" in good.extra["handler"].mail_from
    assert bad.extra["handler"].mail_from == []


def _pg(world: World) -> dict[str, Any]:
    if world.pg is None:
        if os.environ.get("CI"):
            pytest.fail("TLSPIN_TEST_PG_CAFILE is not set: scripts/test starts PostgreSQL with TLS")
        pytest.skip("PostgreSQL with TLS is not running (scripts/test starts it)")
    return world.pg


@pytest.mark.parametrize("mode", MODES)
def test_asyncpg(mode: str, world: World, relay: Callable[..., Any], outcome: Outcome) -> None:
    """asyncpg (default sslmode=prefer) connects over TLS; a forgery is refused, never retried
    in clear text, although that database accepts clear text."""
    pg = _pg(world)
    legit = outcome(mode, "asyncpg", port=pg["port"], user=pg["user"], database="tlspin_tls")
    assert legit == {"ok": True, "value": True}, legit
    forging = relay(pg["port"], postgres=True)
    forged = outcome(mode, "asyncpg", port=forging.port, user=pg["user"], database="tlspin_clear")
    _refused(forged)
    assert forging.received == b""
    assert forging.cleartext == b""
    if mode == "inject":
        twin = outcome("plain", "asyncpg", port=forging.port, user=pg["user"],
                       database="tlspin_clear")
        assert twin == {"ok": True, "value": True}, twin
        assert forging.received


def test_asyncpg_refusal_falls_back_to_clear_text_without_the_block(
    world: World, relay: Callable[..., Any]
) -> None:
    """The attack the block stops: without it, asyncpg answers a pin refusal in clear text."""
    pg = _pg(world)
    forging = relay(pg["port"], postgres=True)
    cfg = {"port": forging.port, "user": pg["user"], "database": "tlspin_clear"}
    with tlspin.injected(world.policy):
        assert asyncpg_block.installed()
        asyncpg_block.uninstall()
        result = _clients.attempt("asyncpg", cfg)
    assert result == {"ok": True, "value": False}, result  # connected, without TLS
    assert forging.cleartext
    assert forging.received == b""


def _pip(world: World, mode: str, port: int, dest: Path) -> subprocess.CompletedProcess[str]:
    args = ["download", "--no-deps", "--retries", "0", "--timeout", "10", "--index-url",
            f"https://localhost:{port}/simple", "--cert", world.cafile, "-d", str(dest),
            "tlspin-probe"]
    env = child_env()
    env["PIP_CONFIG_FILE"] = os.devnull
    if mode == "run":
        return tlspin_run(world, [sys.executable, "-m", "pip", *args], env=env)
    code = (
        "import runpy, sys, tlspin\n"
        f"tlspin.inject(tlspin.PinPolicy.load({world.policy_path!r}))\n"
        f"sys.argv = ['pip', *{args!r}]\n"
        "runpy.run_module('pip', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.mark.parametrize("mode", MODES)
def test_pip_download(mode: str, world: World, package_index: _servers.Service,
                      relay: Callable[..., Any], tmp_path: Path) -> None:
    """pip (its vendored truststore context) downloads from the real index, not a forged one."""
    done = _pip(world, mode, package_index.port, tmp_path / "good")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (tmp_path / "good").iterdir()] == ["tlspin_probe-1.0-py3-none-any.whl"]
    forging = relay(package_index.port)
    done = _pip(world, mode, forging.port, tmp_path / "bad")
    assert done.returncode != 0
    assert "pinning failure" in done.stdout + done.stderr or "refused" in done.stdout + done.stderr
    assert forging.received == b""
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


# The program's first TLS import is Twisted's: `tlspin run` pins at the first `import ssl`, which
# then happens while twisted.internet._sslverify is still being imported.
SSLVERIFY_FIRST = """
import json, sys
assert "ssl" not in sys.modules
import twisted.internet._sslverify
sys.path.insert(0, sys.argv[1])
import _clients
print(json.dumps(_clients.attempt("treq", json.loads(sys.argv[2])), default=repr))
"""


@pytest.mark.parametrize("forged", [False, True], ids=["genuine", "forged"])
def test_treq_when_twisted_is_the_first_tls_import(
    world: World, servers: tuple[TLSServer, TLSServer], tmp_path: Path, forged: bool
) -> None:
    """Under `tlspin run`, a program that imports twisted.internet._sslverify first starts (it
    exited 70: the Twisted patch met a half-imported module) and Twisted is pinned once that
    import finishes: the genuine server answers, a forged leaf is refused with 0 bytes."""
    good, bad = servers
    server = bad if forged else good
    (tmp_path / "first.py").write_text(SSLVERIFY_FIRST)
    cfg = json.dumps({"cafile": world.cafile, "port": server.address[1]})
    done = tlspin_run(
        world, [sys.executable, str(tmp_path / "first.py"), str(CLIENTS.parent), cfg]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    if forged:
        _refused(result)
        bad.wait_idle()
        assert bad.received == b""
    else:
        assert result == {"ok": True, "value": "ok"}


@pytest.mark.parametrize("mode", MODES)
def test_treq(mode: str, world: World, servers: tuple[TLSServer, TLSServer],
              outcome: Outcome) -> None:
    """treq with Twisted's default policy is reached through pyOpenSSL and refuses a forgery."""
    good, bad = servers
    if mode == "run":
        assert outcome(mode, "treq", port=good.address[1])["value"] == "ok"
        _refused(outcome(mode, "treq", port=bad.address[1]))
    else:
        from twisted.internet._sslverify import ClientTLSOptions
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

        from tlspin.integrations import find_pin_error
        from tlspin.integrations.twisted import trust_root

        from .test_twisted import _get, _reactor

        original = ClientTLSOptions.clientConnectionForTLS
        agent = Agent(_reactor.reactor(),
                      contextFactory=BrowserLikePolicyForHTTPS(trust_root(world.cafile)))
        with tlspin.injected(world.policy):
            assert _get(agent, good.url) == b"ok"
            with pytest.raises(Exception) as caught:
                _get(agent, bad.url)
        assert find_pin_error(caught.value) is not None
        assert ClientTLSOptions.clientConnectionForTLS is original  # extract() restored it
        assert _get(agent, bad.url) == b"ok"  # so the unpinned twin goes through
        bad.reset()
    assert bad.received == b""


@pytest.mark.parametrize("mode", MODES)
def test_scrapy_spider(mode: str, world: World, servers: tuple[TLSServer, TLSServer],
                       tmp_path: Path) -> None:
    """A Scrapy spider with Scrapy's defaults (no verification: leaf pins only) is pinned."""
    good, bad = servers
    results = []
    for server in (good, bad):
        out = tmp_path / f"{server.address[1]}.json"
        if mode == "run":
            done = tlspin_run(world, [sys.executable, str(SPIDER), server.url, str(out)])
        else:
            done = subprocess.run(
                [sys.executable, str(SPIDER), server.url, str(out), "--inject", world.policy_path],
                env=child_env(), capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads(out.read_text()))
    assert results[0] == {"status": 200, "body": "ok"}
    # Scrapy does not verify by default, so a leaf pin must match: the forged leaf matches none.
    assert results[1]["pin_error"] == "PinningUnavailableError", results[1]
    assert results[1]["pin_reason"] == "unverified-chain"
    assert bad.received == b""
