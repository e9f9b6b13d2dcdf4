"""Contract tests for the public namespace and the exception tree."""

from __future__ import annotations

import importlib.metadata
import pickle
import ssl
import subprocess
import sys

import pytest

import tlspin
from tlspin import exceptions


def test_all_is_sorted_and_resolvable() -> None:
    """Every name in __all__ resolves, and the list is sorted."""
    assert list(tlspin.__all__) == sorted(tlspin.__all__)
    for name in tlspin.__all__:
        assert getattr(tlspin, name) is not None, name


def test_unknown_attribute_raises() -> None:
    """A name that is not exported raises AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tlspin.nope  # type: ignore[attr-defined]  # noqa: B018


def test_version_comes_from_metadata() -> None:
    """__version__ is the installed distribution's version."""
    assert tlspin.__version__ == importlib.metadata.version("tlspin")


def test_import_is_light() -> None:
    """Importing tlspin loads no HTTP client, CLI or web framework."""
    code = (
        "import sys, tlspin; heavy = [m for m in ('requests','httpx','aiohttp','click','rich',"
        "'fastapi','sqlalchemy','urllib3') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (tlspin.InvalidPinError, ValueError),
        (tlspin.PolicyError, ValueError),
        (tlspin.PinConfigurationError, ValueError),
        (tlspin.PinMismatchError, ssl.SSLCertVerificationError),
        (tlspin.PinningUnavailableError, ssl.SSLCertVerificationError),
        (tlspin.PinPolicyExpiredWarning, UserWarning),
        (tlspin.SinglePinWarning, UserWarning),
    ],
)
def test_exceptions_are_rooted_in_stdlib(cls: type, base: type) -> None:
    """Each error subclasses the stdlib class callers already catch."""
    assert issubclass(cls, base)


@pytest.mark.parametrize("cls", [tlspin.PinMismatchError, tlspin.PinningUnavailableError])
def test_verification_errors_pickle(cls: type[tlspin.PinVerificationError]) -> None:
    """Verification errors survive pickling with their structured data."""
    err = cls(
        "Certificate pinning failure!",
        hostname="api.example.com",
        chain=[("CN=leaf", "sha256/" + "A" * 43 + "=")],
        expected=["sha256/" + "B" * 43 + "="],
        reason="mismatch",
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.hostname == "api.example.com"
    assert back.chain == err.chain
    assert back.expected == err.expected
    assert back.errno == 1
    assert isinstance(back, ssl.SSLError)


def test_configuration_errors_pickle() -> None:
    """Configuration errors pickle like any ValueError."""
    err = tlspin.InvalidPinError("bad pin")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is tlspin.InvalidPinError
    assert str(back) == "bad pin"


def test_exceptions_module_all_matches_classes() -> None:
    """exceptions.__all__ lists every public class defined there."""
    public = {
        name
        for name, value in vars(exceptions).items()
        if isinstance(value, type)
        and not name.startswith("_")
        and value.__module__ == exceptions.__name__
    }
    assert public == set(exceptions.__all__)


def test_dir_shows_the_public_api_only() -> None:
    """dir(tlspin) lists __all__: no typing helpers, __future__ features or loaded submodules."""
    tlspin.PinPolicy  # noqa: B018 - loads tlspin.policy and its imports
    assert dir(tlspin) == sorted(tlspin.__all__)
    for name in ("Any", "annotations", "TYPE_CHECKING", "policy", "context"):
        assert name not in dir(tlspin)


def test_public_names_resolve_to_their_modules() -> None:
    """Each lazily loaded name is the object its defining module holds (one class, one identity)."""
    from tlspin import PinPolicy, policy

    assert PinPolicy is policy.PinPolicy is tlspin.PinPolicy
    assert tlspin.PinMismatchError is exceptions.PinMismatchError
