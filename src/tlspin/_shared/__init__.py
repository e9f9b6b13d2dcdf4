"""Private plumbing that several of tlspin's tools share; no part of the public API.

The pinning core (the modules at the top of :mod:`tlspin`) never imports this package. Each
module here is used by more than one tool; a helper only one tool needs lives in that tool's
package instead (``tlspin.audit._tls_records``, ``tlspin.cli._certfiles``).

* ``numbers`` — numbers read from peers as ASCII digits only;
* ``escapes`` — control and format characters as escapes in TOML, JSON and XML output;
* ``net`` — loopback-only address checks and a start/stop service base;
* ``loopserver`` — an asyncio server in its own thread (audit proxy, test proxies);
* ``deadline`` — one HTTP/1.1 exchange under an overall deadline (bundle fetch, reports);
* ``endpoints`` — report and webhook URL checks and ``post_json`` (reporting, lint, imports);
* ``sender`` — the retrying background sender (``Reporter``, the collector's alerts);
* ``probing`` and ``probe`` — the verifying TLS probe context and chain capture, and the
  blocking probe of ``pin``/``check``/``init``/``lint --live`` (the monitor's is asyncio);
* ``policyio`` — writing policy documents, atomically.
"""
