"""Exceptions and warnings raised by tlspin.

Every class is rooted in a standard-library class so that code which already handles TLS errors
or bad values keeps working::

    ValueError
    └── PinConfigurationError          bad pins, rules, policies or contexts
        ├── InvalidPinError            a pin string or key that cannot be parsed
        └── PolicyError                a malformed host pattern, rule or policy file

    ssl.SSLCertVerificationError
    └── PinVerificationError           the connection was refused by tlspin
        ├── PinMismatchError           no key of the verified chain matched, or a denied key did
        └── PinningUnavailableError    the chain could not be checked (resumed session, CERT_NONE…)

    UserWarning
    └── TlspinWarning
        ├── PinPolicyExpiredWarning    a rule expired and is no longer enforced
        ├── SinglePinWarning           an enforced rule has no backup pin
        └── ReportOnlyViolationWarning reserved for callers that want warnings on report-only hits
"""

from __future__ import annotations

# _ssl, not ssl: ssl.SSLCertVerificationError is _ssl's class, and a policy can be loaded and
# checked without the ssl module (its enum, socket and selectors imports).
import _ssl
from collections.abc import Sequence
from typing import Any

__all__ = [
    "InvalidPinError",
    "PinConfigurationError",
    "PinMismatchError",
    "PinPolicyExpiredWarning",
    "PinVerificationError",
    "PinningUnavailableError",
    "PolicyError",
    "ReportOnlyViolationWarning",
    "SinglePinWarning",
    "TlspinWarning",
]


class PinConfigurationError(ValueError):
    """A pin, rule, policy or context was configured wrongly."""


class InvalidPinError(PinConfigurationError):
    """A pin could not be parsed, or a key or certificate could not be read."""


class PolicyError(PinConfigurationError):
    """A host pattern, rule or policy file is malformed or unsafe."""


class PinVerificationError(_ssl.SSLCertVerificationError):
    """tlspin refused a connection.

    Subclasses :class:`ssl.SSLCertVerificationError`, so every HTTP client reports it the way it
    reports any other certificate failure.

    Attributes:
        hostname: the canonical host name that was checked.
        chain: ``(subject, pin)`` pairs of the verified chain, leaf first.
        expected: the pins (``sha256/…``) that would have been accepted.
        reason: a short machine-readable reason.
    """

    # errno 1 on purpose: urllib3's SSLTransport treats errno 2/3 as WANT_READ/WANT_WRITE.
    _ERRNO = 1

    def __init__(
        self,
        message: str,
        *,
        hostname: str | None = None,
        chain: Sequence[tuple[str, str]] = (),
        expected: Sequence[str] = (),
        reason: str = "mismatch",
    ) -> None:
        super().__init__(self._ERRNO, message)
        self.message = message
        self.hostname = hostname
        self.chain = tuple(chain)
        self.expected = tuple(expected)
        self.reason = reason
        # The attributes ssl.SSLCertVerificationError users read.
        self.verify_code = 0
        self.verify_message = message
        self.reason_code = reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError's default pickling would pass (errno, message) to __init__ positionally.
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "hostname": self.hostname,
                    "chain": self.chain,
                    "expected": self.expected,
                    "reason": self.reason,
                },
            ),
        )


def _rebuild(
    cls: type[PinVerificationError], message: str, kwargs: dict[str, Any]
) -> PinVerificationError:
    return cls(message, **kwargs)


class PinMismatchError(PinVerificationError):
    """No key in the verified chain matched a pin for the host, or a denied key was present."""


class PinningUnavailableError(PinVerificationError):
    """The pins could not be checked, so the connection was refused (fail closed).

    Raised for a resumed TLS session whose leaf was never checked, a context whose verification
    was switched off after it was pinned, a connection without a server name or with one that
    cannot be canonicalised, and for bytes sent or read in clear on a pinned socket whose
    handshake failed. The integrations also raise it (or wrap it) for a stream holding bytes
    received before its TLS upgrade (``cleartext-before-tls``) and for a request that would
    reach a pinned URL host under another TLS server name (``server-name-mismatch``).
    """


class TlspinWarning(UserWarning):
    """Base class of tlspin's warnings."""


class PinPolicyExpiredWarning(TlspinWarning):
    """A rule passed its ``expires`` date and is no longer enforced (fail open)."""


class SinglePinWarning(TlspinWarning):
    """An enforced rule has fewer than two pins: one key rotation will break every client."""


class ReportOnlyViolationWarning(TlspinWarning):
    """A report-only rule saw a chain that it would have refused."""
