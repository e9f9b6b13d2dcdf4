"""Twisted's reactor in a background thread, so that plain (sync) pytest tests can drive treq.

A reactor cannot be restarted in a process, so one thread runs it for the whole session and
tests hand it work with ``blockingCallFromThread``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_thread: threading.Thread | None = None


def reactor() -> Any:
    """Start the reactor thread once and return the reactor."""
    global _thread  # noqa: PLW0603 - one reactor thread per process
    from twisted.internet import reactor as the_reactor

    with _lock:
        if _thread is None:
            _thread = threading.Thread(
                target=the_reactor.run,
                kwargs={"installSignalHandlers": False},
                name="twisted-reactor",
                daemon=True,
            )
            _thread.start()
    return the_reactor


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run *fn* in the reactor thread and wait for its result (a Deferred is waited for)."""
    from twisted.internet.threads import blockingCallFromThread

    return blockingCallFromThread(reactor(), fn, *args, **kwargs)


def stop() -> None:
    """Stop the reactor thread if it runs."""
    with _lock:
        if _thread is None:
            return
    from twisted.internet import reactor as the_reactor

    the_reactor.callFromThread(the_reactor.stop)
    _thread.join(10)
