"""Ways a program under `tlspin run` (or `TLSPIN_POLICY`) could start unpinned, each performed.

* probing for ``ssl`` (``importlib.util.find_spec``), importing it through a finder placed
  before tlspin's (with no import after it), or taking tlspin's finder off ``sys.meta_path``:
  the lazy hook must still pin the program;
* ``-S``, or ``-I``/``-E`` for an interpreter without tlspin, reached through a shebang line or
  ``env`` rather than the command line: ``tlspin run`` must refuse to start it;
* a launcher that puts its own ``sitecustomize`` first on ``PYTHONPATH`` (as
  ``opentelemetry-instrument`` does): ``tlspin-startup.pth`` in site-packages pins anyway, and
  ``TLSPIN_POLICY`` alone pins an interpreter with tlspin installed.

Each program is a stdlib client that knows nothing of tlspin and trusts the attacker's CA too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

import tlspin
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

from .test_run import CLIENT, _base_python, _env, _refused, _run, _tlspin_run, write_files

MakeServer = Callable[..., TLSServer]


@pytest.fixture
def files(pki: ServerPKI, tmp_path: Path) -> Path:
    """The client scripts of test_run and a policy pinning the genuine leaf for 127.0.0.1."""
    directory = tmp_path / "files"
    directory.mkdir()
    return write_files(pki, directory)

SRC = Path(tlspin.__file__).parent.parent


def _program(path: Path, prelude: str) -> Path:
    path.write_text(prelude + "\n" + CLIENT)
    return path


def _args(server: TLSServer, pki: ServerPKI) -> list[str]:
    return [str(server.port), pki.cafile]


def _reached(proc: subprocess.CompletedProcess[str], server: TLSServer) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["PinnedSSLSocket", "HTTP/1.1", "200", "OK"]
    assert server.requests[-1:] == ["GET /app HTTP/1.1"]


# -- the lazy hook and the first import of ssl --------------------------------------------------

# A sys.meta_path finder placed before tlspin's that loads ssl itself.
_GREEDY_FOR_SSL = (
    "class Greedy:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    '        if name == "ssl":\n'
    "            return importlib.machinery.PathFinder.find_spec(name, path, target)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Greedy())\n"
)

PRELUDES = {
    "find_spec": 'import importlib.util\nassert importlib.util.find_spec("ssl") is not None\n',
    "find_spec-twice": (
        "import importlib.util\n"
        'for _ in range(2):\n    assert importlib.util.find_spec("ssl") is not None\n'
    ),
    # A lazy import: the module runs at its first attribute access, through the found loader.
    "lazy-loader": (
        "import importlib.util, sys\n"
        'spec = importlib.util.find_spec("ssl")\n'
        "spec.loader = importlib.util.LazyLoader(spec.loader)\n"
        "module = importlib.util.module_from_spec(spec)\n"
        'sys.modules["ssl"] = module\n'
        "spec.loader.exec_module(module)\n"
    ),
    # A finder placed before tlspin's that loads ssl itself: pinned at the next import.
    "another-finder": (
        "import importlib.machinery, sys\n"
        + _GREEDY_FOR_SSL
        + "import ssl\n"
        "import colorsys\n"
    ),
    # The same, with every module the client needs loaded beforehand: no import comes after
    # ssl's (it connected unpinned). The audit hook puts tlspin's finder back in front.
    "another-finder-no-later-import": (
        "import encodings.idna, importlib.machinery, socket, sys\n"
        + _GREEDY_FOR_SSL
        + "import ssl\n"
    ),
    # importlib.import_module runs no audited import: pinned at the first socket instead.
    "another-finder-import-module": (
        "import encodings.idna, importlib, importlib.machinery, sys\n"
        "class Greedy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        return importlib.machinery.PathFinder.find_spec(name, path, target)\n"
        "sys.meta_path.insert(0, Greedy())\n"
        'ssl = importlib.import_module("ssl")\n'
    ),
    # A program that rebuilds sys.meta_path without the finders it does not know.
    "finder-taken-off": (
        "import sys\n"
        'sys.meta_path[:] = [f for f in sys.meta_path if "tlspin" not in type(f).__module__]\n'
    ),
}


@pytest.mark.parametrize("prelude", list(PRELUDES))
def test_probing_for_ssl_leaves_the_program_pinned(
    pki: ServerPKI, make_tls_server: MakeServer, files: Path, tmp_path: Path, prelude: str
) -> None:
    """A program that probes for ssl, or imports it past tlspin's finder, still refuses a forged
    leaf: the server gets 0 bytes (the find_spec probe used up the hook: the program ran
    unpinned, exit 0)."""
    forged = make_tls_server(pki.attacker.issue("127.0.0.1"))
    program = _program(tmp_path / "probing.py", PRELUDES[prelude])
    _refused(_tlspin_run(files / "pins.toml", sys.executable, str(program), *_args(forged, pki)),
             forged)  # fmt: skip


@pytest.mark.parametrize("prelude", list(PRELUDES))
def test_probing_programs_reach_the_genuine_server(
    pki: ServerPKI, tls_server: TLSServer, files: Path, tmp_path: Path, prelude: str
) -> None:
    """Twin: the same programs reach the server with the pinned key, through tlspin's class."""
    program = _program(tmp_path / "probing.py", PRELUDES[prelude])
    proc = _tlspin_run(files / "pins.toml", sys.executable, str(program), *_args(tls_server, pki))
    _reached(proc, tls_server)


# -- options that skip the hooks, from a shebang line or env -------------------------------------


def _script(path: Path, shebang: str, body: str) -> Path:
    path.write_text(f"#!{shebang}\n{body}")
    path.chmod(0o755)
    return path


# How the command starts marker.py: (shebang line of a script, or None; the command).
# "{venv}": the test venv's Python (tlspin installed); "{base}": the interpreter it was made
# from (no tlspin); "{script}": the script; "{tmp}": a directory.
SKIPPING = {
    "shebang venv -S": ("{venv} -S", ["{script}"]),
    "shebang base -Es (RHEL style)": ("{base} -Es", ["{script}"]),
    "shebang base -I": ("{base} -I", ["{script}"]),
    "shebang env -S venv -S": ("/usr/bin/env -S {venv} -S", ["{script}"]),
    "shebang env -S base -E": ("/usr/bin/env -S {base} -E", ["{script}"]),
    "env venv -S": (None, ["env", "{venv}", "-S", "{script}"]),
    "env base -E": (None, ["env", "{base}", "-E", "{script}"]),
    "env -i": (None, ["env", "-i", "{venv}", "{script}"]),
    "env -u TLSPIN_POLICY": (None, ["env", "-u", "TLSPIN_POLICY", "{venv}", "{script}"]),
    "env PYTHONPATH= base": (None, ["env", "PYTHONPATH={tmp}", "{base}", "{script}"]),
}


def _command(how: tuple[str | None, list[str]], body: str, tmp_path: Path) -> list[str]:
    shebang, words = how
    names = {"venv": sys.executable, "base": _base_python(), "tmp": str(tmp_path)}
    if shebang is None:
        script = tmp_path / "program.py"
        script.write_text(body)
    else:
        script = _script(tmp_path / "tool", shebang.format(**names), body)
    return [w.format(script=str(script), **names) for w in words]


@pytest.mark.parametrize("how", list(SKIPPING))
def test_options_that_skip_the_hooks_are_refused_wherever_they_come_from(
    files: Path, tmp_path: Path, how: str
) -> None:
    """-S (any interpreter), -I/-E or a PYTHONPATH without the hook (an interpreter without
    tlspin), env -i: from a shebang line or from env, the program would run unpinned, exit 0.
    Refused with exit 2 before it starts."""
    command = _command(SKIPPING[how], (files / "marker.py").read_text(), tmp_path)
    proc = _tlspin_run(files / "pins.toml", *command)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "RAN USER CODE" not in proc.stderr
    assert "not starting" in proc.stderr


IGNORING = {
    "python -I": (None, ["{venv}", "-I", "{script}"]),
    "shebang venv -I": ("{venv} -I", ["{script}"]),
    "shebang env -S venv -E": ("/usr/bin/env -S {venv} -E", ["{script}"]),
    "env venv -E": (None, ["env", "{venv}", "-E", "{script}"]),
}


@pytest.mark.parametrize("how", list(IGNORING))
def test_options_that_ignore_pythonpath_are_pinned_where_tlspin_is_installed(
    pki: ServerPKI, make_tls_server: MakeServer, tls_server: TLSServer, files: Path,
    tmp_path: Path, how: str,
) -> None:
    """Twin: -I and -E for an interpreter with tlspin installed start pinned, through
    tlspin-startup.pth: a forged leaf is refused (0 bytes), the genuine server answers."""
    forged = make_tls_server(pki.attacker.issue("127.0.0.1"))
    command = _command(IGNORING[how], (files / "client.py").read_text(), tmp_path)
    _refused(_tlspin_run(files / "pins.toml", *command, *_args(forged, pki)), forged)
    _reached(_tlspin_run(files / "pins.toml", *command, *_args(tls_server, pki)), tls_server)


# -- a sitecustomize that shadows tlspin's, and the environment form -----------------------------

LAUNCHER = """#!{python}
# What opentelemetry-instrument does: its own sitecustomize first on PYTHONPATH, then exec.
import os, shutil, sys
paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ["PYTHONPATH"] = os.pathsep.join([{boot!r}, *paths])
os.execv(sys.argv[1], sys.argv[1:])
"""


def _launcher(tmp_path: Path) -> Path:
    boot = tmp_path / "instrumentation"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(
        "import sys\nsys.stderr.write('LAUNCHER SITECUSTOMIZE\\n')\n"  # it does not chain
    )
    path = tmp_path / "instrument"
    path.write_text(LAUNCHER.format(python=sys.executable, boot=str(boot)))
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("forged", [True, False], ids=["forged-leaf", "genuine-leaf"])
def test_a_launcher_that_shadows_the_hook_leaves_the_program_pinned(
    pki: ServerPKI, make_tls_server: MakeServer, tls_server: TLSServer, files: Path,
    tmp_path: Path, forged: bool,
) -> None:
    """A launcher putting its own sitecustomize first (tlspin's never runs) still starts a
    pinned program: a forged leaf is refused with 0 bytes (it went through, exit 0); the
    genuine server answers, and the launcher's sitecustomize ran."""
    server = make_tls_server(pki.attacker.issue("127.0.0.1")) if forged else tls_server
    command = [str(_launcher(tmp_path)), sys.executable, str(files / "client.py")]
    proc = _tlspin_run(files / "pins.toml", *command, *_args(server, pki))
    assert "LAUNCHER SITECUSTOMIZE" in proc.stderr
    if forged:
        _refused(proc, server)
    else:
        _reached(proc, server)


@pytest.mark.parametrize("forged", [True, False], ids=["forged-leaf", "genuine-leaf"])
def test_tlspin_policy_alone_pins_an_interpreter_with_tlspin_installed(
    pki: ServerPKI, make_tls_server: MakeServer, tls_server: TLSServer, files: Path,
    forged: bool,
) -> None:
    """The environment form for an image with tlspin installed: TLSPIN_POLICY alone (no
    PYTHONPATH, no digest), even under -I, pins the program at start."""
    server = make_tls_server(pki.attacker.issue("127.0.0.1")) if forged else tls_server
    env = _env(TLSPIN_POLICY=str(files / "pins.toml"))
    proc = _run([sys.executable, "-I", str(files / "client.py"), *_args(server, pki)], env=env)
    if forged:
        _refused(proc, server)
    else:
        _reached(proc, server)


def test_startup_pth_is_installed_and_loads_nothing_when_unset() -> None:
    """tlspin-startup.pth is in this venv's site-packages (hatchling's editable install
    force-includes it, as the wheel does), and with TLSPIN_POLICY unset no tlspin module loads."""
    installed = Path(sysconfig.get_paths()["purelib"], "tlspin-startup.pth")
    assert installed.read_bytes() == (SRC / "tlspin-startup.pth").read_bytes()
    check = "import sys; print(sorted(m for m in sys.modules if m.startswith('tlspin')))"
    proc = _run([sys.executable, "-c", check], env=_env())
    assert proc.stdout.strip() == "[]", proc.stderr
    assert "TLSPIN_POLICY" not in os.environ
