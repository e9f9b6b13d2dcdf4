"""Every example in README.md and docs/*.md runs, verbatim, on loopback.

Conventions for authors (blocks.py implements them):

* Every fenced block has a language. ``console`` (or ``sh``, ``bash``, ``shell``) blocks run as
  shell commands, ``python`` blocks run as Python, ``toml`` blocks load as a pin policy
  (``PinPolicy.load``). ``text``, ``json`` and the other shown-only languages never run: use
  ``text`` for output.
* A block that cannot run here gets ``<!-- illustrative: REASON -->`` on the line directly
  above its fence; the reason is required and says why.
* ``<!-- file: NAME -->`` above a block writes its text to NAME in the session directory
  instead (an endpoints file, an export), for the blocks after it.
* Console blocks: without ``$ `` prompts every line is a command. With prompts, ``$ `` lines
  are commands, and the lines under one are output the command must print (stdout and stderr
  together; each shown line must match a printed line, in order, where ``…`` matches any text
  and runs of spaces count as one). A trailing backslash continues a command. Every command
  must exit 0; to show a failure, write it as shell (``… || echo "exit $?"``) and show the
  output. Each command runs in its own ``bash -o pipefail -c``, so state carries between
  commands and blocks through files only.
* Long-running commands (``tlspin serve``, ``tlspin monitor --interval``, ``tlspin demo`` and
  ``./scripts/demo`` without ``--once``) start in the background; the block goes on once the
  output shown under them (or their start-up line) appears, and they get SIGINT (Ctrl-C) at
  the end of the block or when the next long-running command starts, and must exit cleanly.
* Python blocks of one document share one interpreter, in order, like a notebook. A block that
  defines ``def test_…(`` runs under pytest instead. A Python block passes when it raises
  nothing and its own thread neither warns nor logs at WARNING or above.

How a block runs: each document is one session. Its blocks run in document order (a test runs
the earlier blocks first when selected alone) in a fresh directory holding the files the docs
assume (world.py: ``pins.toml``/``policy.toml``, ``ca.pem``, ``chain.pem``, ``key.pem``,
``req.csr``, ``new-chain.pem``, ``edges.toml``, ``client.py``, ``app.py``, ``old-bundle.json``,
``passphrase.txt``), with this venv's ``tlspin`` and ``python`` first on PATH, HOME in the
sandbox, and ``SSL_CERT_FILE`` and curl's ``cacert`` naming the harness's CA. In every Python
process, hook/sitecustomize.py resolves the docs' names (api.example.com, pins.example.com,
reports.example.com, ct.example.net, db) to loopback, sends ports 443/8443 to the harness's
HTTPS server (servers.py) and port 8787 to a free port, and refuses any other address; curl
gets the same map through ``connect-to``. The servers use the committed keys of keys/, so the
pins the docs print are the real ones. ``db`` in a PostgreSQL URL is the suite's PostgreSQL.

Each block is its own test, named ``doc:line``; its failure message is the block's run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from docs.blocks import Block, DocFormatError, doc_paths, parse
from docs.session import DocSession
from docs.world import World


def _runnable() -> list[Block]:
    blocks: list[Block] = []
    for doc in doc_paths():
        try:
            blocks += parse(doc)
        except DocFormatError:
            continue  # test_doc_format.py fails for it, with the reason
    return [b for b in blocks if b.action not in ("show", "illustrative")]


RUNNABLE = _runnable()


def _param(block: Block) -> object:
    marks = [pytest.mark.slow]
    if "postgresql://" in block.text:
        marks.append(pytest.mark.postgres)
    return pytest.param(block, id=block.id, marks=marks)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DocSession]]:
    """One session per document, made when its first block runs, closed after the module."""
    opened: dict[str, DocSession] = {}
    yield opened
    for session in opened.values():
        session.close()


@pytest.fixture(scope="module")
def world() -> World:
    """The certificates and files of this run."""
    return World.build()


def _needs_postgres(block: Block) -> None:
    if "postgresql://" in block.text and not os.environ.get("TLSPIN_TEST_PG_URL"):
        if os.environ.get("CI"):
            pytest.fail(f"{block.id} needs PostgreSQL, but TLSPIN_TEST_PG_URL is not set")
        pytest.skip("TLSPIN_TEST_PG_URL is not set (scripts/test starts PostgreSQL)")


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_block_runs_verbatim(block: Block, sessions: dict[str, DocSession], world: World,
                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """The block runs as written (see the module docstring for what that means per language)."""
    _needs_postgres(block)
    session = sessions.get(block.doc)
    if session is None:
        blocks = [b for b in RUNNABLE if b.doc == block.doc]
        root = Path(tmp_path_factory.mktemp("docs"))
        session = sessions[block.doc] = DocSession(block.doc, blocks, root, world)
    result = session.run_through(block)
    print(result.log)  # shown for passing blocks too with pytest -rP
    assert result.ok, f"{block.id} ({block.lang}) did not run as written:\n{result.log}"
