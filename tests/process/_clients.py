"""One operation per real client library, run in this process (under ``tlspin.inject``) or in a
child Python (under ``tlspin run``): ``python _clients.py NAME CONFIG.json OUT.json``.

Each operation is what a program would do, with the library's own defaults except for the trust
store (``cafile`` holds the server's CA *and* the attacker's, so only pins stop a forgery). The
outcome is a dict: ``{"ok": True, ...}`` or ``{"ok": False, "pin_error": ..., "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

Config = dict[str, Any]


def boto3_s3(cfg: Config) -> Any:
    """Create a bucket in moto's S3 (one attempt: botocore retries otherwise)."""
    import boto3
    from botocore.config import Config as BotoConfig

    client = boto3.client(
        "s3", endpoint_url=f"https://localhost:{cfg['port']}", verify=cfg["cafile"],
        region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
        config=BotoConfig(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=cfg["bucket"])
    return sorted(b["Name"] for b in client.list_buckets()["Buckets"])


class Sdk:
    """An SDK-style API client: it builds its own SSLContext and httpx client up front."""

    def __init__(self, cafile: str) -> None:
        import httpx

        self._ctx = ssl.create_default_context(cafile=cafile)
        self._http = httpx.Client(verify=self._ctx, timeout=10)

    def close(self) -> None:
        self._http.close()

    def get(self, url: str) -> str:
        response = self._http.get(url)
        response.raise_for_status()
        return response.text


_SDK: dict[str, Sdk] = {}


def sdk_httpx(cfg: Config) -> Any:
    """GET through an httpx client built before tlspin.inject (reused across calls)."""
    sdk = _SDK.setdefault(cfg["cafile"], Sdk(cfg["cafile"]))
    return sdk.get(f"https://localhost:{cfg['port']}/")


def websockets_echo(cfg: Config) -> Any:
    """Send a message over wss:// and read the echo."""
    from websockets.sync.client import connect

    ctx = ssl.create_default_context(cafile=cfg["cafile"])
    with connect(f"wss://localhost:{cfg['port']}/", ssl=ctx, open_timeout=10) as ws:
        ws.send(cfg["message"])
        return ws.recv(timeout=10)


def _close_sockets(tb: TracebackType | None) -> None:
    """Close every socket held by a local variable of the frames of *tb*."""
    import socket

    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next


def paho_publish(cfg: Config) -> Any:
    """Connect to the broker over TLS and publish one QoS 1 message."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg["client_id"])
    client.tls_set(ca_certs=cfg["cafile"])
    try:
        client.connect("localhost", cfg["port"], keepalive=10)
    except BaseException as exc:
        # paho-mqtt never closes its TLS socket when the handshake fails (the refusal here);
        # close it, found in the failing frames, so it is not left to the garbage collector.
        _close_sockets(exc.__traceback__)
        client._reset_sockets()  # and the socket pair it made to wake its loop
        raise
    client.loop_start()
    try:
        info = client.publish(cfg["topic"], cfg["message"], qos=1)
        info.wait_for_publish(10)
        return info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets()  # paho keeps the socket pair that wakes its loop open


def redis_set(cfg: Config) -> Any:
    """SET a key over TLS (no retries: redis-py retries a refused connection otherwise)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host="localhost", port=cfg["port"], ssl=True, ssl_ca_certs=cfg["cafile"],
        retry=Retry(NoBackoff(), 0), socket_timeout=10,
    )
    try:
        return client.set(cfg["key"], "1")
    finally:
        client.close()


def smtp_send(cfg: Config) -> Any:
    """smtplib with the default starttls() (CERT_NONE: only a leaf pin can vouch), then a mail."""
    import smtplib

    with smtplib.SMTP("localhost", cfg["port"], timeout=10) as client:
        client.starttls()
        client.sendmail(cfg["sender"], ["to@example.test"], b"Subject: hi\r\n\r\nbody\r\n")
    return True


def asyncpg_query(cfg: Config) -> Any:
    """Connect with asyncpg's default sslmode (prefer) and report whether TLS was used."""
    import asyncpg

    async def run() -> Any:
        conn = await asyncpg.connect(
            host="localhost", port=cfg["port"], user=cfg["user"], database=cfg["database"],
            timeout=10,
        )
        try:
            return await conn.fetchval(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
            )
        finally:
            await conn.close()

    return asyncio.run(run())


def treq_get(cfg: Config) -> Any:
    """GET with treq's default Agent (Twisted's browser-like policy, trusting cafile)."""
    import treq
    from twisted.internet import reactor
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

    from tlspin.integrations.twisted import trust_root

    result: dict[str, Any] = {}

    def go() -> Any:
        agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trust_root(cfg["cafile"])))
        d = treq.get(f"https://localhost:{cfg['port']}/", agent=agent)
        d.addCallback(treq.content)
        d.addCallbacks(lambda body: result.update(body=body), lambda f: result.update(f=f))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if "f" in result:
        result["f"].raiseException()
    return result["body"].decode()


OPERATIONS: dict[str, Callable[[Config], Any]] = {
    "boto3": boto3_s3,
    "sdk-httpx": sdk_httpx,
    "websockets": websockets_echo,
    "paho": paho_publish,
    "redis": redis_set,
    "smtplib": smtp_send,
    "asyncpg": asyncpg_query,
    "treq": treq_get,
}


def attempt(name: str, cfg: Config) -> dict[str, Any]:
    """Run one operation and describe the outcome (never raises)."""
    from tlspin.integrations import find_pin_error

    try:
        value = OPERATIONS[name](cfg)
    except Exception as exc:
        error = find_pin_error(exc)
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "pin_error": None if error is None else type(error).__name__,
            "reason": None if error is None else error.reason,
        }
    return {"ok": True, "value": value}


if __name__ == "__main__":
    outcome = attempt(sys.argv[1], json.loads(sys.argv[2]))
    with open(sys.argv[3], "w", encoding="utf-8") as handle:
        json.dump(outcome, handle, default=repr)
