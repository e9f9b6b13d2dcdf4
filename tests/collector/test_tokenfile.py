"""Collector token files: created 0600 and exclusively, read only when private, never echoed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tlspin.collector.tokenfile import (
    TOKEN_FILE_NAME,
    TokenFileError,
    create_token_file,
    default_token_path,
    load_or_create_token,
    read_token_file,
)

SECRET = "tok-" + "s3cr3t" * 5


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_default_path_sits_next_to_the_sqlite_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: the token file is in the database's directory, for absolute and relative URLs."""
    monkeypatch.chdir(tmp_path)
    assert default_token_path("sqlite:////srv/tlspin/c.db") == Path("/srv/tlspin", TOKEN_FILE_NAME)
    assert default_token_path("sqlite:///sub/c.db") == tmp_path / "sub" / TOKEN_FILE_NAME


def test_default_path_for_a_server_database_is_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL and in-memory SQLite: $XDG_STATE_HOME/tlspin, else ~/.local/state/tlspin."""
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    expected = state / "tlspin" / TOKEN_FILE_NAME
    assert default_token_path("postgresql://collector@127.0.0.1/tlspin", environ=env) == expected
    assert default_token_path("sqlite://", environ=env) == expected
    assert default_token_path("sqlite:///:memory:", environ=env) == expected
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fallback = tmp_path / "home" / ".local" / "state" / "tlspin" / TOKEN_FILE_NAME
    # A relative XDG_STATE_HOME is invalid per the XDG spec and is ignored.
    for bad in ({}, {"XDG_STATE_HOME": ""}, {"XDG_STATE_HOME": "relative/state"}):
        assert default_token_path("postgresql://c@127.0.0.1/t", environ=bad) == fallback


def test_default_path_rejects_a_malformed_url() -> None:
    """Twin: a URL that is not a database URL is a configuration error naming what was expected."""
    with pytest.raises(TokenFileError, match="expected a database URL"):
        default_token_path("not a url at all")


def test_created_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    """A new token file has mode 0600 whatever the umask, and holds the returned token."""
    target = tmp_path / "new.token"
    old = os.umask(0)
    try:
        token = create_token_file(target)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == f"{token}\n"
    assert len(token) >= 40
    assert read_token_file(target) == token


def test_creation_never_replaces_a_file_or_follows_a_symlink(tmp_path: Path) -> None:
    """Twin: an existing file is left as it was; a planted symlink does not create its target."""
    existing = _private(tmp_path / "existing.token", SECRET)
    with pytest.raises(FileExistsError):
        create_token_file(existing)
    assert existing.read_text() == SECRET
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    link = tmp_path / "link.token"
    link.symlink_to(victim)
    with pytest.raises(TokenFileError, match="dangling symbolic link"):
        load_or_create_token(link)
    assert not victim.exists()


def test_load_or_create_generates_once_then_reuses(tmp_path: Path) -> None:
    """The first call makes the file (and a 0700 directory); the second reads the same token."""
    target = tmp_path / "state" / "tlspin" / TOKEN_FILE_NAME
    token, created = load_or_create_token(target, make_parents=True)
    assert created
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert load_or_create_token(target) == (token, False)


def test_missing_directory_is_an_error_without_make_parents(tmp_path: Path) -> None:
    """Twin: without make_parents, a missing directory is reported, not created."""
    target = tmp_path / "absent" / TOKEN_FILE_NAME
    with pytest.raises(TokenFileError, match="cannot create the token file"):
        load_or_create_token(target)
    assert not target.parent.exists()


def test_a_symlink_to_a_private_file_is_read(tmp_path: Path) -> None:
    """A symlink to a private token file (e.g. a secrets mount) is followed for reading."""
    real = _private(tmp_path / "real.token", f"  {SECRET}\n")
    link = tmp_path / "link.token"
    link.symlink_to(real)
    assert read_token_file(link) == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620, 0o602, 0o700 | 0o004])
def test_loose_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    """Twin: any group or other permission bit makes the file unusable, and the token is unsaid."""
    target = _private(tmp_path / "loose.token", SECRET)
    target.chmod(mode)
    with pytest.raises(TokenFileError, match=f"found mode {mode:04o}") as caught:
        read_token_file(target)
    assert SECRET not in str(caught.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="chown needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """A private file that belongs to somebody else may hold a token they chose: refused."""
    target = _private(tmp_path / "theirs.token", SECRET)
    os.chown(target, 65534, 65534)
    with pytest.raises(TokenFileError, match="found uid 65534") as caught:
        read_token_file(target)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "found an empty file"),
        (b"  \n\n", "found an empty file"),
        (f"{SECRET} {SECRET}\n".encode(), "found whitespace inside"),
        (f"{SECRET}\n{SECRET}\n".encode(), "found whitespace inside"),
        (b"\xff\xfe" + SECRET.encode(), "found binary data"),
        (SECRET.encode() * 200, "over 4096 bytes"),
    ],
)
def test_bad_content_is_refused_without_echoing_it(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """A file without exactly one token line gets a clear error that does not quote the file."""
    target = tmp_path / "bad.token"
    target.write_bytes(content)
    target.chmod(0o600)
    with pytest.raises(TokenFileError, match=expected) as caught:
        read_token_file(target)
    assert SECRET not in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO planted at the path is refused at once instead of hanging the reader."""
    fifo = tmp_path / "fifo.token"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(TokenFileError, match="expected a regular file"):
        read_token_file(fifo)
