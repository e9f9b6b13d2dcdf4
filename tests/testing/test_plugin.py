"""The pytest plugin: the README example, its failure twin, and each fixture and assertion."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

import tlspin
from tlspin.integrations.requests import session
from tlspin.testing.assertions import assert_accepted as plain_assert_accepted
from tlspin.testing.assertions import assert_refused as plain_assert_refused
from tlspin.testing.proxies import MitmProxy
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).with_name("readme_example.py")
PINNED_LINE = 'client = session(pki.policy("localhost"), cafile=pki.cafile)  # your client here'
UNPINNED_LINE = "client = requests.Session(); client.verify = pki.cafile  # unpinned"
# Entry-point plugins still load (that is what is under test); these unrelated ones cost seconds.
PYTEST_ARGS = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:schemathesis",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:anyio",
)


def unpinned(pki: ServerPKI) -> requests.Session:
    """A client that verifies CAs and host names but pins nothing."""
    client = requests.Session()
    client.verify = pki.cafile
    return client


# --- the README example ------------------------------------------------------------------


def test_readme_example_passes(pytester: pytest.Pytester) -> None:
    """The README's ten-line test passes as written, with the plugin found by its entry point."""
    pytester.makepyfile(test_readme=EXAMPLE.read_text())
    result = pytester.runpytest_subprocess(*PYTEST_ARGS)
    result.assert_outcomes(passed=1)


def test_readme_example_fails_for_an_unpinned_client(pytester: pytest.Pytester) -> None:
    """Twin: the same test with an unpinned client fails at assert_refused (MITM succeeded)."""
    text = EXAMPLE.read_text()
    assert PINNED_LINE in text
    pytester.makepyfile(test_readme="import requests\n" + text.replace(PINNED_LINE, UNPINNED_LINE))
    result = pytester.runpytest_subprocess(*PYTEST_ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected the call to be refused by pinning, but it succeeded*"])
    # The traceback ends at the test's own line: the plugin's frames are hidden.
    result.stdout.fnmatch_lines([">*assert_refused(lambda: client.get(tls_server.url))"])
    assert "tlspin/testing/" not in result.stdout.str()


@pytest.mark.parametrize("doc", ["README.md", "docs/testing.md"])
def test_docs_show_the_example_verbatim(doc: str) -> None:
    """The README and docs/testing.md quote tests/testing/readme_example.py exactly, so the
    example they show is the one the suite runs."""
    text = (ROOT / doc).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert EXAMPLE.read_text() in blocks


def test_plugin_import_loads_no_fixture_machinery() -> None:
    """Importing the plugin pulls in none of the PKI, server or proxy modules."""
    code = (
        "import sys, tlspin.testing.plugin\n"
        "heavy = [m for m in ('tlspin.testing.pki', 'tlspin.testing.servers', "
        "'tlspin.testing.proxies', 'tlspin.testing.scenarios', 'requests') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("assert_refused(lambda: 1)", "*expected the call to be refused by pinning*"),
        ("assert_accepted(boom)", "*expected the call to succeed, but it failed*"),
    ],
)
def test_failing_assertion_hides_its_own_frames(
    pytester: pytest.Pytester, call: str, expected: str
) -> None:
    """A failing assert_refused / assert_accepted shows the test's line, not tlspin's frames."""
    pytester.makepyfile(
        f"""
        from tlspin.testing.assertions import assert_accepted, assert_refused

        def boom():
            raise ConnectionError("down")

        def test_it():
            {call}
        """
    )
    result = pytester.runpytest_inprocess(*PYTEST_ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f">*{call}", expected])
    assert "tlspin/testing/assertions.py" not in result.stdout.str()


def test_assert_refused_fixture_needs_a_server(pytester: pytest.Pytester) -> None:
    """The assert_refused fixture refuses to pass without a server whose bytes it can count."""
    pytester.makepyfile(
        """
        import tlspin

        def test_no_server(assert_refused):
            def refused():
                raise tlspin.PinMismatchError("refused", hostname="localhost")
            assert_refused(refused)
        """
    )
    result = pytester.runpytest_inprocess(*PYTEST_ARGS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert_refused must check that zero bytes reached the server*"])


def test_session_without_fixtures_loads_nothing(pytester: pytest.Pytester) -> None:
    """A test session that uses no tlspin fixture never imports the test kit's modules."""
    pytester.makepyfile(
        """
        import sys

        def test_nothing_loaded():
            assert "tlspin.testing.pki" not in sys.modules
            assert "tlspin.testing.proxies" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess(*PYTEST_ARGS)
    result.assert_outcomes(passed=1)


# --- fixtures and scenarios --------------------------------------------------------------


def test_pinned_client_refuses_rogue_ca(
    pki: ServerPKI,
    tls_server: TLSServer,
    rogue_ca_issues: Callable[..., Any],
    assert_refused: Callable[..., Any],
) -> None:
    """A certificate from the trusted attacker CA is refused by pins, with zero bytes sent."""
    rogue_ca_issues("localhost")
    error = assert_refused(lambda: session(pki.policy(), cafile=pki.cafile).get(tls_server.url))
    assert isinstance(error, tlspin.PinMismatchError)
    assert tls_server.received == b""


def test_unpinned_client_accepts_rogue_ca(
    pki: ServerPKI,
    tls_server: TLSServer,
    rogue_ca_issues: Callable[..., Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """Twin: CA verification alone accepts the attacker's certificate (why pins exist)."""
    rogue_ca_issues("localhost")
    response = assert_accepted(lambda: unpinned(pki).get(tls_server.url))
    assert response.status_code == 200


def test_rotation_with_same_key_keeps_leaf_pins_working(
    pki: ServerPKI,
    tls_server: TLSServer,
    rotate_leaf: Callable[..., Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """Renewing the certificate on the same key keeps a leaf-pinned client working."""
    old = pki.leaf
    new = rotate_leaf(same_key=True)
    assert new.cert.serial_number != old.cert.serial_number
    assert new.pin == old.pin
    assert_accepted(lambda: session(pki.policy(), cafile=pki.cafile).get(tls_server.url))


def test_rotation_to_new_key_breaks_leaf_pins(
    pki: ServerPKI,
    tls_server: TLSServer,
    rotate_leaf: Callable[..., Any],
    assert_refused: Callable[..., Any],
) -> None:
    """Twin: a new key that is not the backup bricks a client pinned to the old leaf key."""
    policy = pki.policy()
    rotate_leaf(same_key=False)
    assert_refused(lambda: session(policy, cafile=pki.cafile).get(tls_server.url))


def test_rotation_to_new_key_keeps_intermediate_pins(
    pki: ServerPKI,
    tls_server: TLSServer,
    rotate_leaf: Callable[..., Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """A client pinned to the intermediate survives a new leaf key."""
    policy = pki.policy(level="intermediate")
    rotate_leaf(same_key=False)
    assert_accepted(lambda: session(policy, cafile=pki.cafile).get(tls_server.url))


def test_rotation_to_backup_keeps_working(
    pki: ServerPKI,
    tls_server: TLSServer,
    rotate_to_backup: Callable[[], Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """Moving the server to the pinned backup key keeps the pinned client working."""
    policy = pki.policy()
    leaf = rotate_to_backup()
    assert leaf.pin == pki.backup_pin
    assert_accepted(lambda: session(policy, cafile=pki.cafile).get(tls_server.url))


def test_expired_policy_fails_open(
    pki: ServerPKI,
    tls_server: TLSServer,
    rogue_ca_issues: Callable[..., Any],
    expire_policy: Callable[..., tlspin.PinPolicy],
    assert_accepted: Callable[..., Any],
) -> None:
    """An expired fail-open policy no longer refuses the rogue certificate, and warns."""
    policy = expire_policy(pki.policy())
    rogue_ca_issues()
    client = session(policy, cafile=pki.cafile)
    with pytest.warns(tlspin.PinPolicyExpiredWarning):
        assert_accepted(lambda: client.get(tls_server.url))


def test_expired_policy_with_enforce_still_refuses(
    pki: ServerPKI,
    tls_server: TLSServer,
    rogue_ca_issues: Callable[..., Any],
    expire_policy: Callable[..., tlspin.PinPolicy],
    assert_refused: Callable[..., Any],
) -> None:
    """Twin: with on_expiry='enforce' the expired rule still refuses the rogue certificate."""
    policy = expire_policy(pki.policy(), on_expiry="enforce")
    rogue_ca_issues()
    client = session(policy, cafile=pki.cafile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlspin.PinPolicyExpiredWarning)
        assert_refused(lambda: client.get(tls_server.url))


def test_mitm_proxy_intercepts_an_unpinned_client(
    pki: ServerPKI, tls_server: TLSServer, mitm_proxy: MitmProxy
) -> None:
    """The forging proxy reads an unpinned client's request and relays it to the server."""
    client = unpinned(pki)
    client.proxies = {"https": mitm_proxy.url}
    assert client.get(tls_server.url + "secret").status_code == 200
    assert [line for _, line in mitm_proxy.intercepted] == ["GET /secret HTTP/1.1"]
    assert tls_server.requests == ["GET /secret HTTP/1.1"]


def test_mitm_reverse_proxy_refused_by_pinned_client(
    pki: ServerPKI,
    tls_server: TLSServer,
    mitm_reverse_proxy: MitmProxy,
    assert_refused: Callable[..., Any],
) -> None:
    """In reverse mode the pinned client refuses the proxy and nothing reaches either side."""
    assert_refused(lambda: session(pki.policy(), cafile=pki.cafile).get(mitm_reverse_proxy.url))
    assert mitm_reverse_proxy.intercepted == []
    assert tls_server.received == b""


def test_mitm_reverse_proxy_intercepts_unpinned_client(
    pki: ServerPKI, tls_server: TLSServer, mitm_reverse_proxy: MitmProxy
) -> None:
    """Twin: an unpinned client talks to the reverse proxy, which reads and relays the request."""
    assert unpinned(pki).get(mitm_reverse_proxy.url + "r").status_code == 200
    assert [line for _, line in mitm_reverse_proxy.intercepted] == ["GET /r HTTP/1.1"]
    assert tls_server.requests == ["GET /r HTTP/1.1"]


def test_make_tls_server_builds_more_servers(
    pki: ServerPKI,
    make_tls_server: Callable[..., TLSServer],
    rotate_to_backup: Callable[[], Any],
    assert_accepted: Callable[..., Any],
) -> None:
    """Servers from the factory are watched by the assertions and follow rotations."""
    other = make_tls_server(host="::1")
    policy = pki.policy()
    rotate_to_backup()
    assert_accepted(lambda: session(policy, cafile=pki.cafile).get(other.url))
    assert other.requests == ["GET / HTTP/1.1"]


# --- the assertions themselves -----------------------------------------------------------


def test_assert_refused_catches_leaked_bytes(pki: ServerPKI, tls_server: TLSServer) -> None:
    """A call that sends its request and then raises a pin error is not "refused": bytes leaked."""

    def leaky() -> None:
        unpinned(pki).get(tls_server.url)
        raise tlspin.PinMismatchError("raised after the request went out", hostname="localhost")

    with pytest.raises(AssertionError, match=r"received \d+ application bytes"):
        plain_assert_refused(leaky, servers=[tls_server])


def test_assert_refused_rejects_other_failures(pki: ServerPKI, tls_server: TLSServer) -> None:
    """A TLS failure that is not a pinning refusal (untrusted CA) does not pass assert_refused."""
    client = requests.Session()  # trusts the system store, not pki.cafile
    with pytest.raises(AssertionError, match="found another failure"):
        plain_assert_refused(lambda: client.get(tls_server.url), servers=[tls_server])


def test_assert_refused_rejects_success(pki: ServerPKI, tls_server: TLSServer) -> None:
    """A call that succeeds fails assert_refused."""
    with pytest.raises(AssertionError, match="but it succeeded"):
        plain_assert_refused(lambda: unpinned(pki).get(tls_server.url), servers=[tls_server])


def test_assert_accepted_reports_pin_refusal(
    pki: ServerPKI, tls_server: TLSServer, rogue_ca_issues: Callable[..., Any]
) -> None:
    """assert_accepted fails on a pinning refusal and says so."""
    rogue_ca_issues()
    client = session(pki.policy(), cafile=pki.cafile)
    with pytest.raises(AssertionError, match="was refused by pinning"):
        plain_assert_accepted(lambda: client.get(tls_server.url), servers=[tls_server])


def test_assert_accepted_needs_the_server_to_see_the_request(
    pki: ServerPKI, make_tls_server: Callable[..., TLSServer]
) -> None:
    """A call that succeeds against another server does not count as reaching the watched one."""
    watched, other = make_tls_server(), make_tls_server()
    with pytest.raises(AssertionError, match="none of the watched servers"):
        plain_assert_accepted(lambda: unpinned(pki).get(other.url), servers=[watched])
