"""``tlspin lint``: every code fires on its mistake and stays quiet on the fixed policy."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from tlspin.hosts import HostPattern
from tlspin.lint import CODES, lint_text, pattern_overlap

from .world import World, invoke

A = "sha256/" + "A" * 43 + "="
B = "sha256/" + "B" * 42 + "A="
C = "sha256/" + "C" * 42 + "A="
TODAY = dt.date(2026, 1, 1)
SOON = "2026-06-01"  # within a year of TODAY, more than 30 days away


def codes(text: str, **kw: object) -> set[str]:
    """The set of codes lint_text reports for a TOML document (as of TODAY)."""
    return {f.code for f in lint_text(text, today=TODAY, **kw).findings}  # type: ignore[arg-type]


def toml(
    hosts: str = '"api.example.com"', pins: str = f'"{A}", "{B}"', extra: str = f"expires = {SOON}"
) -> str:
    """A one-rule policy document."""
    return f"[[rule]]\nhosts = [{hosts}]\npins = [{pins}]\n{extra}\n"


CLEAN = toml(pins=f'{{ pin = "{A}", role = "intermediate" }}, {{ pin = "{B}", role = "backup" }}')

CASES = {
    "TP000": toml(extra=f'expires = {SOON}\nmode = "enforced"'),
    "TP001": toml(pins=f'"{A}"'),
    "TP004": toml(pins=f'{{ pin = "{A}", role = "leaf" }}, {{ pin = "{B}", role = "leaf" }}'),
    "TP005": toml(
        pins=f'{{ pin = "{A}", role = "leaf" }}, {{ pin = "{B}", role = "intermediate" }}'
    ),
    "TP006": toml(hosts='"a*.example.com"'),
    "TP007": toml(hosts='"*.co.uk"'),
    "TP008": toml(hosts='"github.io"'),
    "TP009": toml(extra="expires = 2025-12-31"),
    "TP010": toml(extra="expires = 2027-06-01"),
    "TP011": toml(extra="expires = 2026-01-20"),
    "TP012": toml(extra=""),
    "TP013": toml() + toml(hosts='"**.example.com"', pins=f'"{A}", "{C}"'),
    "TP014": toml(extra=f'expires = {SOON}\ndeny = ["{B}"]'),
    "TP015": toml(extra=f'expires = {SOON}\nmode = "report"'),
    "TP016": toml(pins=f'{{ pin = "{A}", not_after = 2025-01-01 }}, "{B}"'),
    "TP019": toml(pins=f'"cert-sha256/{"ab" * 32}", "{B}"'),
    "TP020": toml(extra=f'expires = {SOON}\nreport_uri = "http://127.0.0.1:6379/x"'),
}


def test_clean_policy_has_no_findings() -> None:
    """A rule with a CA pin, a backup pin and a near expiry is clean."""
    assert codes(CLEAN) == set()


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_fires(code: str) -> None:
    """Each offline code fires on its own mistake (and CLEAN, its fixed twin, stays clean)."""
    found = codes(CASES[code])
    assert code in found
    severity = next(
        f.severity for f in lint_text(CASES[code], today=TODAY).findings if f.code == code
    )
    assert severity == CODES[code][0]


@pytest.mark.parametrize(
    ("uri", "fires"),
    [("http://127.0.0.1:6379/x", True), ("https://10.0.0.7/r", True),
     ("https://localhost:8787/r", True), ("http://reports.example.com/r", True),
     ("https://reports.example.com/r", False)],
)
def test_report_uri_toward_the_local_network_or_in_clear_is_tp020(uri: str, fires: bool) -> None:
    """TP020 flags a rule's report_uri every client would send to its own network or in
    clear; a public https URI (twin) is clean."""
    found = codes(CLEAN + f'report_uri = "{uri}"\n')
    assert ("TP020" in found) is fires


def test_cross_rule_deny_clash() -> None:
    """A pin denied by a rule and allowed by an overlapping one is TP014; disjoint rules are not."""
    overlapping = toml() + toml(
        hosts='"**.example.com"', pins=f'"{C}", "{A}"', extra=f'expires = {SOON}\ndeny = ["{B}"]'
    )
    disjoint = toml() + toml(
        hosts='"**.example.org"', pins=f'"{C}", "{A}"', extra=f'expires = {SOON}\ndeny = ["{B}"]'
    )
    assert "TP014" in codes(overlapping)
    assert "TP014" not in codes(disjoint)


def test_one_bad_rule_does_not_hide_others() -> None:
    """A broken rule is a finding with its line; the other rules are still linted."""
    report = lint_text(toml(hosts='"*.com"') + toml(pins=f'"{A}"'), today=TODAY)
    by_code = {f.code: f for f in report.findings}
    assert by_code["TP007"].rule == 0
    assert by_code["TP007"].line == 2  # the hosts key; the [[rule]] header is line 1
    assert "such as '*.example.com'" in by_code["TP007"].message
    assert by_code["TP001"].rule == 1
    assert by_code["TP001"].line == 5


BAD_KEYS = {
    "pins": toml(pins=f'"{A}",\n  "sha256/not-a-pin"'),
    "mode": toml(extra=f'expires = {SOON}\n\nmode = "enforced"'),
    "expires": toml(extra='expires = "tomorrow"'),
    "ports": toml(extra=f"expires = {SOON}\nports = [0]"),
    "deny": toml(extra=f'expires = {SOON}\ndeny = ["nope"]'),
}


@pytest.mark.parametrize("key", sorted(BAD_KEYS))
def test_unloadable_rule_names_the_line_of_the_bad_key(world: World, key: str) -> None:
    """TP000 points at the line of the key at fault, the line check and export name too."""
    text = "# a comment\n" + toml() + "\n" + BAD_KEYS[key]
    finding = next(f for f in lint_text(text, today=TODAY).findings if f.rule == 1)
    assert finding.code == "TP000"
    lines = text.splitlines()
    header = [i + 1 for i, ln in enumerate(lines) if ln == "[[rule]]"][1]
    wanted = next(i + 1 for i, ln in enumerate(lines) if i >= header and ln.startswith(f"{key} ="))
    assert finding.line == wanted != header
    assert f"key '{key}'" in finding.message
    path = world.write("bad.toml", text)
    exported = invoke("export", str(path), "--format", "json")
    assert exported.exit_code == 2
    assert f"line {wanted}, rule #2, key '{key}'" in exported.stderr
    shown = invoke("lint", str(path), "--json")
    assert shown.exit_code == 1
    assert {"code": "TP000", "line": wanted} in [
        {"code": f["code"], "line": f["line"]} for f in json.loads(shown.stdout)["findings"]
    ]


def test_loaded_rules_keep_the_header_line() -> None:
    """Twin: findings about a rule that loads still point at its [[rule]] header."""
    report = lint_text("# c\n" + toml(pins=f'"{A}"'), today=TODAY)
    assert [(f.code, f.line) for f in report.findings] == [("TP001", 2)]


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ("api.example.com", "**.example.com", "api.example.com"),
        ("*.example.com", "**.example.com", "*.example.com"),
        ("*.example.com", "**.a.example.com", "a.example.com"),
        ("**.a.example.com", "**.example.com", "**.a.example.com"),
        ("*.example.com", "x.y.example.com", None),
        ("*.example.com", "example.com", None),
        ("**.example.org", "**.example.com", None),
    ],
)
def test_pattern_overlap(a: str, b: str, shared: str | None) -> None:
    """Overlaps follow OkHttp semantics: *. is one label, **. any depth including the base."""
    pa, pb = HostPattern.parse(a), HostPattern.parse(b)
    assert pattern_overlap(pa, pb) == shared
    assert pattern_overlap(pb, pa) == shared


def test_include_subdomains_counts_as_any_depth() -> None:
    """include_subdomains on an exact host overlaps its subdomains, and not without it."""
    pa, pb = HostPattern.parse("example.com"), HostPattern.parse("api.example.com")
    assert pattern_overlap(pa, pb, a_sub=True) == "api.example.com"
    assert pattern_overlap(pa, pb) is None


def test_live_codes(world: World) -> None:
    """--live: TP002 with only chain pins, TP003 with no matching pin, none with a backup pin."""
    port = str(world.server.port)
    cases = {
        "TP002": f'"{world.leaf_pin}", "{world.inter_pin}"',
        "TP003": f'"{A}", "{B}"',
        "": f'"{world.inter_pin}", "{world.backup_pin}"',
    }
    for code, pins in cases.items():
        path = world.write(
            "live.toml",
            toml(
                hosts='"localhost"',
                pins=pins,
                extra=f"expires = {dt.date.today() + dt.timedelta(days=90)}",
            ),
        )
        result = invoke(
            "lint", str(path), "--live", "--cafile", str(world.root_pem), "--port", port, "--json"
        )
        report = json.loads(result.stdout)
        found = {f["code"] for f in report["findings"]}
        if code:
            assert code in found, found
            assert result.exit_code == 1
        else:
            assert found == set(), found
            assert result.exit_code == 0


def test_live_unreachable_and_wildcard(world: World) -> None:
    """--live: an untrusted server is TP017, a one-label wildcard rule is TP018 (info)."""
    text = toml(hosts='"localhost"') + toml(hosts='"*.example.com"', pins=f'"{C}", "{B}"')
    path = world.write("l.toml", text)
    result = invoke(
        "lint",
        str(path),
        "--live",
        "--port",
        str(world.rogue_server.port),
        "--cafile",
        str(world.root_pem),
        "--json",
    )
    found = {f["code"]: f for f in json.loads(result.stdout)["findings"]}
    assert "certificate verification failed" in found["TP017"]["message"]
    assert found["TP018"]["severity"] == "info"
    assert result.exit_code == 1


def test_cli_exit_codes_and_table(world: World) -> None:
    """Exit 0 for a clean file, 1 with errors, --fail-on warning makes warnings fail."""
    clean = world.write(
        "clean.toml", CLEAN.replace(SOON, str(dt.date.today() + dt.timedelta(days=90)))
    )
    warn_only = world.write("warn.toml", CLEAN.replace(f"expires = {SOON}", ""))
    error = world.write("err.toml", toml(pins=f'"{A}"'))
    assert invoke("lint", str(clean)).exit_code == 0
    assert invoke("lint", str(warn_only)).exit_code == 0
    assert invoke("lint", str(warn_only), "--fail-on", "warning").exit_code == 1
    result = invoke("lint", str(error))
    assert result.exit_code == 1
    assert "TP001" in result.stdout
    assert "error" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[rule]\nhosts = 1", "invalid TOML"),
        ("", "empty"),
        ("rules = []", "unknown top-level key"),
        ("\xff\xfe", "not UTF-8"),
    ],
)
def test_unreadable_input_exits_2(world: World, content: str, message: str) -> None:
    """Bad TOML, an empty policy, a wrong top-level key or non-UTF-8 bytes exit 2 with one line."""
    raw = content.encode("latin-1") if content.startswith("\xff") else content.encode()
    path = world.write("bad.toml", raw)
    result = invoke("lint", str(path))
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_file_exits_2(tmp_path: Path) -> None:
    """A policy that does not exist is exit 2 with one line."""
    result = invoke("lint", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "no such policy file" in result.stderr


def test_json_policy_is_linted(world: World) -> None:
    """A .json policy is read as JSON and gets the same findings."""
    path = world.write(
        "p.json", json.dumps({"rule": [{"hosts": ["api.example.com"], "pins": [A]}]})
    )
    report = json.loads(invoke("lint", str(path), "--json").stdout)
    assert {f["code"] for f in report["findings"]} >= {"TP001", "TP012"}


@pytest.mark.parametrize("doc", ["README.md", "docs/cli.md"])
def test_docs_list_every_code(doc: str) -> None:
    """The README and docs/cli.md list every lint code with its severity."""
    text = (Path(__file__).parents[2] / doc).read_text(encoding="utf-8")
    for code, (severity, _) in CODES.items():
        assert re.search(rf"\|\s*{code}\s*\|\s*{severity}\s*\|", text), code


def test_live_without_cafile_suggests_it(world: World) -> None:
    """--live against a private CA without --cafile: TP017 says the system store refused it and
    suggests --cafile (twin: test_live_codes passes with --cafile)."""
    path = world.write("p.toml", toml(hosts='"localhost"', extra=f"ports = [{world.server.port}]"))
    result = invoke("lint", str(path), "--live", "--json")
    found = {f["code"]: f["message"] for f in json.loads(result.stdout)["findings"]}
    assert "system trust store" in found["TP017"]
    assert "--cafile" in found["TP017"]
