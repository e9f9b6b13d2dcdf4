"""The HTML dashboard over HTTP: login, escaping, CSP, pages, health views."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tlspin.collector.app import CSP
from tlspin.collector.monitor_runs import save_monitor_run

from .conftest import TOKEN, LiveServer, unique_host

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _login(server: LiveServer, token: str = TOKEN, next_: str = "/dashboard") -> httpx.Response:
    with server.client(token=None) as client:
        return client.post("/login", data={"token": token, "next": next_},
                           follow_redirects=False)


def test_dashboard_redirects_to_login_then_works_with_a_session(
    shared_sqlite: LiveServer,
) -> None:
    """Without a session the dashboard sends you to /login; the right token sets a cookie."""
    server = shared_sqlite
    with server.client(token=None) as anonymous:
        first = anonymous.get("/dashboard?range=7d", follow_redirects=False)
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2Fdashboard%3Frange%3D7d"
        login = anonymous.post("/login", data={"token": TOKEN, "next": "/dashboard?range=7d"},
                               follow_redirects=False)
        assert login.status_code == 303
        assert login.headers["location"] == "/dashboard?range=7d"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie.replace("Strict", "strict")
        page = anonymous.get("/dashboard")
        assert page.status_code == 200
        assert 'id="chart"' in page.text
        # The same session cookie opens the query API (and the CSV export).
        assert anonymous.get("/api/incidents").status_code == 200


def test_wrong_token_is_refused_and_redirects_stay_local(shared_sqlite: LiveServer) -> None:
    """A wrong token gets 401 and no cookie; ``next`` can never leave the site."""
    server = shared_sqlite
    wrong = _login(server, token="not-the-token-at-all")
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        assert _login(server, next_=target).headers["location"] == "/dashboard"


def test_login_attempts_are_rate_limited(serve: Callable[..., LiveServer], sqlite_url: str) -> None:
    """After ten failed logins a minute, even the right token waits (429)."""
    server = serve(db_url=sqlite_url)
    codes = [_login(server, token=f"wrong-token-{i:04d}-xxxx").status_code for i in range(10)]
    assert codes == [401] * 10
    assert _login(server).status_code == 429


def test_attacker_fields_render_inert(shared_sqlite: LiveServer, make_report: Any) -> None:
    """Script and event-handler payloads in every report field come out escaped, under a CSP."""
    server = shared_sqlite
    host = unique_host()
    with server.client() as client:
        created = client.post("/reports", json=make_report(
            hostname=host, app_id=XSS, app_version=XSS, reason=XSS, rule=[XSS])).json()
        pages = [client.get("/dashboard"), client.get(f"/incidents/{created['incident']}"),
                 client.get(f"/reports/{created['id']}")]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert "<script" not in page.text
        assert "onerror=alert" not in page.text.replace(
            "onerror=alert(1)&gt;", "")
        assert not re.search(r"<img[^>]*onerror", page.text)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[1].text  # app id table
    assert "script-src" not in CSP
    assert "default-src 'none'" in CSP


def test_dashboard_shows_chart_hosts_issuers_and_detail(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """The front page charts the reports, lists hosts and the MITM issuer; detail has the chain."""
    server = serve(db_url=sqlite_url)
    with server.client() as client:
        for _ in range(3):
            incident = client.post("/reports", json=make_report()).json()["incident"]
        page = client.get("/dashboard").text
        detail = client.get(f"/incidents/{incident}").text
        css = client.get("/static/dashboard.css")
        missing = client.get("/static/../app.py")
    assert re.search(r'<strong id="total">3</strong>', page)
    assert len(re.findall(r'<rect class="bar"', page)) == 1
    assert "3 reports</title>" in page
    assert "CN=mitmproxy,O=tlspin testing</td><td>3</td>" in page
    assert 'id="chain"' in detail
    assert detail.count('class="unmatched"') == 2
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404


def test_resolve_form_needs_the_csrf_token(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """The dashboard's resolve button works with its CSRF token and is refused without it."""
    server = serve(db_url=sqlite_url)
    with server.client() as api:
        incident = api.post("/reports", json=make_report()).json()["incident"]
    with server.client(token=None) as browser:
        browser.post("/login", data={"token": TOKEN})
        page = browser.get(f"/incidents/{incident}").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        forged = browser.post(f"/incidents/{incident}/resolve", data={"csrf": "0" * 64},
                              follow_redirects=False)
        assert forged.status_code == 403
        assert server.state.db.open_incidents() == 1
        ok = browser.post(f"/incidents/{incident}/resolve", data={"csrf": csrf.group(1)},
                          follow_redirects=False)
    assert ok.status_code == 303
    assert server.state.db.open_incidents() == 0


@contextlib.contextmanager
def _logged_in(server: LiveServer) -> Iterator[httpx.Client]:
    """A browser-like client holding a dashboard session (the cookie, no bearer token)."""
    with server.client(token=None) as browser:
        assert browser.post("/login", data={"token": TOKEN}).status_code == 303
        yield browser


def test_logout_needs_the_csrf_token(serve: Callable[..., LiveServer], sqlite_url: str) -> None:
    """A forged logout (the session cookie, no CSRF token, as a page on another site would
    post it) is refused and the session stays; the dashboard's own button logs out."""
    server = serve(db_url=sqlite_url)
    with _logged_in(server) as browser:
        page = browser.get("/dashboard").text
        csrf = re.search(r'action="/logout">\s*<input type="hidden" name="csrf" '
                         r'value="([0-9a-f]+)"', page)
        assert csrf is not None
        for forged in ({}, {"csrf": "0" * 64}):
            refused = browser.post("/logout", data=forged, follow_redirects=False)
            assert refused.status_code == 403
            assert "set-cookie" not in refused.headers
        assert browser.get("/dashboard", follow_redirects=False).status_code == 200
        out = browser.post("/logout", data={"csrf": csrf.group(1)}, follow_redirects=False)
        assert (out.status_code, out.headers["location"]) == (303, "/login")
        assert 'tlspin_session=""' in out.headers["set-cookie"]
        assert browser.get("/dashboard", follow_redirects=False).status_code == 303


def test_api_writes_take_the_bearer_token_not_the_session_cookie(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """A form posted with only the session cookie (no CSRF token) cannot resolve an incident
    or submit monitor runs through the API; reads keep working with the cookie, and writes
    with the bearer token."""
    server = serve(db_url=sqlite_url)
    with server.client() as api:
        incident = api.post("/reports", json=make_report()).json()["incident"]
    run = {"run": {"started_at": "2024-01-01T00:00:00Z"}, "results": []}
    with _logged_in(server) as browser:
        assert browser.post(f"/api/incidents/{incident}/resolve").status_code == 401
        assert browser.post("/api/monitor-runs", json=run).status_code == 401
        assert server.state.db.open_incidents() == 1
        assert browser.get("/api/incidents").status_code == 200
        assert browser.get("/api/reports.csv").status_code == 200
    with server.client() as api:
        assert api.post(f"/api/incidents/{incident}/resolve").status_code == 200
        assert api.post("/api/monitor-runs", json=run).status_code == 201
    assert server.state.db.open_incidents() == 0


@pytest.mark.parametrize("path", ["/incidents/0", "/incidents/99999999", "/reports/77777777",
                                  "/health/endpoint?e=", "/dashboard?range=1y"])
def test_odd_dashboard_urls_never_fail(shared_sqlite: LiveServer, path: str) -> None:
    """Unknown ids and odd parameters get a page or a 404, never a 5xx."""
    with shared_sqlite.client() as client:
        response = client.get(path)
    assert response.status_code in (200, 404)


def _result(endpoint: str, status: str, **extra: Any) -> dict[str, Any]:
    host, _, port = endpoint.partition(":")
    return {
        "endpoint": endpoint, "host": host, "port": int(port.split("@")[0]), "status": status,
        "reasons": extra.pop("reasons", []), "chain": [], "matched": [], "changes": [], **extra,
    }


def test_health_page_shows_latest_results_timeline_and_history(
    serve: Callable[..., LiveServer], sqlite_url: str
) -> None:
    """The health page lists each endpoint's latest state and expiries; history shows all runs."""
    server = serve(db_url=sqlite_url)
    now = dt.datetime.now(dt.UTC)
    save_monitor_run(server.state.db, {"started_at": now - dt.timedelta(hours=1)}, [
        _result("a.test:443", "green", leaf_days_left=80),
    ])
    save_monitor_run(server.state.db, {"started_at": now, "policy_name": "prod"}, [
        _result("a.test:443", "red", reasons=["mismatch: <b>no pin</b>"], leaf_days_left=79,
                rule_days_left=10, chain=[{"subject": "CN=a.test", "issuer": "CN=<i>CA</i>"}]),
        _result("b.test:8443@127.0.0.2", "amber", reasons=["expiring: soon"],
                leaf_days_left=-3, min_intermediate_days_left=400),
    ])
    with server.client() as client:
        health = client.get("/health").text
        history = client.get("/health/endpoint", params={"e": "a.test:443"}).text
    assert health.index("a.test:443") < health.index("b.test:8443@127.0.0.2")  # red first
    assert "mismatch: &lt;b&gt;no pin&lt;/b&gt;" in health
    assert "leaf expired 3 days ago" in health
    assert "rule expires in 10 days" in health
    assert 'href="/health/endpoint?e=b.test%3A8443%40127.0.0.2"' in health
    assert history.count("status-green") >= 1
    assert history.count("status-red") >= 1
    assert "CN=&lt;i&gt;CA&lt;/i&gt;" in history
