"""Hostile report values against a live collector: host names with zone IDs and markup,
duplicate keys, and a fuzzer over every field of every format, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tlspin.collector.models import Report

from .conftest import HOST, LiveServer, unique_host

# Host names that smuggled text through the collector: zone IDs (the stdlib keeps any
# character after '%'), control characters, markup, and what the databases cannot store.
SMUGGLED_HOSTS = [
    "::1%1",
    "fe80::1%eth0",
    "::1%<!channel>",
    "::1%\n*ALERT* <https://evil.example|click> <!channel>",
    "::1%\x00",
    "::1%\ud800",
    "a.test\x00",
    "a\ud800.test",
    "a.test\n",
    " a.test",
    "a.test\u202e",
    "<b>a.test</b>",
    "[::1%25eth0]",
    "a\u200b.test",
]


@pytest.mark.parametrize("field", ["hostname", "noted-hostname"])
def test_smuggling_host_names_get_400_and_nothing_is_stored(
    shared: LiveServer, make_report: Any, field: str
) -> None:
    """A zone ID, control character, markup or unstorable character in a reported host name
    gets 400 with the reason, on both databases; nothing is stored."""
    host = unique_host()
    with shared.client(token=None) as client:
        answers = [
            client.post("/reports", content=json.dumps(
                make_report(**{"hostname": host, field.replace("-", "_"): value})))
            for value in SMUGGLED_HOSTS
        ]
    assert [a.status_code for a in answers] == [400] * len(SMUGGLED_HOSTS), [
        (v, a.status_code) for v, a in zip(SMUGGLED_HOSTS, answers, strict=True)]
    assert all(f"{field} is not a valid host name" in a.json()["reason"] for a in answers)
    with shared.state.db.read() as conn:
        assert conn.execute(select(Report.id).where(Report.hostname == host)).all() == []


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("::1", "::1"), ("[::1]", "::1"), ("127.0.0.1", "127.0.0.1"),
     ("::ffff:127.0.0.1", "127.0.0.1"), ("2001:DB8::1", "2001:db8::1"),
     ("API.Tlspin.Test.", HOST), ("bücher.tlspin.test", "xn--bcher-kva.tlspin.test"),
     ("_acme.tlspin.test", "_acme.tlspin.test")],
)
def test_host_names_and_ip_literals_are_stored_canonical(
    shared: LiveServer, make_report: Any, sent: str, stored: str
) -> None:
    """Twin: DNS names (IDNs as A-labels) and IPv4/IPv6 literals are accepted, canonicalised."""
    with shared.client(token=None) as client:
        answer = client.post("/reports", json=make_report(hostname=sent, noted_hostname=sent))
    assert answer.status_code == 201, answer.text
    with shared.state.db.read() as conn:
        row = conn.execute(select(Report).where(Report.id == answer.json()["id"])).one()
    assert (row.hostname, row.noted_hostname) == (stored, stored)


def test_duplicate_keys_get_400(shared: LiveServer, make_report: Any) -> None:
    """A report naming a key twice (two parsers would read two reports) gets 400, at the top
    level and nested; the same report without the repeat is stored."""
    host = unique_host()
    good = json.dumps(make_report(hostname=host))
    twice = good[:-1] + ', "hostname": "other.tlspin.test"}'
    nested = good[:-1] + ', "extra": {"a": 1, "a": 2}}'
    with shared.client(token=None) as client:
        answers = [client.post("/reports", content=body) for body in (twice, nested, good)]
    assert [a.status_code for a in answers] == [400, 400, 201]
    assert "the key 'hostname' twice" in answers[0].json()["reason"]
    assert "the key 'a' twice" in answers[1].json()["reason"]
    with shared.state.db.read() as conn:
        assert len(conn.execute(select(Report.id).where(Report.hostname == host)).all()) == 1


# -- the fuzzer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Raw:
    """JSON text put into a report as it is (what json.dumps cannot write)."""

    text: str


def _nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


_ODD_DATES = [
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00Z", "2024-01-01T00:00:00+99:00", "+002024-01-01T00:00:00Z",
    "2024-W01-1", "2024-001", "20240101T000000Z", "1970-01-01T00:00:00.1234567891Z",
    "2024-01-01T00:00:00Z\x00", "2024-01-01T00:00:00\u202e", "0000-00-00", "-1",
    "2024-01-01T00:00:60Z", "2024-01-01 00:00:00.000000+00:00",
]
_WEIRD_TEXT = [
    "\x00", "\ud800", "a\udfffb", "\ud83d", "\u202e", "\r\n", "=cmd|'/C calc'!A0",
    "<script>alert(1)</script>", "%00", "::1%1", "' OR 1=1 --", "\\u0000",
    "𝕏" * 300, "x" * 70_000, "é" * 253,
]
values: st.SearchStrategy[Any] = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=40),  # NUL, surrogates...
    st.sampled_from(_WEIRD_TEXT),
    st.sampled_from(_ODD_DATES),
    st.datetimes().map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**300, -(10**4000)]).map(
        lambda n: Raw(str(n))),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0.0", "1E-400"]).map(Raw),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                     max_size=4),
        max_leaves=12,
    ),
    st.sampled_from([20, 500, 990, 5000, 100_000]).map(_nested),
    st.lists(st.sampled_from(_WEIRD_TEXT[:12]), max_size=20),
)
_EXTRA_KEYS = ["tlspin-version", "mode", "reason", "app-id", "rule", "app-platform",
               "validation-result", "enforce-pinning", "x\u0000y", "\ud800", ""]


def _body(report: dict[str, Any], field: str, value: Any) -> bytes:
    hole = "\u0001hole\u0001"
    text = json.dumps({**report, field: hole if isinstance(value, Raw) else value})
    if isinstance(value, Raw):
        text = text.replace(json.dumps(hole), value.text)
    return text.encode()


def _never_a_server_error(client: httpx.Client, body: bytes) -> None:
    answer = client.post("/reports", content=body)
    assert answer.status_code in (201, 400, 413), (answer.status_code, answer.text, body[:300])
    if answer.status_code != 201:
        return
    # What was stored must also be shown: every view of it answers without a 5xx, the lists
    # and CSV exports that hold it included (a pin stored as sent once broke all of them).
    stored = answer.json()
    detail = client.get(f"/api/reports/{stored['id']}")
    assert detail.status_code == 200, (detail.status_code, body[:300])
    host = {"host": detail.json()["hostname"]}
    for path, params in ((f"/reports/{stored['id']}", None),
                         (f"/api/incidents/{stored['incident']}", None),
                         (f"/incidents/{stored['incident']}", None),
                         ("/api/reports", host), ("/api/incidents", host),
                         ("/api/reports.csv", host), ("/api/incidents.csv", host),
                         ("/dashboard", None)):
        view = client.get(path, params=params)
        assert view.status_code == 200, (path, view.status_code, body[:300])


@pytest.mark.parametrize("fmt", ["tlspin", "hpkp", "trustkit-ios", "trustkit-android"])
def test_no_report_value_gets_a_server_error(
    shared: LiveServer, format_reports: dict[str, Any], fmt: str
) -> None:
    """Any value in any field (or in an added one) of any format gets 201, 400 or 413, never
    a 5xx, on SQLite and PostgreSQL; and every stored report can be shown, in its own views,
    the lists, both CSV exports and the dashboard."""
    base = format_reports[fmt]

    @given(field=st.sampled_from([*base, *_EXTRA_KEYS]), value=values)
    @example(field="hostname", value="::1%\x00")
    @example(field="hostname", value="::1%\ud800")
    @example(field="noted-hostname", value="::1%\ud800\x00")
    @example(field="hostname", value=_nested(5000))
    @example(field="date-time", value="0001-01-01T00:00:00+23:59")
    @example(field="port", value=Raw(str(10**4000)))
    @example(field="known-pins", value=["cert-sha256/\ud800"])
    @example(field="known-pins", value=["cert-sha256/\x00\n\u202e"])
    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    def run(field: str, value: Any) -> None:
        _never_a_server_error(client, _body({**base, "hostname": unique_host()}, field, value))

    with shared.client() as client:
        run()


def test_no_body_gets_a_server_error(shared: LiveServer) -> None:
    """Arbitrary bytes as a body (invalid UTF-8, encoded surrogates, UTF-16, a BOM) get 400."""

    @given(body=st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"\xed\xa0\x80", b"\xef\xbb\xbf{}",
                         '{"hostname":"a.test"}'.encode("utf-16"),
                         b'{"hostname":"a.test"}\x00', b'{"hostname":"\xc0\xae.test"}']),
    ))
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    def run(body: bytes) -> None:
        _never_a_server_error(client, body)

    with shared.client() as client:
        run()
