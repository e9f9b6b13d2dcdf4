"""Where runs go, and where the previous run comes from.

* :class:`StateFile`: a JSON file holding the latest result per endpoint (no database needed).
* :class:`DatabaseStore`: the collector's database (``--db URL``), through
  :mod:`tlspin.collector.storage`; every run is kept, so the dashboard shows history.
* :class:`CollectorStore`: a running collector (``--collector URL``), through its token-protected
  ``POST /api/monitor-runs``; the previous run is kept in a state file alongside.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CollectorStore",
    "DatabaseStore",
    "RunStore",
    "StateFile",
    "StoreError",
    "default_state_path",
]

_STATE_VERSION = 1
_MAX_STATE_BYTES = 64 * 1024 * 1024


class StoreError(RuntimeError):
    """A run could not be stored or the previous run could not be read."""


class RunStore(Protocol):
    """What the monitor needs from a store."""

    def previous(self) -> dict[str, dict[str, Any]]:
        """Return the latest stored result per endpoint."""
        ...

    def save(self, run: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        """Store one run and its results."""
        ...


def default_state_path(name: str = "monitor-state.json") -> Path:
    """``$XDG_STATE_HOME/tlspin/<name>`` (``~/.local/state/tlspin/<name>`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tlspin" / name


def write_json_atomic(path: Path, data: Any) -> None:
    """Write *data* as JSON to *path* so a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path, what: str) -> Any:
    """Read a JSON state file; a missing file reads as None.

    Raises:
        StoreError: the file exists but cannot be read or parsed (it is left untouched).
    """
    try:
        if path.stat().st_size > _MAX_STATE_BYTES:
            raise StoreError(f"{what} {path} is larger than {_MAX_STATE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {what} {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(
            f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg}); "
            "fix or remove it"
        ) from None


class StateFile:
    """The latest result per endpoint in one JSON file.

    Args:
        path: the file; its directory is created on the first save.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def previous(self) -> dict[str, dict[str, Any]]:
        """Return the stored results keyed by endpoint (empty when there is no file yet).

        Raises:
            StoreError: the file is unreadable or not a monitor state file.
        """
        data = read_json(self.path, "monitor state file")
        if data is None:
            return {}
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, dict) or not all(isinstance(v, dict) for v in results.values()):
            raise StoreError(
                f"monitor state file {self.path} has no 'results' table of endpoint results; "
                "fix or remove it"
            )
        return results

    def save(self, run: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        """Merge *results* into the file (endpoints not probed this time keep their last result)."""
        try:
            known = self.previous()
        except StoreError:
            known = {}
        known.update({str(r["endpoint"]): dict(r) for r in results})
        write_json_atomic(
            self.path, {"version": _STATE_VERSION, "last_run": dict(run), "results": known}
        )


class DatabaseStore:
    """Store runs in the collector's database (SQLite or PostgreSQL URL, SQLAlchemy form).

    The schema is brought to the current revision first (Alembic; idempotent, and safe while a
    collector uses the same database).
    """

    def __init__(self, url: str) -> None:
        try:
            from tlspin.collector.storage import Database
        except ImportError as exc:
            msg = "--db needs the collector extra: pip install 'tlspin[collector]'"
            raise StoreError(msg) from exc
        try:
            self.db = Database(url)
            self.db.migrate()
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Alembic raise many types
            raise StoreError(f"cannot open database {_redact(url)}: {exc}") from None

    def previous(self) -> dict[str, dict[str, Any]]:
        """Return the latest stored result per endpoint."""
        from tlspin.collector.monitor_runs import latest_monitor_results

        try:
            rows = latest_monitor_results(self.db)
        except Exception as exc:  # noqa: BLE001 - database errors vary by driver
            raise StoreError(f"cannot read monitor results from the database: {exc}") from None
        return {str(r["endpoint"]): dict(r) for r in rows}

    def save(self, run: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        """Store the run and its results."""
        from tlspin.collector.monitor_runs import save_monitor_run

        try:
            save_monitor_run(self.db, dict(run), [dict(r) for r in results])
        except Exception as exc:  # noqa: BLE001 - database errors vary by driver
            raise StoreError(f"cannot store the monitor run in the database: {exc}") from None

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()


class CollectorStore:
    """Send runs to a collector's ``POST /api/monitor-runs``; keep the previous run locally.

    Args:
        url: the collector's base URL (``https://collector.example/``).
        token: the API token (from ``TLSPIN_COLLECTOR_TOKEN``); never logged.
        state: the local state file for the previous run.
        cafile: CA file to verify an HTTPS collector with.
        timeout: seconds per request.
    """

    def __init__(
        self, url: str, *, token: str | None, state: StateFile, cafile: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise StoreError(f"--collector expects an http(s) URL, found {url!r}")
        self.url = url.rstrip("/") + "/api/monitor-runs"
        self._token = token
        self.state = state
        self._cafile = cafile
        self._timeout = timeout

    def previous(self) -> dict[str, dict[str, Any]]:
        """Return the previous run from the local state file."""
        return self.state.previous()

    def save(self, run: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        """POST the run to the collector, then update the local state file."""
        import ssl

        body = json.dumps({"run": dict(run), "results": [dict(r) for r in results]}).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "tlspin-monitor"},
        )
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        context = ssl.create_default_context(cafile=self._cafile) if self._cafile else None
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=context
            ) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            # The error carries the open response: close it now, not whenever the garbage
            # collector gets to the exception chain (an unclosed socket until then).
            exc.close()
            raise StoreError(
                f"the collector refused the monitor run: HTTP {exc.code} {exc.reason} "
                f"from {self.url}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(f"cannot reach the collector at {self.url}: {reason}") from None
        self.state.save(run, results)


def _redact(url: str) -> str:
    # Database URLs carry passwords; never echo them.
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"
