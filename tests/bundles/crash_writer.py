"""Helper process for the crash-safety test (not a test module).

Reads ``fork`` lines on stdin. For each, it forks a child that saves two bundles into the store
alternately, forever, and prints the child's pid; the test SIGKILLs the child at a random moment,
and this process reaps it and prints ``reaped``. Forking from one warm process keeps the 200+
kills fast: no interpreter start-up or imports per kill.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tlspin.bundles import BundleStore, parse_document


def main() -> None:
    store = BundleStore(sys.argv[1])
    first = parse_document(Path(sys.argv[2]).read_bytes())
    second = parse_document(Path(sys.argv[3]).read_bytes())
    for line in sys.stdin:
        if line.strip() != "fork":
            break
        pid = os.fork()
        if pid == 0:
            try:
                while True:
                    store.save(second, previous=first)
                    store.save(first, previous=second)
            finally:
                os._exit(1)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os.waitpid(pid, 0)
        sys.stdout.write("reaped\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
