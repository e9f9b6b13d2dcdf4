"""Thin helpers that hand a pinned :class:`ssl.SSLContext` to each HTTP client library.

One module per library, named after it; each imports its library only when imported itself:

* :mod:`tlspin.integrations.stdlib` — ``http.client``, ``urllib.request``, asyncio streams;
* :mod:`tlspin.integrations.urllib3` — ``PoolManager`` / ``ProxyManager``;
* :mod:`tlspin.integrations.requests` — a ``Session`` with a pinning ``HTTPAdapter``;
* :mod:`tlspin.integrations.httpx` — ``Client`` / ``AsyncClient``, HTTP/2 and proxies;
* :mod:`tlspin.integrations.aiohttp` — ``TCPConnector`` / ``ClientSession``.

:func:`find_pin_error` digs the :class:`tlspin.PinVerificationError` out of any client's
exception.
"""

from __future__ import annotations

from tlspin.integrations._common import find_pin_error

__all__ = ["find_pin_error"]
