"""The intake worker process: same answers as in-process intake, crash recovery, shutdown."""

from __future__ import annotations

import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tlspin.collector.intake_worker import _HEADER, _MAX_FRAME, IntakeProcess, _frame, _Frames
from tlspin.collector.models import Report

from .conftest import LiveServer


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still listed: a zombie counts as gone.
    status = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    return status == "Z"


@pytest.mark.parametrize("in_worker", [True, False])
def test_both_intakes_give_the_same_answers(
    serve: Callable[..., LiveServer], db_url: str, make_report: Any, in_worker: bool
) -> None:
    """A valid report is stored (201), an invalid one refused with the parser's reason."""
    server = serve(db_url=db_url, intake_process=in_worker)
    with server.client(token=None) as client:
        good = client.post("/reports", json=make_report(app_version="w1"))
        bad = client.post("/reports", json=make_report(hostname="bad host name!"))
    assert good.status_code == 201, good.text
    assert bad.status_code == 400
    assert "hostname" in bad.json()["reason"]
    assert isinstance(server.state.intake, IntakeProcess) is in_worker
    assert server.count(Report) == 1


def test_a_killed_worker_means_503s_then_a_new_worker(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """SIGKILL the worker with a report in flight: that report gets 503 (never a 500), a new
    worker takes over, and every acknowledged report is stored."""
    server = serve(db_url=sqlite_url)
    acked = 0
    with server.client(token=None) as client:
        assert client.post("/reports", json=make_report(app_version="k0")).status_code == 201
        acked += 1
        intake = server.state.intake
        first = intake.pid
        # Stopped, the worker cannot answer: the next report waits in the channel, so the kill
        # is certain to catch one in flight (a bare kill may be noticed before the next report
        # arrives, and the restart then answers it 201).
        os.kill(first, signal.SIGSTOP)
        in_flight: list[Any] = []
        sender = threading.Thread(
            target=lambda: in_flight.append(client.post("/reports", json=make_report())))
        sender.start()
        deadline = time.monotonic() + 20
        while not intake._channel.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert intake._channel.pending, "the report never reached the stopped worker"
        os.kill(first, signal.SIGKILL)
        sender.join(20)
        assert [r.status_code for r in in_flight] == [503]
        assert in_flight[0].headers["retry-after"] == "5"
        statuses = []
        while time.monotonic() < deadline:
            response = client.post("/reports", json=make_report(app_version=f"k{len(statuses)}"))
            statuses.append(response.status_code)
            if response.status_code == 201:
                acked += 1
                if intake.pid not in (None, first):
                    break
            else:
                assert response.headers["retry-after"] == "5"
            time.sleep(0.05)
    assert set(statuses) <= {201, 503}, statuses
    assert intake.pid not in (None, first)
    assert _gone(first)
    assert server.count(Report) == acked


def test_the_worker_stops_with_the_app(
    serve: Callable[..., LiveServer], sqlite_url: str, make_report: Any
) -> None:
    """The worker lives while the app runs and exits when the app stops."""
    server = serve(db_url=sqlite_url)
    with server.client(token=None) as client:
        assert client.post("/reports", json=make_report()).status_code == 201
    pid = server.state.intake.pid
    assert pid is not None
    assert not _gone(pid)  # the twin: alive while the app runs
    server.stop()
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def test_a_worker_that_cannot_store_gives_503(
    serve: Callable[..., LiveServer], tmp_path: Path, sqlite_url: str, make_report: Any
) -> None:
    """The worker opens the database only when the first report comes: spoil the file
    first, and that report gets 503, not a 500; a sound database (the twin) takes it."""
    broken = tmp_path / "broken.db"
    server = serve(db_url=f"sqlite:///{broken}")
    server.state.db.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{broken}{suffix}").unlink(missing_ok=True)
    broken.write_bytes(b"this is not an SQLite database" * 200)
    sound = serve(db_url=sqlite_url)
    with server.client(token=None) as client, sound.client(token=None) as other:
        refused = client.post("/reports", json=make_report())
        taken = other.post("/reports", json=make_report())
    assert refused.status_code == 503
    assert refused.json()["reason"] == "storage unavailable; retry later"
    assert taken.status_code == 201


def test_frames_survive_split_reads_and_refuse_oversized_ones() -> None:
    """Frames split across reads come back whole; a frame claiming too much is refused."""
    ours, theirs = socket.socketpair()
    try:
        data = _frame((1, b"x" * 70_000, 5, None)) + _frame((2, b"", 6, "127.0.0.1"))
        ours.sendall(data[:10])
        reader = _Frames(theirs)
        ours.sendall(data[10:])
        got: list[Any] = []
        while len(got) < 2:
            frames = reader.read()
            assert frames is not None
            got.extend(frames)
        assert got == [(1, b"x" * 70_000, 5, None), (2, b"", 6, "127.0.0.1")]
        ours.sendall(_HEADER.pack(_MAX_FRAME + 1))
        with pytest.raises(ValueError, match="more than the"):
            reader.read()
        ours.close()
    finally:
        theirs.close()


def test_gathering_waits_for_frames_still_on_their_way_and_loses_none() -> None:
    """A gathering read takes frames that arrive while it waits, leaves later ones for the
    next read, and returns empty-handed when none come."""
    ours, theirs = socket.socketpair()
    try:
        reader = _Frames(theirs)
        assert reader.more(0.05, 1) == []  # nothing on its way: it gives up at the timeout
        first, second, third = (_frame((n, b"{}", n, None)) for n in (1, 2, 3))
        ours.sendall(first + second[:7])
        sender = threading.Timer(0.05, ours.sendall, [second[7:]])
        sender.start()
        got = reader.more(30, 2)
        sender.join()
        assert [frame[0] for frame in got] == [1, 2]
        ours.sendall(third)
        assert [frame[0] for frame in reader.read() or []] == [3]
    finally:
        ours.close()
        theirs.close()


def test_gathering_stops_at_end_of_input_and_the_next_read_says_so() -> None:
    """When the app closes its end during a gathering read, the read returns what it has
    and the following read reports the end of input."""
    ours, theirs = socket.socketpair()
    try:
        reader = _Frames(theirs)
        ours.sendall(_frame((1, b"{}", 1, None)))
        ours.close()
        assert [frame[0] for frame in reader.more(30, 5)] == [1]
        assert reader.read() is None
    finally:
        theirs.close()


def test_a_worker_handed_a_socket_numbered_past_select_s_limit_still_gathers_and_stores(
    sqlite_url: str, make_report: Callable[..., dict[str, Any]]
) -> None:
    """An app holding over a thousand descriptors hands the worker a socket numbered past
    what select() takes; the worker still gathers bursts and stores every report."""
    import asyncio
    import datetime as dt
    import json

    from tlspin.collector.storage import Database, Stored

    db = Database(sqlite_url)
    db.migrate()
    bodies = [json.dumps(make_report(app_version=str(n))).encode() for n in range(36)]
    filler: list[int] = []

    async def run() -> list[Any]:
        intake = IntakeProcess(sqlite_url)
        now = dt.datetime.now(dt.UTC)
        try:
            results: list[Any] = []
            for start in range(0, 36, 6):  # a burst of five, then one alone
                burst = [intake.submit(b, received_at=now, client_ip=None)
                         for b in bodies[start : start + 5]]
                results += await asyncio.gather(*burst)
                results.append(await intake.submit(bodies[start + 5], received_at=now,
                                                   client_ip=None))
            return results
        finally:
            await intake.aclose()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"descriptors are capped at {hard}, below where select() stops")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    try:
        while not filler or filler[-1] <= 1100:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        results = asyncio.run(run())
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(results) == 36
    assert all(isinstance(r.stored, Stored) for r in results)
    with db.read() as conn:
        stored = conn.execute(select(Report.app_version)).scalars().all()
    assert sorted(stored, key=int) == [str(n) for n in range(36)]
    db.dispose()
