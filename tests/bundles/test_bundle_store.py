"""The bundle store: atomic writes, re-verification on load, fallbacks, crash safety."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tlspin.bundles import BundleStore, KeySet, TrustState, accept, next_chain
from tlspin.bundles.store import CURRENT, PREVIOUS, STATE

from .conftest import Pki, make, public

WRITER = Path(__file__).with_name("crash_writer.py")


def trust(*keys: Ed25519PrivateKey) -> TrustState:
    """The application's trust state for *keys* (threshold 1)."""
    return TrustState(KeySet([public(k) for k in keys]))


def tamper(path: Path, old: bytes = b"api.test", new: bytes = b"api.tesu") -> None:
    """Change one byte of the policy inside a stored file."""
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def test_save_and_load_round_trip(tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey) -> None:
    """A saved bundle loads back verified, with its ETag, from private files."""
    store = BundleStore(tmp_path / "store")
    store.save(make(pki.policy(), [key_a], 4), etag='"abc"')
    report = store.load(trust(key_a))
    assert report.loaded is not None
    assert report.loaded.verified.bundle.version == 4
    assert report.loaded.etag == '"abc"'
    assert report.problems == ()
    for name in (CURRENT, STATE):
        assert stat.S_IMODE((tmp_path / "store" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o700


def test_fresh_store_is_empty_without_problems(tmp_path: Path, key_a: Ed25519PrivateKey) -> None:
    """A store never written loads nothing and reports nothing (a first start is not an attack)."""
    report = BundleStore(tmp_path / "none").load(trust(key_a))
    assert report.loaded is None
    assert report.problems == ()


def test_tampered_current_loads_the_state_copy_then_the_previous(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey
) -> None:
    """One changed byte is caught by re-verification: the newest bundle's second copy loads, and
    only with both copies damaged does the last good (older) bundle serve."""
    store = BundleStore(tmp_path)
    v1, v2 = make(pki.policy(), [key_a], 1), make(pki.policy([pki.api_new.pin]), [key_a], 2)
    store.save(v1)
    store.save(v2, previous=v1)
    assert store.load(trust(key_a)).loaded.verified.bundle.version == 2  # type: ignore[union-attr]
    tamper(tmp_path / CURRENT, pki.api_new.pin[10:20].encode(), b"AAAAAAAAAA")
    report = store.load(trust(key_a))
    assert report.loaded is not None
    assert (report.loaded.source, report.loaded.verified.bundle.version) == ("state", 2)
    assert [(name, err.reason) for name, err in report.problems] == [(CURRENT, "threshold")]
    tamper(tmp_path / STATE, pki.api_new.pin[10:20].encode(), b"AAAAAAAAAA")
    report = store.load(trust(key_a))
    assert report.loaded is not None
    assert (report.loaded.source, report.loaded.verified.bundle.version) == ("previous", 1)
    assert [(name, err.reason) for name, err in report.problems] == [
        (CURRENT, "threshold"), (STATE, "store")]  # its recorded digest no longer matches


@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete", "garbage"])
def test_damaged_store_never_loads_damaged_data(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey, damage: str
) -> None:
    """All files damaged (tampered, truncated, deleted, garbage): nothing loads, problems named."""
    store = BundleStore(tmp_path)
    v1, v2 = make(pki.policy(), [key_a], 1), make(pki.policy(), [key_a], 2)
    store.save(v1)
    store.save(v2, previous=v1)
    for name in (CURRENT, STATE, PREVIOUS):
        path = tmp_path / name
        if damage == "tamper":
            tamper(path)
        elif damage == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "garbage":
            path.write_bytes(os.urandom(300))
        elif name != PREVIOUS:
            path.unlink()
    report = store.load(trust(key_a))
    if damage == "delete":
        # Both copies of the newest bundle were deleted: the previous one still verifies.
        assert report.loaded is not None
        assert report.loaded.source == "previous"
        assert [err.reason for _, err in report.problems] == ["store"]
    else:
        assert report.loaded is None
        assert len(report.problems) == 3


def test_store_written_with_another_key_is_refused(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey, key_evil: Ed25519PrivateKey
) -> None:
    """A well-formed store signed by a key the app does not trust is refused on load."""
    store = BundleStore(tmp_path)
    store.save(make(pki.policy(), [key_evil], 9))
    report = store.load(trust(key_a))
    assert report.loaded is None
    assert report.problems[0][1].reason == "threshold"
    assert store.load(trust(key_evil)).loaded is not None


def test_rotation_chain_is_reverified_from_app_keys(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey, key_b: Ed25519PrivateKey
) -> None:
    """After a rotation the store re-derives the new keys from the app's keys via the chain."""
    rotation = make(pki.policy(), [key_a, key_b], 2, signing_keys=KeySet([public(key_b)]))
    rotated = accept(rotation, trust=trust(key_a))
    v3 = make(pki.policy(), [key_b], 3, chain=next_chain(rotation))
    verified = accept(v3, trust=rotated.trust, current=rotation.bundle)
    store = BundleStore(tmp_path)
    store.save(verified.document, previous=rotated.document)
    loaded = store.load(trust(key_a)).loaded
    assert loaded is not None
    assert loaded.verified.trust.keys.keyids == {public(key_b).keyid}
    # Without its chain, the stored bundle (signed by B only) does not verify from key A.
    for name in (CURRENT, STATE):
        tamper(tmp_path / name, b'"chain"', b'"chaim"')
    report = store.load(trust(key_a))
    assert report.loaded is not None
    assert report.loaded.source == "previous"


def test_save_cleans_stale_temporary_files(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey
) -> None:
    """Temporary files left by a killed writer are removed by the next save."""
    stale = tmp_path / ".bundle.json.deadbeef.tmp"
    stale.write_bytes(b"{")
    BundleStore(tmp_path).save(make(pki.policy(), [key_a], 1))
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", CURRENT, STATE]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sigkill_while_writing_never_corrupts_the_store(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey
) -> None:
    """SIGKILL a process saving ever newer bundles at 200 random moments: the store always loads,
    with no problem, and its newest version never goes down."""
    directory = tmp_path / "store"
    v1 = make(pki.policy(), [key_a], 1)
    template = tmp_path / "template.json"
    template.write_bytes(v1.dumps())
    store = BundleStore(directory)
    store.save(v1)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), str(template), "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    rng = random.Random()
    newest = 1
    torn = 0
    try:
        for kill in range(200):
            proc.stdin.write("fork\n")
            proc.stdin.flush()
            pid = int(proc.stdout.readline())
            # Mostly within the first few writes; now and then later, so that saves complete
            # even on a loaded machine whose fsyncs are slow.
            time.sleep(rng.uniform(0, 0.02) if kill % 20 else 0.3)
            os.kill(pid, signal.SIGKILL)
            assert proc.stdout.readline().strip() == "reaped"
            torn += any(directory.glob(".*.tmp"))
            report = store.load(trust(key_a))
            assert report.problems == ()
            assert report.loaded is not None
            assert report.loaded.source in ("current", "state")
            version = report.loaded.verified.bundle.version
            assert version >= newest, f"the newest version went down from {newest} to {version}"
            newest = version
            previous, _ = store.read(PREVIOUS) if (directory / PREVIOUS).exists() else (v1, None)
            accept(previous, trust=trust(key_a), check_times=False)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert newest > 1
    # Evidence that kills landed mid-write (a temporary file was left behind), not only between.
    assert torn > 0


def test_planted_links_and_fifos_are_refused_not_followed(
    tmp_path: Path, pki: Pki, key_a: Ed25519PrivateKey
) -> None:
    """A symbolic link planted as bundle.json is not followed (even to a valid store file) and a
    FIFO planted as state.json cannot block the load; the remaining good copy still loads."""
    import threading

    other = BundleStore(tmp_path / "other")
    other.save(make(pki.policy(), [key_a], 9))  # valid, signed by a trusted key, version 9
    store = BundleStore(tmp_path / "store")
    store.save(make(pki.policy(), [key_a], 2))
    (tmp_path / "store" / CURRENT).unlink()
    (tmp_path / "store" / CURRENT).symlink_to(tmp_path / "other" / CURRENT)
    report = store.load(trust(key_a))
    assert report.loaded is not None
    assert (report.loaded.source, report.loaded.verified.bundle.version) == ("state", 2)
    assert [(name, err.reason) for name, err in report.problems] == [(CURRENT, "store")]
    (tmp_path / "store" / STATE).unlink()
    os.mkfifo(tmp_path / "store" / STATE)
    results: list[object] = []
    loader = threading.Thread(target=lambda: results.append(store.load(trust(key_a))), daemon=True)
    loader.start()
    loader.join(10)
    assert not loader.is_alive(), "loading the store blocked on a FIFO"
    assert [name for name, _ in results[0].problems] == [CURRENT, STATE]  # type: ignore[attr-defined]
