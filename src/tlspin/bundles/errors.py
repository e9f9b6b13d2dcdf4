"""Errors and warnings of the bundle subsystem.

A bundle is attacker-controlled input, so every way it can be wrong is a :class:`BundleError`
with a short machine-readable ``reason``; nothing in a bundle can cause a traceback.
"""

from __future__ import annotations

from tlspin.exceptions import TlspinWarning

__all__ = ["REASONS", "BundleError", "BundleWarning"]

#: Every ``BundleError.reason``, with what it means.
REASONS: dict[str, str] = {
    "size": "the document is larger than the size cap",
    "encoding": "the document is not UTF-8 text",
    "json": "the document is not valid JSON (or is nested too deeply)",
    "duplicate-key": "an object has the same key twice",
    "number": "a number is not an integer between -(2**53-1) and 2**53-1",
    "schema": "a field is missing, unknown or of the wrong type",
    "format": "the format tag is not one this verifier implements",
    "policy": "the policy field is not a valid policy",
    "threshold": "too few valid signatures from trusted keys",
    "rotation": "a key rotation is not signed by the threshold of the new keys",
    "rollback": "the version is not greater than the version already accepted",
    "equivocation": "same version as the accepted bundle, different content",
    "expired": "expires_at has passed",
    "future": "issued_at lies in the future beyond the allowed clock skew",
    "unpinned-update-host": "the policy would leave the update host unpinned",
    "chain": "the key-rotation chain is malformed",
    "key": "a key cannot be read or is not Ed25519",
    "store": "a store file cannot be read, or is missing while an older one exists",
}


class BundleError(ValueError):
    """A bundle, key or store file was refused.

    Attributes:
        reason: one of :data:`REASONS`' keys, for programs; the message is for people.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (str(self), self.reason))


def _rebuild(message: str, reason: str) -> BundleError:
    return BundleError(message, reason=reason)


class BundleWarning(TlspinWarning):
    """The pins in force fell back: stored bundle unusable or expired (pinning stays on)."""
