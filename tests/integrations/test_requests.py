"""requests: verify= handling, trust-store caching, proxies, retries, client certificates."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from tlspin import (
    PinConfigurationError,
    PinningUnavailableError,
    PinPolicy,
    PinVerificationError,
    create_context,
)
from tlspin.integrations.requests import PinningAdapter, session
from tlspin.integrations.urllib3 import PinAwareRetry
from tlspin.testing.pki import CA

from .conftest import BODY, Origins, Pki, Route
from .helpers import assert_refused, pin_errors, url_for

HOST = "127.0.0.1"


def _adapter(s: requests.Session) -> PinningAdapter:
    adapter = s.get_adapter("https://x/")
    assert isinstance(adapter, PinningAdapter)
    return adapter


def test_verify_false_refused_for_pinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """verify=False on a pinned host raises SSLError before any connection is made."""
    victim = origins.victim[HOST]
    connections = victim.connections
    with (
        session(good_policy, cafile=pki.cafile) as s,
        pytest.raises(requests.exceptions.SSLError, match="verify=False is not allowed") as excinfo,
    ):
        s.get(url_for(HOST, victim.port), verify=False)
    (error,) = pin_errors(excinfo.value)
    assert isinstance(error, PinningUnavailableError)
    assert victim.connections == connections
    assert victim.received == b""


def test_verify_false_allowed_for_unpinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """verify=False still works for an unpinned host, and leaves the pinned context intact."""
    good = origins.good[HOST]
    with session(good_policy, cafile=pki.cafile) as s:
        with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
            response = s.get(f"https://localhost:{good.port}/", verify=False)
        assert response.content == BODY
        ctx = _adapter(s).ssl_context
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname
        assert s.get(url_for(HOST, good.port)).content == BODY


def test_per_request_verify_path_gets_a_cached_pinned_context(
    origins: Origins, good_policy: PinPolicy, bad_policy: PinPolicy, root_only_cafile: str
) -> None:
    """verify=<CA file> builds one pinned context for that file and reuses it."""
    good = origins.good["::1"]
    with session(good_policy) as s:
        for _ in range(3):
            response = s.get(
                url_for("::1", good.port), verify=root_only_cafile, headers={"Connection": "close"}
            )
            assert response.content == BODY
        contexts = _adapter(s)._contexts
        assert list(contexts) == [(root_only_cafile, None)]
    victim = origins.victim["::1"]
    with session(bad_policy) as s, pytest.raises(requests.exceptions.SSLError) as excinfo:
        s.get(url_for("::1", victim.port), verify=root_only_cafile)
    assert_refused(excinfo.value, victim)


def test_default_trust_without_cafile_is_the_system_store(
    origins: Origins, good_policy: PinPolicy
) -> None:
    """Without a CA file the test root is untrusted: a CA failure, not a pin failure."""
    good = origins.good[HOST]
    with session(good_policy) as s, pytest.raises(requests.exceptions.SSLError) as excinfo:
        s.get(url_for(HOST, good.port))
    assert not pin_errors(excinfo.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(excinfo.value)


def test_requests_ca_bundle_is_honoured(
    origins: Origins, good_policy: PinPolicy, root_only_cafile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE selects the trust store of a pinned context, as requests does."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", root_only_cafile)
    good = origins.good[HOST]
    with session(good_policy) as s:
        assert s.get(url_for(HOST, good.port)).content == BODY


def test_trust_store_is_not_reloaded_per_connection(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """New connections do not load CA files into the shared pinned context again."""
    good = origins.good[HOST]
    handshakes = good.handshakes
    with session(good_policy, cafile=pki.cafile) as s:
        ctx = _adapter(s).ssl_context
        before = ctx.cert_store_stats()["x509_ca"]
        for _ in range(4):
            s.get(url_for(HOST, good.port), headers={"Connection": "close"})
        assert ctx.cert_store_stats()["x509_ca"] == before == 3
    good.wait_idle()
    assert good.handshakes == handshakes + 4


def test_control_plain_adapter_reloads_certifi_into_the_context(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """Control: injecting a pinned context without the cert_verify fix loads certifi into it."""
    ctx = create_context(good_policy, cafile=pki.cafile)

    class Naive(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ctx
            super().init_poolmanager(*args, **kwargs)

    good = origins.good[HOST]
    with requests.Session() as s:
        s.mount("https://", Naive())
        assert s.get(url_for(HOST, good.port)).content == BODY
    # requests set ca_certs=certifi on the pool, and urllib3 loaded it into the shared context.
    assert ctx.cert_store_stats()["x509_ca"] > 100


def test_integer_max_retries_do_not_retry_pin_failures(
    pki: Pki, origins: Origins, bad_policy: PinPolicy
) -> None:
    """max_retries=3 becomes a PinAwareRetry: a refused pin makes exactly one connection."""
    victim = origins.victim[HOST]
    connections = victim.connections
    with session(bad_policy, cafile=pki.cafile, max_retries=3) as s:
        assert isinstance(_adapter(s).max_retries, PinAwareRetry)
        with pytest.raises(requests.exceptions.SSLError) as excinfo:
            s.get(url_for(HOST, victim.port))
    assert_refused(excinfo.value, victim)
    assert victim.connections == connections + 1


def test_https_proxy_leg_uses_the_adapter_trust(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """Without proxy_ssl_context the HTTPS proxy is verified with the adapter's CA file."""
    route = proxies["https-proxy"]
    good = origins.good[HOST]
    with session(good_policy, cafile=pki.cafile) as s:
        response = s.get(url_for(HOST, good.port), proxies={"https": route.proxy_url})
        assert response.content == BODY


def test_https_proxy_leg_fails_when_proxy_ca_untrusted(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """A proxy whose CA the adapter does not trust is refused by CA verification."""
    route = proxies["https-proxy"]
    good = origins.good[HOST]
    with (
        session(good_policy, cadata=pki.root.cert_pem.decode()) as s,
        pytest.raises((requests.exceptions.SSLError, requests.exceptions.ProxyError)) as excinfo,
    ):
        s.get(url_for(HOST, good.port), proxies={"https": route.proxy_url})
    assert not pin_errors(excinfo.value)


def test_client_certificate_gets_its_own_cached_context(
    pki: Pki, origins: Origins, good_policy: PinPolicy, tmp_path: Path
) -> None:
    """cert=(chain, key) is loaded once into a pinned context that is reused."""
    chain_path, key_path = pki.intermediate.issue("client.test").write(tmp_path)
    cert = (str(chain_path), str(key_path))
    good = origins.good[HOST]
    with session(good_policy, cafile=pki.cafile) as s:
        for _ in range(2):
            response = s.get(url_for(HOST, good.port), cert=cert, headers={"Connection": "close"})
            assert response.content == BODY
        assert list(_adapter(s)._contexts) == [(None, cert)]
        with pytest.raises(OSError, match="No such file"):
            s.get(url_for(HOST, good.port), cert=(str(tmp_path / "missing.pem"), str(key_path)))


def test_client_certificate_with_caller_context_is_refused(
    pki: Pki, good_policy: PinPolicy, tmp_path: Path
) -> None:
    """A client certificate cannot be combined with a caller-supplied pinned context."""
    chain_path, key_path = pki.intermediate.issue("client.test").write(tmp_path)
    adapter = PinningAdapter(ssl_context=create_context(good_policy, cafile=pki.cafile))
    request = requests.Request("GET", "https://127.0.0.1:1/").prepare()
    with pytest.raises(PinConfigurationError, match="load_cert_chain"):
        adapter.build_connection_pool_key_attributes(
            request, True, (str(chain_path), str(key_path))
        )


def test_pin_failure_is_ssl_error_with_pin_error_inside(
    pki: Pki, origins: Origins, bad_policy: PinPolicy
) -> None:
    """A refused pin reaches the caller as requests' SSLError, the pin error in its chain."""
    victim = origins.mitm[HOST]
    with (
        session(bad_policy, cafile=pki.cafile) as s,
        pytest.raises(requests.exceptions.SSLError) as excinfo,
    ):
        s.get(url_for(HOST, victim.port))
    error = assert_refused(excinfo.value, victim)
    assert isinstance(error, PinVerificationError)
    assert error.hostname == HOST


@pytest.mark.parametrize("prefix", ["https://", f"https://{HOST}", f"HTTPS://{HOST}:1/"])
def test_plain_adapter_cannot_replace_the_pinning_one(
    pki: Pki, origins: Origins, bad_policy: PinPolicy, prefix: str
) -> None:
    """Mounting a plain HTTPAdapter (e.g. for retries) on an https prefix is refused."""
    victim = origins.victim[HOST]
    with session(bad_policy, cafile=pki.cafile) as s:
        with pytest.raises(PinConfigurationError, match="without pins"):
            s.mount(prefix, HTTPAdapter(max_retries=2))
        with pytest.raises(requests.exceptions.SSLError) as excinfo:
            s.get(url_for(HOST, victim.port))
    assert_refused(excinfo.value, victim)


def test_pinning_adapter_mounts_on_any_https_prefix(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """Another PinningAdapter mounts on a specific https prefix; plain http is unaffected."""
    good = origins.good[HOST]
    with session(good_policy, cafile=pki.cafile) as s:
        adapter = PinningAdapter(good_policy, cafile=pki.cafile, max_retries=2)
        s.mount(f"https://{HOST}", adapter)
        s.mount("http://", HTTPAdapter(max_retries=2))
        assert s.get_adapter(url_for(HOST, good.port)) is adapter
        assert s.get(url_for(HOST, good.port)).content == BODY


def test_control_plain_session_loses_pins_to_a_later_mount(
    pki: Pki, origins: Origins, bad_policy: PinPolicy
) -> None:
    """CONTROL: on a plain Session a later HTTPAdapter mount silently drops the pins."""
    good = origins.good[HOST]
    with requests.Session() as s:
        s.mount("https://", PinningAdapter(bad_policy, cafile=pki.cafile))
        s.mount("https://", HTTPAdapter())
        assert s.get(url_for(HOST, good.port), verify=pki.cafile).content == BODY


@pytest.mark.parametrize("where", ["request", "session"])
@pytest.mark.parametrize("spelling", ["127.0.0.01", "127.000.000.001"])
def test_verify_false_refused_for_other_spellings_of_a_pinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy, where: str, spelling: str
) -> None:
    """verify=False cannot reach a pinned IP through a spelling the resolver maps to it."""
    victim = origins.victim[HOST]
    connections = victim.connections
    with session(good_policy, cafile=pki.cafile) as s:
        kwargs: dict[str, Any] = {}
        if where == "session":
            s.verify = False
        else:
            kwargs["verify"] = False
        with pytest.raises(requests.exceptions.SSLError, match="verify=False is not allowed"):
            s.get(f"https://{spelling}:{victim.port}/", **kwargs)
    assert victim.connections == connections
    assert victim.received == b""


@pytest.fixture(scope="module")
def unrelated_cafile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA bundle trusting none of the test servers, as a machine's REQUESTS_CA_BUNDLE would."""
    return str(CA.root("tlspin unrelated bundle").write(tmp_path_factory.mktemp("env-bundle")))


ENV_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.mark.parametrize("variable", ENV_BUNDLES)
@pytest.mark.parametrize("trust", ["cafile", "cadata", "ssl_context", "session-verify-path"])
def test_explicit_trust_store_wins_over_the_environment(
    pki: Pki,
    origins: Origins,
    good_policy: PinPolicy,
    unrelated_cafile: str,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    trust: str,
) -> None:
    """A trust store given to tlspin's session is used though the environment names another.

    requests replaces verify=True (and a session's verify path) with the environment's bundle,
    so the correctly pinned request failed with a misleading certificate error.
    """
    monkeypatch.setenv(variable, unrelated_cafile)
    good = origins.good[HOST]
    choices: dict[str, dict[str, Any]] = {
        "cafile": {"cafile": pki.cafile},
        "cadata": {"cadata": Path(pki.cafile).read_text()},
        "ssl_context": {"ssl_context": create_context(good_policy, cafile=pki.cafile)},
        "session-verify-path": {},
    }
    options = choices[trust]
    with session(None if trust == "ssl_context" else good_policy, **options) as s:
        if trust == "session-verify-path":
            s.verify = pki.cafile
        assert s.get(url_for(HOST, good.port)).content == BODY
        if trust != "session-verify-path":  # verify=True asks for the adapter's own trust
            assert s.get(url_for(HOST, good.port), verify=True).content == BODY
        # Pins still apply under the explicit trust store.
        victim = origins.victim[HOST]
        bad = PinPolicy.from_mapping({HOST: list(pki.unrelated_pins)})
        if trust != "ssl_context":
            with session(bad, **options) as s2:
                if trust == "session-verify-path":
                    s2.verify = pki.cafile
                with pytest.raises(requests.exceptions.SSLError) as excinfo:
                    s2.get(url_for(HOST, victim.port))
            assert_refused(excinfo.value, victim)


@pytest.mark.parametrize("variable", ENV_BUNDLES)
def test_environment_bundle_applies_without_an_explicit_one_and_errors_say_so(
    origins: Origins,
    good_policy: PinPolicy,
    root_only_cafile: str,
    unrelated_cafile: str,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    """Twin: with no trust store given, the environment's applies, and its failure names it."""
    good = origins.good[HOST]
    monkeypatch.setenv(variable, root_only_cafile)
    with session(good_policy) as s:
        assert s.get(url_for(HOST, good.port)).content == BODY
    monkeypatch.setenv(variable, unrelated_cafile)
    with session(good_policy) as s, pytest.raises(requests.exceptions.SSLError) as excinfo:
        s.get(url_for(HOST, good.port))
    message = str(excinfo.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert f"the CA bundle was {unrelated_cafile}, from {variable}" in message
    # An explicit verify= path per request wins over the environment, as it does in requests.
    with session(good_policy) as s:
        assert s.get(url_for(HOST, good.port), verify=root_only_cafile).content == BODY
