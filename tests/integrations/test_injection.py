"""Bytes a proxy slips into a tunnel before the origin's TLS never pass for the origin's.

The hostile proxy tunnels honestly to the real origin, whose pins pass; its own bytes follow
its CONNECT reply. A client that kept them would return them as the origin's response.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import pytest

from tlspin import PinningUnavailableError, PinPolicy, create_context
from tlspin.integrations import stdlib
from tlspin.testing.pki import client_trust_context
from tlspin.testing.servers import TLSServer

from ._drivers import DRIVERS, UNSUPPORTED
from ._hostile import INJECTED, InjectingProxy, Mode, block_loop_until_sent
from .conftest import BODY, Pki, Route

REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"
HOST = "::1"
KINDS = ("connect", "https-proxy")


@pytest.fixture(scope="module")
def origin(pki: Pki) -> Iterator[TLSServer]:
    """The legitimate origin (its pins pass) that the hostile proxy tunnels to."""
    server = TLSServer(pki.leaf, host=HOST, alpn=("h2", "http/1.1"), response_body=BODY).start()
    try:
        yield server
    finally:
        server.stop()


def _proxy(pki: Pki, kind: str, mode: Mode, inject: bytes) -> InjectingProxy:
    leaf = pki.proxy_leaf if kind == "https-proxy" else None
    return InjectingProxy(mode=mode, tls_leaf=leaf, inject=inject).start()


def _proxy_ssl(pki: Pki, kind: str) -> ssl.SSLContext | None:
    return client_trust_context(pki.proxy_ca) if kind == "https-proxy" else None


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    try:
        writer.write(REQUEST)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["same", "separate"])
@pytest.mark.parametrize("hostile", [True, False], ids=["hostile", "honest"])
def test_open_tunnel_refuses_bytes_after_the_connect_reply(
    pki: Pki, origin: TLSServer, good_policy: PinPolicy, kind: str, mode: Mode, hostile: bool
) -> None:
    """open_tunnel() refuses a tunnel holding proxy bytes; an honest tunnel still works."""
    proxy = _proxy(pki, kind, mode, INJECTED if hostile else b"")

    async def run() -> bytes:
        opening = asyncio.ensure_future(
            stdlib.open_tunnel(
                "localhost",
                proxy.port,
                HOST,
                origin.port,
                good_policy,
                cafile=pki.cafile,
                proxy_ssl=_proxy_ssl(pki, kind),
            )
        )
        if mode == "separate":
            await block_loop_until_sent(proxy)
        return await _exchange(*await opening)

    received = len(origin.received)
    try:
        if not hostile:
            assert asyncio.run(run()).endswith(b"\r\n\r\n" + BODY)
            return
        with pytest.raises(PinningUnavailableError, match="before the TLS handshake") as excinfo:
            asyncio.run(run())
    finally:
        proxy.stop()
    assert excinfo.value.reason == "cleartext-before-tls"
    assert excinfo.value.hostname == HOST
    origin.wait_idle()
    assert origin.received[received:] == b""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hostile", [True, False], ids=["hostile", "honest"])
def test_start_tls_refuses_bytes_that_arrived_after_the_head_was_read(
    pki: Pki, origin: TLSServer, good_policy: PinPolicy, kind: str, hostile: bool
) -> None:
    """Bytes arriving between a hand-read CONNECT reply and start_tls() make it refuse."""
    proxy = _proxy(pki, kind, "later", INJECTED if hostile else b"")
    closed: list[bool] = []

    async def run() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            proxy.port,
            ssl=_proxy_ssl(pki, kind),
            server_hostname="localhost" if kind == "https-proxy" else None,
        )
        writer.write(f"CONNECT [{HOST}]:{origin.port} HTTP/1.1\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        proxy.head_read.set()
        # Once the proxy has sent its bytes, the loop has read them before this returns.
        await asyncio.to_thread(proxy.sent.wait, 10)
        try:
            await stdlib.start_tls(writer, good_policy, server_hostname=HOST, cafile=pki.cafile)
        finally:
            closed.append(writer.is_closing())
        return await _exchange(reader, writer)

    try:
        if not hostile:
            assert asyncio.run(run()).endswith(b"\r\n\r\n" + BODY)
            assert closed == [False]
            return
        with pytest.raises(PinningUnavailableError, match=r"\d+ bytes arrived") as excinfo:
            asyncio.run(run())
    finally:
        proxy.stop()
    assert excinfo.value.reason == "cleartext-before-tls"
    assert closed == [True]  # the stream is not left open to be used in clear


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_after_the_client_hello_go_to_tls_and_fail_it(
    pki: Pki, origin: TLSServer, good_policy: PinPolicy, kind: str
) -> None:
    """Bytes arriving once the upgrade began are TLS input: the handshake fails on them."""
    proxy = _proxy(pki, kind, "hello", INJECTED)

    async def run() -> bytes:
        return await _exchange(
            *await stdlib.open_tunnel(
                "localhost",
                proxy.port,
                HOST,
                origin.port,
                good_policy,
                cafile=pki.cafile,
                proxy_ssl=_proxy_ssl(pki, kind),
            )
        )

    try:
        with pytest.raises(Exception) as excinfo:  # any type: see below
            asyncio.run(run())
    finally:
        proxy.stop()
    # Python 3.11 and 3.12 turn a failed TLS-in-TLS handshake into a TypeError (a CPython bug in
    # SSLProtocol._abort), with the TLS error as its context.
    chain: list[BaseException] = []
    error: BaseException | None = excinfo.value
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, ssl.SSLError) for e in chain), chain
    assert not any(isinstance(e, PinningUnavailableError) for e in chain)


@pytest.mark.parametrize(
    ("client", "kind"),
    [(c, k) for c in DRIVERS for k in KINDS if (c, k) not in UNSUPPORTED],
)
def test_no_client_returns_bytes_the_proxy_injected(
    pki: Pki, origin: TLSServer, good_policy: PinPolicy, client: str, kind: str
) -> None:
    """Through every integration, injected bytes are refused or dropped, never returned."""
    proxy = _proxy(pki, kind, "same", INJECTED)
    route = Route(kind, proxy, _proxy_ssl(pki, kind))
    ctx = create_context(good_policy, cafile=pki.cafile)
    try:
        if client == "asyncio":
            with pytest.raises(PinningUnavailableError, match="before the TLS handshake"):
                DRIVERS[client](ctx, HOST, origin.port, route)
        else:
            # These clients read the CONNECT reply through a buffer that they drop before TLS.
            assert DRIVERS[client](ctx, HOST, origin.port, route) == BODY
    finally:
        proxy.stop()
    assert proxy.connects == [f"[{HOST}]:{origin.port}"] or proxy.connects == [
        f"{HOST}:{origin.port}"
    ]
