"""The JSON form of a policy: the same content as the TOML file, lossless both ways."""

from __future__ import annotations

from tlspin.formats import ExportOptions, Problems
from tlspin.policy import PinPolicy


def export(policy: PinPolicy, fmt: str, options: ExportOptions, problems: Problems) -> str:
    """Write the policy as JSON (dates as ``YYYY-MM-DD`` strings)."""
    from tlspin._shared.policyio import dumps

    return dumps(policy, format="json")


def parse(data: bytes, fmt: str, options: ExportOptions, problems: Problems) -> PinPolicy:
    """Read a JSON policy."""
    from tlspin.exceptions import PolicyError
    from tlspin.policyfile import loads

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        msg = "json: the file is not UTF-8 text"
        raise PolicyError(msg) from None
    return loads(text, format="json")
