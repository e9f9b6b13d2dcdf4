"""Run a document's Python blocks in one namespace, as a reader pasting them in order would.

Started by the doc-block harness in the session directory, with the sandbox environment. Reads
one JSON request per line on stdin, ``{"file": PATH, "line": N, "code": TEXT}``, runs the code
with its line numbers matching the document (so a traceback names the doc's line), and writes
one JSON result per line to the file descriptor given as argv[1]:
``{"error": TRACEBACK | null, "problems": [...]}``.

Problems are what the block's own thread raised or warned: Python warnings and log records at
WARNING or above. Threads a block starts (a bundle updater, a reporter) run on and may log
later; those lines are in the output, but they do not decide the block's result, since when
they happen depends on timing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import traceback
import warnings
from typing import Any


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == threading.main_thread().ident:
            self.records.append(f"log {record.levelname} {record.name}: {record.getMessage()}")


def _show(caught: list[str], message: Any, category: Any, filename: str, lineno: int,
          file: Any = None, line: str | None = None) -> None:
    text = f"warning {category.__name__}: {message} ({filename}:{lineno})"
    print(text, file=sys.stderr)
    if threading.current_thread() is threading.main_thread():
        caught.append(text)


def main() -> None:
    """Serve requests until stdin closes."""
    results = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    collect = _Collect()
    logging.getLogger().addHandler(logging.StreamHandler())  # background lines stay visible
    logging.getLogger().addHandler(collect)
    for line in sys.stdin:
        request = json.loads(line)
        collect.records.clear()
        caught: list[str] = []
        show = functools.partial(_show, caught)

        error = None
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            try:
                code = compile("\n" * request["line"] + request["code"], request["file"], "exec")
                exec(code, namespace)
            except BaseException:
                error = traceback.format_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        results.write(json.dumps({"error": error, "problems": caught + collect.records}) + "\n")
        results.flush()


if __name__ == "__main__":
    main()
