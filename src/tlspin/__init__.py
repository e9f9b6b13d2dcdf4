"""tlspin: public-key pinning for Python HTTPS clients.

Three lines pin any client::

    policy = tlspin.PinPolicy.from_mapping({"api.example.com": ["sha256/…", "sha256/…"]})
    ctx = tlspin.create_context(policy)
    httpx.Client(verify=ctx)            # or urllib3, aiohttp, asyncio, http.client…

Or one line pins every client in the process, whatever library made it::

    tlspin.inject(policy)               # tlspin.extract() undoes it; `with tlspin.injected(p):`

Every public name is loaded on first use (PEP 562), so that ``import tlspin`` and tools that live
inside the package (``tlspin --help`` imports ``tlspin.cli``, and with it this module) pay only
for the modules they use. ``from tlspin import PinPolicy`` works as usual.
"""

# Not typing.TYPE_CHECKING: importing typing would cost more than the rest of this module.
# Type checkers treat any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from tlspin.bundles.updater import BundleUpdater
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
    from tlspin.reporting import Reporter
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

# public name -> the module that defines it.
_WHERE = {
    "BundleUpdater": "tlspin.bundles.updater",
    "CertificatePin": "tlspin.pins",
    "HostPattern": "tlspin.hosts",
    "InvalidPinError": "tlspin.exceptions",
    "Pin": "tlspin.pins",
    "PinConfigurationError": "tlspin.exceptions",
    "PinInfo": "tlspin.policy",
    "PinMismatchError": "tlspin.exceptions",
    "PinPolicy": "tlspin.policy",
    "PinPolicyExpiredWarning": "tlspin.exceptions",
    "PinRule": "tlspin.policy",
    "PinVerificationError": "tlspin.exceptions",
    "PinningUnavailableError": "tlspin.exceptions",
    "PolicyError": "tlspin.exceptions",
    "PolicySource": "tlspin.context",
    "ReportOnlyViolationWarning": "tlspin.exceptions",
    "Reporter": "tlspin.reporting",
    "SinglePinWarning": "tlspin.exceptions",
    "TlspinWarning": "tlspin.exceptions",
    "Verdict": "tlspin.verify",
    "Violation": "tlspin.verify",
    "create_context": "tlspin.context",
    "extract": "tlspin.injection",
    "inject": "tlspin.injection",
    "injected": "tlspin.injection",
    "pin_context": "tlspin.context",
    "policy_of": "tlspin.context",
    "spki_sha256": "tlspin.pins",
}


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        return version("tlspin")
    module = _WHERE.get(name)
    if module is None:
        msg = f"module 'tlspin' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    # The public API only: not the helpers above, nor submodules that happen to be loaded.
    return list(__all__)
