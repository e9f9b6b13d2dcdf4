"""tlspin: public-key pinning for Python HTTPS clients.

Three lines pin any client::

    policy = tlspin.PinPolicy.from_mapping({"api.example.com": ["sha256/…", "sha256/…"]})
    ctx = tlspin.create_context(policy)
    httpx.Client(verify=ctx)            # or urllib3, aiohttp, asyncio, http.client…

Or one line pins every client in the process, whatever library made it::

    tlspin.inject(policy)               # tlspin.extract() undoes it; `with tlspin.injected(p):`
"""

from __future__ import annotations

from typing import Any

from tlspin.context import PolicySource, create_context, pin_context, policy_of
from tlspin.exceptions import (
    InvalidPinError,
    PinConfigurationError,
    PinMismatchError,
    PinningUnavailableError,
    PinPolicyExpiredWarning,
    PinVerificationError,
    PolicyError,
    ReportOnlyViolationWarning,
    SinglePinWarning,
    TlspinWarning,
)
from tlspin.hosts import HostPattern
from tlspin.injection import extract, inject, injected
from tlspin.pins import CertificatePin, Pin, spki_sha256
from tlspin.policy import PinInfo, PinPolicy, PinRule
from tlspin.verify import Verdict, Violation

__all__ = [
    "BundleUpdater",
    "CertificatePin",
    "HostPattern",
    "InvalidPinError",
    "Pin",
    "PinConfigurationError",
    "PinInfo",
    "PinMismatchError",
    "PinPolicy",
    "PinPolicyExpiredWarning",
    "PinRule",
    "PinVerificationError",
    "PinningUnavailableError",
    "PolicyError",
    "PolicySource",
    "ReportOnlyViolationWarning",
    "Reporter",
    "SinglePinWarning",
    "TlspinWarning",
    "Verdict",
    "Violation",
    "__version__",
    "create_context",
    "extract",
    "inject",
    "injected",
    "pin_context",
    "policy_of",
    "spki_sha256",
]

# Heavier parts load on first use, so `import tlspin` stays cheap.
_LAZY = {
    "Reporter": ("tlspin.reporting", "Reporter"),
    "BundleUpdater": ("tlspin.bundles.updater", "BundleUpdater"),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("tlspin")
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    msg = f"module 'tlspin' has no attribute {name!r}"
    raise AttributeError(msg)
