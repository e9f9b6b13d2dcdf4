"""Suite-wide fixtures: a clean environment for every test."""

from __future__ import annotations

import pytest

_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSLKEYLOGFILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


@pytest.fixture(autouse=True)
def _clean_tls_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the caller's trust-store and proxy settings out of every test."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
