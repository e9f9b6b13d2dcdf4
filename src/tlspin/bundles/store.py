"""The on-disk bundle store: atomic writes, the last good bundle kept, re-verified on every load.

Layout of the store directory (one writer at a time; a lock file serialises processes)::

    bundle.json            the bundle in force, with its full key-rotation chain
    bundle.previous.json   the bundle in force before it (the last good one)
    state.json             the anti-rollback record: the newest accepted bundle, again
    .lock                  advisory lock held while writing

``bundle.json`` and ``bundle.previous.json`` are
``{"format": "tlspin-store/1", "etag": …, "document": <served document>}``; ``state.json`` is
``{"format": "tlspin-state/1", "version": N, "digest": <hex SHA-256 of the bundle's canonical
bytes>, "document": <document>}``. Each is replaced atomically: written to a temporary file in
the same directory, fsynced, renamed over the old file (a rename replaces a symbolic link, it
never writes through one), then the directory is fsynced. A crash at any moment leaves each file
either old or new, never torn.

Nothing in a file is trusted: every load re-verifies the signatures from the application's own
keys through the stored rotation chain. The newest accepted version (the anti-rollback floor,
and the deny pins that outlive the bundle) is the highest version among ``bundle.json`` and
``state.json`` that verifies, so damaging one of the two files lowers nothing; only when both
are unusable does the store fall back to the previous bundle (and its lower version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tlspin.bundles.errors import BundleError
from tlspin.bundles.format import (
    DEFAULT_MAX_BYTES,
    MAX_CHAIN,
    Bundle,
    Document,
    parse_document,
    parse_json,
)
from tlspin.bundles.verify import TrustState, Verified, accept

__all__ = [
    "CURRENT",
    "PREVIOUS",
    "STATE",
    "STATE_FORMAT",
    "STORE_FORMAT",
    "BundleStore",
    "LoadReport",
    "Loaded",
]

STORE_FORMAT = "tlspin-store/1"
STATE_FORMAT = "tlspin-state/1"
CURRENT = "bundle.json"
PREVIOUS = "bundle.previous.json"
STATE = "state.json"
Source = Literal["current", "state", "previous"]
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True, slots=True, eq=False)
class Loaded:
    """A stored bundle that verified.

    Attributes:
        verified: the bundle, its policy and the trust state its chain leads to.
        source: the file it came from: ``"current"``, ``"state"`` (the newest bundle's second
            copy, when ``bundle.json`` is damaged or older), or ``"previous"`` after a fallback.
        etag: the HTTP entity tag it was served with, if any.
    """

    verified: Verified
    source: Source
    etag: str | None


@dataclass(frozen=True, slots=True, eq=False)
class LoadReport:
    """What :meth:`BundleStore.load` found.

    Attributes:
        loaded: the bundle to use, or None (nothing usable: use the embedded fallback policy).
        problems: ``(file name, error)`` for each file that exists but was refused, and for a
            missing current file while a previous one exists.
    """

    loaded: Loaded | None
    problems: tuple[tuple[str, BundleError], ...] = ()


def digest(bundle: Bundle) -> str:
    """Hex SHA-256 of *bundle*'s canonical bytes: what the state file records for the floor."""
    return hashlib.sha256(bundle.canonical).hexdigest()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a directory without search permission: treat as absent
        return False


def _envelope(
    path: Path, value: Any, *, kind: str, fmt: str, keys: set[str], expected: str
) -> dict[str, Any]:
    """*value*, parsed from *path*, as a tlspin *kind* file: an object with exactly *keys*
    (listed as *expected* in the error) whose ``format`` is *fmt*.

    Raises:
        BundleError: it is not (reason ``"schema"`` or ``"format"``).
    """
    if not isinstance(value, dict) or set(value) != keys:
        msg = f"{path} is not a tlspin {kind} file (expected {expected})"
        raise BundleError(msg, reason="schema")
    if value["format"] != fmt:
        raise BundleError(
            f"{path} has {kind} format {value['format']!r:.40}; expected {fmt!r}",
            reason="format",
        )
    return value


class BundleStore:
    """A directory that keeps the accepted bundle and the one before it.

    Args:
        directory: created (mode 0700) on the first write if missing.
        max_bytes: the size cap of one served bundle document; a store file may hold up to
            ``MAX_CHAIN + 2`` times as much (the rotation chain travels with it).
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES):
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._file_cap = max_bytes * (MAX_CHAIN + 2)

    def __repr__(self) -> str:
        return f"BundleStore({str(self._dir)!r})"

    @property
    def directory(self) -> Path:
        """The store directory."""
        return self._dir

    # -- reading --------------------------------------------------------------------------
    def _read_bytes(self, name: str) -> bytes:
        path = self._dir / name
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise
        except OSError as exc:
            # ELOOP: a symbolic link planted in the store is not followed.
            raise BundleError(f"cannot read {path}: {exc.strerror}", reason="store") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                # A FIFO or a device would block or never end: only regular files are read.
                raise BundleError(f"{path} is not a regular file", reason="store")
            try:
                return handle.read(self._file_cap + 1)
            except OSError as exc:
                raise BundleError(f"cannot read {path}: {exc.strerror}", reason="store") from None

    def read(self, name: str) -> tuple[Document, str | None]:
        """Parse one store file (schema only, no signature check).

        Raises:
            FileNotFoundError: the file does not exist.
            BundleError: it is unreadable, not a regular file, too large, or malformed.
        """
        path = self._dir / name
        value = parse_json(self._read_bytes(name), max_bytes=self._file_cap)
        if name == STATE:
            return self._state_document(path, value), None
        value = _envelope(
            path,
            value,
            kind="store",
            fmt=STORE_FORMAT,
            keys={"format", "etag", "document"},
            expected="format, etag and document",
        )
        etag = value["etag"]
        if etag is not None and not isinstance(etag, str):
            raise BundleError(f"{path}: etag must be a string or null", reason="schema")
        return parse_document(value["document"], max_bytes=self._max_bytes), etag

    def _state_document(self, path: Path, value: Any) -> Document:
        value = _envelope(
            path,
            value,
            kind="state",
            fmt=STATE_FORMAT,
            keys={"format", "version", "digest", "document"},
            expected="format, version, digest, document",
        )
        document = parse_document(value["document"], max_bytes=self._max_bytes)
        bundle = document.bundle
        if value["version"] != bundle.version or value["digest"] != digest(bundle):
            msg = f"{path}: the recorded version and digest do not match its bundle"
            raise BundleError(msg, reason="store")
        return document

    def load(
        self, trust: TrustState, *, min_version: int = 0, pinned_host: str | None = None
    ) -> LoadReport:
        """Load the newest stored bundle that still verifies from *trust* (the app's keys).

        ``bundle.json`` and ``state.json`` both hold the newest accepted bundle; the higher
        version of the two that verifies wins (on a tie with other content, ``state.json``, which
        is written last). Only when neither verifies does ``bundle.previous.json`` serve.
        Expiry is not checked here: the caller decides what an expired bundle means (its
        version still counts against rollback).
        """
        problems: list[tuple[str, BundleError]] = []
        found: dict[str, Loaded] = {}
        files: tuple[tuple[str, Source], ...] = (
            (CURRENT, "current"),
            (STATE, "state"),
            (PREVIOUS, "previous"),
        )
        for name, source in files:
            if source == "previous" and found:
                break
            try:
                loaded = self._verify(name, source, trust, min_version, pinned_host)
            except FileNotFoundError:
                if source == "current" and (
                    _exists(self._dir / PREVIOUS) or _exists(self._dir / STATE)
                ):
                    problems.append((name, BundleError(f"{name} is missing", reason="store")))
                continue
            except BundleError as exc:
                problems.append((name, exc))
                continue
            found[source] = loaded
        current, state = found.get("current"), found.get("state")
        if current is not None and state is not None:
            a, b = current.verified.bundle, state.verified.bundle
            if a.version == b.version and a.canonical != b.canonical:
                problems.append((CURRENT, BundleError(
                    f"{CURRENT} and {STATE} hold different bundles of version {a.version}; "
                    f"using {STATE}", reason="equivocation")))
                current = None
            elif a.version < b.version:
                problems.append((CURRENT, BundleError(
                    f"{CURRENT} holds version {a.version}, older than version {b.version} in "
                    f"{STATE}", reason="rollback")))
                current = None
        best = current or state or found.get("previous")
        return LoadReport(best, tuple(problems))

    def _verify(
        self,
        name: str,
        source: Source,
        trust: TrustState,
        min_version: int,
        pinned_host: str | None,
    ) -> Loaded:
        document, etag = self.read(name)
        verified = accept(
            document,
            trust=trust,
            min_version=min_version,
            check_times=False,
            pinned_host=pinned_host,
        )
        return Loaded(verified, source, etag)

    # -- writing --------------------------------------------------------------------------
    def save(
        self, document: Document, *, previous: Document | None = None, etag: str | None = None
    ) -> None:
        """Store *document* as current, and *previous* (the bundle it replaces) as the last good.

        *previous* should be the verified bundle that was in force; with None the previous
        file is left as it is. Each file is replaced atomically, previous first and the state
        file last, so a crash leaves a loadable store (old or new) whose newest version is never
        lower than before.

        Raises:
            OSError: the directory or a file cannot be written.
        """
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            self._remove_stale_temporaries()
            if previous is not None:
                self._write(PREVIOUS, self._encode(previous, None))
            self._write(CURRENT, self._encode(document, etag))
            self._write(STATE, self._encode_state(document))

    @staticmethod
    def _encode(document: Document, etag: str | None) -> bytes:
        data: dict[str, Any] = {
            "format": STORE_FORMAT,
            "etag": etag,
            "document": document.to_data(),
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def _encode_state(document: Document) -> bytes:
        bundle = document.bundle
        data: dict[str, Any] = {
            "format": STATE_FORMAT,
            "version": bundle.version,
            "digest": digest(bundle),
            "document": document.to_data(),
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _write(self, name: str, data: bytes) -> None:
        tmp = self._dir / f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._dir / name)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        # The rename is durable only once the directory entry is on disk too.
        if os.name != "posix":
            return
        fd = os.open(self._dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove_stale_temporaries(self) -> None:
        # Left behind by a writer that crashed mid-write; safe to drop while we hold the lock.
        for path in (*self._dir.glob(".bundle*.tmp"), *self._dir.glob(".state*.tmp")):
            with contextlib.suppress(OSError):
                path.unlink()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        key = str(self._dir.resolve())
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())
        with lock:
            try:
                import fcntl
            except ImportError:  # Not POSIX: only the in-process lock applies.
                yield
                return
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self._dir / ".lock", flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
