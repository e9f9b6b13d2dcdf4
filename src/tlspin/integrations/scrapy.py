"""Pinning for Scrapy: a ``DOWNLOADER_CLIENTCONTEXTFACTORY`` that checks pins.

Scrapy downloads through Twisted's ``Agent``; this factory wraps Scrapy's own default factory
(its TLS settings keep working) with :class:`tlspin.integrations.twisted.PinnedPolicyForHTTPS`::

    # settings.py
    DOWNLOADER_CLIENTCONTEXTFACTORY = "tlspin.integrations.scrapy.PinnedContextFactory"
    TLSPIN_POLICY = "/etc/app/pins.toml"     # a path, a tlspin.PinPolicy or a policy source
    DOWNLOAD_VERIFY_CERTIFICATES = True      # so that intermediate and root pins count

Scrapy does not verify certificates by default (``DOWNLOAD_VERIFY_CERTIFICATES = False``): its
connections then hand over whatever chain the server sent, and only a pin of the leaf's own key
can count on a pinned host (the rule :func:`tlspin.inject` applies to ``CERT_NONE``). Turn
verification on to pin intermediate or root keys. Scrapy 2.13 and newer warn that the
``DOWNLOADER_CLIENTCONTEXTFACTORY`` setting is deprecated; it still works (Scrapy 2.19), and
:func:`tlspin.inject` (or ``tlspin run``) reaches Scrapy without any setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.core.downloader import contextfactory as _scrapy_cf
from scrapy.utils.misc import build_from_crawler

from tlspin.context import PolicySource
from tlspin.exceptions import PinConfigurationError
from tlspin.integrations.twisted import PinnedPolicyForHTTPS
from tlspin.policy import PinPolicy

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

__all__ = ["PinnedContextFactory"]

#: The setting that holds the policy: a policy file path, a PinPolicy or a policy source.
SETTING = "TLSPIN_POLICY"


def _default_factory() -> Any:
    # Scrapy 2.13+ keeps its default in a private class (the public name warns when used).
    private = getattr(_scrapy_cf, "_ScrapyClientContextFactory", None)
    return private if private is not None else _scrapy_cf.ScrapyClientContextFactory


def _policy(value: object) -> PinPolicy | PolicySource:
    if isinstance(value, PinPolicy | PolicySource):
        return value
    if isinstance(value, str) and value:
        return PinPolicy.load(value)
    msg = (
        f"Scrapy setting {SETTING} must be a policy file path, a tlspin.PinPolicy or a policy "
        f"source; found {value!r}"
    )
    raise PinConfigurationError(msg)


class PinnedContextFactory(PinnedPolicyForHTTPS):
    """Scrapy's default context factory with pins checked (see the module docstring).

    Built by Scrapy through :meth:`from_crawler`; the constructor takes the policy and the inner
    factory directly.
    """

    @classmethod
    def from_crawler(cls, crawler: Crawler, method: Any = None, *args: Any, **kwargs: Any) -> Self:
        """Build Scrapy's own factory for *crawler* and wrap it; the policy is ``TLSPIN_POLICY``."""
        extra = {} if method is None else {"method": method}
        inner = build_from_crawler(_default_factory(), crawler, *args, **extra, **kwargs)
        return cls(_policy(crawler.settings.get(SETTING)), inner=inner)
