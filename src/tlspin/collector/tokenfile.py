"""Collector token files: the token lives in a mode-0600 file, never on a terminal or in a log.

``tlspin serve`` and ``tlspin demo`` generate a token when none is configured. Printing it would
put it in scroll-back buffers, terminal recordings and CI logs, so it goes to a file that only
its owner can read, and the commands print the file's path instead.

A token file is created with ``O_CREAT | O_EXCL`` (never through a symlink, never over an
existing file) and mode 0600. An existing one is used only if it is a regular file owned by the
current user that neither group nor others can access: a looser file may already have been read
(or planted) by somebody else.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "TOKEN_FILE_NAME",
    "TokenFileError",
    "create_token_file",
    "default_token_path",
    "load_or_create_token",
    "new_token",
    "read_token_file",
    "state_directory",
]

#: Name of the token file ``tlspin serve`` keeps next to its SQLite database (or state directory).
TOKEN_FILE_NAME = "tlspin-collector.token"  # noqa: S105 - a file name, not a secret

# A token is a few dozen characters; anything much larger is not a token file.
_MAX_BYTES = 4096
_POSIX = os.name == "posix"


class TokenFileError(ValueError):
    """A token file cannot be used: unsafe permissions, wrong owner, bad content, I/O error.

    Messages name the file and what is wrong with it, never its content.
    """


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def default_token_path(db_url: str, *, environ: Mapping[str, str] | None = None) -> Path:
    """Where ``tlspin serve`` keeps its token when neither a token nor ``--token-file`` is given.

    Next to the database file for SQLite; otherwise (PostgreSQL, in-memory SQLite) in
    ``$XDG_STATE_HOME/tlspin/`` or, when that is unset or relative, ``~/.local/state/tlspin/``.

    Raises:
        TokenFileError: the URL cannot be parsed, or there is no home directory to fall back on.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except (ArgumentError, ValueError) as exc:
        msg = f"expected a database URL such as sqlite:///tlspin.db, found {db_url!r} ({exc})"
        raise TokenFileError(msg) from None
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:" \
            and not database.startswith("file:"):
        return Path(database).absolute().parent / TOKEN_FILE_NAME
    return state_directory(environ=environ) / TOKEN_FILE_NAME


def state_directory(*, environ: Mapping[str, str] | None = None) -> Path:
    """tlspin's XDG state directory (``$XDG_STATE_HOME/tlspin``, else ``~/.local/state/tlspin``).

    Raises:
        TokenFileError: ``XDG_STATE_HOME`` is unusable and the home directory is unknown.
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    if not base or not Path(base).is_absolute():
        try:
            base = str(Path.home() / ".local" / "state")
        except RuntimeError:
            msg = (
                "cannot find a directory for the token file: neither XDG_STATE_HOME nor the "
                "home directory is set; pass --token-file PATH"
            )
            raise TokenFileError(msg) from None
    return Path(base) / "tlspin"


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Read a token from *path*, refusing files that others could have read or written.

    Raises:
        FileNotFoundError: there is no such file.
        TokenFileError: the file is not a private regular file of this user, or holds no
            single-line token.
    """
    target = Path(path)
    # O_NONBLOCK: opening a FIFO planted at the path must not hang; it is refused below.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        msg = f"{target}: cannot read the token file: {exc.strerror or exc}"
        raise TokenFileError(msg) from None
    try:
        info = os.fstat(fd)
        _check_private(target, info)
        data = os.read(fd, _MAX_BYTES + 1)
    except OSError as exc:
        msg = f"{target}: cannot read the token file: {exc.strerror or exc}"
        raise TokenFileError(msg) from None
    finally:
        os.close(fd)
    if len(data) > _MAX_BYTES:
        msg = f"{target}: expected a token of one line, found a file over {_MAX_BYTES} bytes"
        raise TokenFileError(msg)
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        msg = f"{target}: expected a token in UTF-8 text, found binary data"
        raise TokenFileError(msg) from None
    if not token:
        msg = f"{target}: expected a token, found an empty file"
        raise TokenFileError(msg)
    if any(ch.isspace() for ch in token):
        # Never echo the content: it may be the token with a stray character.
        msg = f"{target}: expected a token of one line without spaces, found whitespace inside"
        raise TokenFileError(msg)
    return token


def _check_private(target: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        msg = f"{target}: expected a regular file holding the token, found another kind of file"
        raise TokenFileError(msg)
    if not _POSIX:
        return  # Windows: no POSIX modes to check; rely on the profile directory's ACLs.
    uid = os.geteuid()
    if info.st_uid != uid:
        msg = (
            f"{target}: a token file must belong to the user running tlspin (uid {uid}), "
            f"found uid {info.st_uid}; somebody else may know the token"
        )
        raise TokenFileError(msg)
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        mode = stat.S_IMODE(info.st_mode)
        msg = (
            f"{target}: a token file must be readable by its owner only (mode 0600), found mode "
            f"{mode:04o}; other users may have read it. Delete it to get a new token, or "
            f"chmod 600 it if you are sure nobody did"
        )
        raise TokenFileError(msg)


def create_token_file(path: str | os.PathLike[str], token: str | None = None) -> str:
    """Create *path* (mode 0600) holding *token*, or a new random token; return the token.

    The file is created exclusively: never over an existing file, never through a symlink.

    Raises:
        FileExistsError: *path* already exists (a concurrent run may have just created it).
        TokenFileError: the file cannot be created or written (no such directory, read-only...).
    """
    target = Path(path)
    value = token if token is not None else new_token()
    flags = (
        os.O_WRONLY | os.O_CREAT | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise
    except OSError as exc:
        msg = f"{target}: cannot create the token file: {exc.strerror or exc}"
        raise TokenFileError(msg) from None
    try:
        data = f"{value}\n".encode()
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        target.unlink(missing_ok=True)  # never leave a partial token behind
        msg = f"{target}: cannot write the token file: {exc.strerror or exc}"
        raise TokenFileError(msg) from None
    os.close(fd)
    return value


def load_or_create_token(
    path: str | os.PathLike[str], *, make_parents: bool = False
) -> tuple[str, bool]:
    """Read the token in *path*, or create the file with a new token if there is none.

    Args:
        path: the token file.
        make_parents: create missing parent directories (mode 0700) first.

    Returns:
        ``(token, created)``: *created* is True when this call generated the token.

    Raises:
        TokenFileError: the existing file is unsafe or unreadable, or a new one cannot be made.
    """
    target = Path(path)
    try:
        return read_token_file(target), False
    except FileNotFoundError:
        pass
    if make_parents:
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"{target.parent}: cannot create the directory: {exc.strerror or exc}"
            raise TokenFileError(msg) from None
    try:
        return create_token_file(target), True
    except FileExistsError:
        # Another process created it between the two calls (or a dangling symlink is there,
        # which the read refuses with a clear message).
        try:
            return read_token_file(target), False
        except FileNotFoundError:
            msg = f"{target}: expected a token file, found a dangling symbolic link"
            raise TokenFileError(msg) from None
