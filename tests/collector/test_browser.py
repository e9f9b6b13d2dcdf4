"""The dashboard in Debian's chromium (headless, via playwright): login, chart, XSS stays inert."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tlspin
from tlspin.exceptions import SinglePinWarning
from tlspin.reporting import Reporter
from tlspin.testing.servers import TLSServer

from .conftest import PKI, TOKEN, LiveServer

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TLSPIN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAYLOAD = ('<script>window.__xss = 1; alert(1)</script>'
           '<img src=x onerror="window.__xss = 2; alert(2)">')


def _chromium() -> str:
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but chromium is missing at {CHROMIUM}")
    pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")


def _real_pin_failure(pki: PKI, collector_url: str) -> None:
    """A tlspin client makes a pinned request to a loopback server with the wrong pins."""
    reporter = Reporter(collector_url + "/reports", app_id=PAYLOAD, app_version="9.9")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinglePinWarning)
        rule = tlspin.PinRule("localhost", [pki.mitm.pin, pki.backup_pin])
    policy = reporter.attach(tlspin.PinPolicy([rule]))
    ctx = tlspin.create_context(policy, cadata=pki.root.cert_pem.decode())
    with TLSServer(pki.intermediate.issue("localhost")) as origin:
        conn = http.client.HTTPSConnection("localhost", origin.port, context=ctx, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("GET", "/")
        conn.close()
        assert origin.received == b""  # the refused connection never sent the request
    assert reporter.flush(10)
    assert reporter.stats.sent == 1
    reporter.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module (never downloaded: Debian's own binary)."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


def test_dashboard_in_chromium(
    serve: Callable[..., LiveServer], sqlite_url: str, pki: PKI, browser: Any
) -> None:
    """Log in, see the incident of a real pin failure and its chart; the XSS payload is inert."""
    server = serve(db_url=sqlite_url)
    _real_pin_failure(pki, server.url)

    dialogs: list[str] = []
    context = browser.new_context()
    try:
        page = context.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(server.url + "/dashboard")
        assert page.url.startswith(server.url + "/login")
        page.fill("#token", TOKEN)
        page.click("#login")
        page.wait_for_url(server.url + "/dashboard")

        assert page.locator("#total").inner_text() == "1"
        assert page.locator("svg#chart rect.bar").count() == 1
        assert "1 report" in page.locator("svg#chart rect.bar title").text_content()
        assert page.locator("#hosts td", has_text="localhost").count() == 1
        assert page.locator("#issuers td", has_text="tlspin test issuing CA").count() == 1

        page.click("#incidents a >> nth=0")
        page.wait_for_selector("#chain")
        incident_url = page.url
        rows = page.locator("#chain tbody tr")
        assert rows.count() == 2  # the served leaf and intermediate
        assert [rows.nth(i).locator("td").nth(5).inner_text() for i in range(2)] == ["no", "no"]
        assert "CN=localhost" in rows.nth(0).inner_text()
        body = page.inner_text("body")
        assert PAYLOAD in body  # shown as text, exactly as sent
        page.click("#reports a >> nth=0")
        page.wait_for_selector("#raw")
        assert "window.__xss" in page.inner_text("#raw")

        for url in (server.url + "/dashboard", incident_url, page.url):
            page.goto(url)
            page.wait_for_load_state("load")
            assert page.evaluate("typeof window.__xss") == "undefined"
            assert page.locator("img").count() == 0
            assert page.locator("body script").count() == 0
    finally:
        context.close()
    assert dialogs == []


def test_browser_without_login_sees_no_data(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any, browser: Any
) -> None:
    """A browser without the token lands on the login page and a wrong token shows an error."""
    server = serve(db_url=sqlite_url)
    with server.client() as client:
        client.post("/reports", json=make_report())
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/api/incidents")
        assert "bearer token" in page.inner_text("body")
        page.goto(server.url + "/incidents/1")
        page.fill("#token", "definitely-not-the-token")
        page.click("#login")
        assert "not right" in page.inner_text(".error")
        assert "api.tlspin.test" not in page.content()
    finally:
        context.close()
