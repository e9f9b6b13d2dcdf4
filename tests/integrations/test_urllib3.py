"""urllib3: refused options, forwarding, retries, context mutation, a pinned proxy leg."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import urllib3
from urllib3.exceptions import MaxRetryError, SSLError
from urllib3.util.retry import Retry

from tlspin import (
    PinConfigurationError,
    PinMismatchError,
    PinningUnavailableError,
    PinPolicy,
    create_context,
    policy_of,
)
from tlspin.integrations.urllib3 import PinAwareRetry, pool_manager, proxy_manager

from .conftest import BODY, Origins, Pki, Route
from .helpers import assert_refused, pin_errors, url_for

HOST = "127.0.0.1"


def test_forwarding_refused_when_anything_is_pinned(good_policy: PinPolicy) -> None:
    """use_forwarding_for_https=True would send pinned requests to the proxy in clear."""
    with pytest.raises(PinConfigurationError, match="in clear"):
        proxy_manager("https://localhost:1", good_policy, use_forwarding_for_https=True)

    class Source:
        def current_policy(self) -> PinPolicy:
            return PinPolicy()

    # A policy source may gain rules later, so it is refused even while empty.
    with pytest.raises(PinConfigurationError, match="in clear"):
        proxy_manager("https://localhost:1", Source(), use_forwarding_for_https=True)


def test_forwarding_allowed_without_pins() -> None:
    """With a policy that pins nothing, forwarding mode is the caller's choice."""
    manager = proxy_manager("https://localhost:1", PinPolicy(), use_forwarding_for_https=True)
    assert isinstance(manager, urllib3.ProxyManager)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ca_certs", "/etc/ssl/certs/ca-certificates.crt"),
        ("ca_cert_dir", "/etc/ssl/certs"),
        ("assert_hostname", False),
        ("assert_fingerprint", "AA" * 32),
        ("cert_file", "client.pem"),
        ("cert_reqs", "CERT_NONE"),
        ("cert_reqs", ssl.CERT_OPTIONAL),
    ],
)
def test_options_that_would_mutate_the_context_are_refused(
    good_policy: PinPolicy, key: str, value: object
) -> None:
    """Options urllib3 would apply to the shared pinned context on each connection are refused."""
    with pytest.raises(PinConfigurationError, match=key):
        pool_manager(good_policy, **{key: value})


def test_cert_reqs_required_is_accepted(pki: Pki, origins: Origins, good_policy: PinPolicy) -> None:
    """cert_reqs=CERT_REQUIRED changes nothing and is accepted."""
    manager = pool_manager(good_policy, cafile=pki.cafile, cert_reqs="CERT_REQUIRED")
    assert manager.request("GET", url_for(HOST, origins.good[HOST].port)).data == BODY


def test_pin_failures_are_not_retried(pki: Pki, origins: Origins, bad_policy: PinPolicy) -> None:
    """The default PinAwareRetry gives up after one refused handshake."""
    victim = origins.victim[HOST]
    connections = victim.connections
    manager = pool_manager(bad_policy, cafile=pki.cafile)
    with pytest.raises(MaxRetryError) as excinfo:
        manager.request("GET", url_for(HOST, victim.port))
    assert isinstance(excinfo.value.reason, SSLError)
    assert_refused(excinfo.value, victim)
    assert victim.connections == connections + 1


def test_control_plain_retry_repeats_the_handshake(
    pki: Pki, origins: Origins, bad_policy: PinPolicy
) -> None:
    """Control: urllib3's own Retry(3) makes four handshakes to the mis-pinned server."""
    victim = origins.victim["::1"]
    connections = victim.connections
    manager = urllib3.PoolManager(
        ssl_context=create_context(bad_policy, cafile=pki.cafile), retries=Retry(3)
    )
    with pytest.raises(MaxRetryError) as excinfo:
        manager.request("GET", url_for("::1", victim.port))
    assert_refused(excinfo.value, victim)
    assert victim.connections == connections + 4


def test_pin_aware_retry_still_retries_other_errors() -> None:
    """PinAwareRetry counts ordinary errors down like Retry does."""
    retry = PinAwareRetry(total=3).increment(
        "GET",
        "/",
        error=urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
    )
    assert isinstance(retry, PinAwareRetry)
    assert retry.total == 2
    pin_error = SSLError(PinMismatchError("refused", hostname="h"))
    with pytest.raises(MaxRetryError):
        PinAwareRetry(total=3).increment("GET", "/", error=pin_error)


def test_assert_hostname_false_on_raw_pool_manager_fails_closed(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """Raw urllib3 with assert_hostname=False switches hostname checks off: tlspin refuses."""
    good_ctx = create_context(good_policy, cafile=pki.cafile)
    victim = origins.victim[HOST]
    manager = urllib3.PoolManager(ssl_context=good_ctx, assert_hostname=False, retries=False)
    with pytest.raises(SSLError) as excinfo:
        manager.request("GET", url_for(HOST, victim.port))
    (error,) = pin_errors(excinfo.value)
    assert isinstance(error, PinningUnavailableError)
    assert error.reason == "verification-off"
    assert_refused(excinfo.value, victim)
    assert policy_of(good_ctx) is good_policy


def test_proxy_leg_can_be_pinned_too(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """A pinned proxy_ssl_context checks the HTTPS proxy's key; a wrong proxy pin refuses."""
    route = proxies["https-proxy"]
    good = origins.good[HOST]
    url = url_for(HOST, good.port)
    right = PinPolicy.from_mapping({"localhost": [pki.proxy_ca.pin, pki.backup_pin]})
    wrong = PinPolicy.from_mapping({"localhost": [pki.root.pin, pki.backup_pin]})
    for policy, ok in ((right, True), (wrong, False)):
        proxy_ctx = create_context(policy, cafile=pki.cafile)
        manager = proxy_manager(
            route.proxy_url, good_policy, cafile=pki.cafile, proxy_ssl_context=proxy_ctx
        )
        connects = len(route.proxy.connects)  # type: ignore[union-attr]
        if ok:
            assert manager.request("GET", url).data == BODY
            continue
        with pytest.raises(MaxRetryError) as excinfo:
            manager.request("GET", url)
        (error,) = pin_errors(excinfo.value)
        assert error.hostname == "localhost"
        # Refused at the proxy's TLS: no CONNECT was ever sent through it.
        assert len(route.proxy.connects) == connects  # type: ignore[union-attr]


def test_proxy_cafile_shortcut(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route]
) -> None:
    """proxy_cafile= trusts a CA file for the proxy leg; both proxy options at once are refused."""
    route = proxies["https-proxy"]
    proxy_ca = pki.proxy_ca.cert_pem
    path = pki.cafile  # holds the proxy CA among others
    assert proxy_ca in Path(path).read_bytes()
    manager = proxy_manager(route.proxy_url, good_policy, cafile=pki.cafile, proxy_cafile=path)
    assert manager.request("GET", url_for(HOST, origins.good[HOST].port)).data == BODY
    with pytest.raises(PinConfigurationError, match="not both"):
        proxy_manager(
            route.proxy_url,
            good_policy,
            proxy_cafile=path,
            proxy_ssl_context=ssl.create_default_context(),
        )


@pytest.mark.parametrize("where", ["manager", "pool_kwargs", "proxy-manager"])
def test_server_hostname_cannot_stand_in_for_a_pinned_host(
    pki: Pki, origins: Origins, good_policy: PinPolicy, proxies: dict[str, Route], where: str
) -> None:
    """server_hostname naming an unpinned host is refused for a pinned URL host.

    The attack: server_hostname="localhost" (unpinned) on the pinned https://127.0.0.1 had
    urllib3 verify the forged leaf as "localhost", and the pin check ran for that name.
    """
    mitm = origins.mitm[HOST]
    url = url_for(HOST, mitm.port)
    connections = mitm.connections

    def attempt() -> object:
        if where == "manager":
            manager = pool_manager(good_policy, cafile=pki.cafile, server_hostname="localhost")
            return manager.request("GET", url, retries=False)
        if where == "proxy-manager":
            manager = proxy_manager(
                proxies["connect"].proxy_url, good_policy, cafile=pki.cafile,
                server_hostname="localhost",
            )  # fmt: skip
            return manager.request("GET", url, retries=False)
        manager = pool_manager(good_policy, cafile=pki.cafile)
        pool = manager.connection_from_url(url, pool_kwargs={"server_hostname": "localhost"})
        return pool.urlopen("GET", "/", retries=False)

    with pytest.raises(PinConfigurationError, match="server_hostname='localhost'"):
        attempt()
    assert mitm.connections == connections
    assert mitm.received == b""


def test_server_hostname_naming_the_url_host_or_a_pinned_host_works(
    pki: Pki, origins: Origins, good_policy: PinPolicy
) -> None:
    """Twin: server_hostname spelling the URL host passes; naming a pinned host gets its pins."""
    good, mitm = origins.good[HOST], origins.mitm[HOST]
    manager = pool_manager(good_policy, cafile=pki.cafile, server_hostname=HOST)
    assert manager.request("GET", url_for(HOST, good.port)).data == BODY
    assert manager.request("GET", f"https://localhost:{good.port}/").data == BODY
    with pytest.raises(MaxRetryError) as excinfo:
        manager.request("GET", f"https://localhost:{mitm.port}/")
    assert isinstance(pin_errors(excinfo.value)[0], PinMismatchError)


@pytest.mark.parametrize(
    ("key", "value"),
    [("ca_certs", "/etc/ssl/certs/ca-certificates.crt"), ("assert_hostname", False)],
)
def test_per_call_pool_kwargs_that_would_mutate_the_context_are_refused(
    pki: Pki, origins: Origins, good_policy: PinPolicy, key: str, value: object
) -> None:
    """pool_kwargs of one call are checked like the manager's own options."""
    manager = pool_manager(good_policy, cafile=pki.cafile)
    url = url_for(HOST, origins.good[HOST].port)
    with pytest.raises(PinConfigurationError, match=key):
        manager.connection_from_url(url, pool_kwargs={key: value})
    assert manager.request("GET", url).data == BODY  # twin: without them, all is well
