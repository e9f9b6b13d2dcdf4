"""`tlspin run` and the TLSPIN_POLICY environment form: real Python programs, loopback servers.

Each program is a stdlib client that knows nothing of tlspin; it trusts the test's bundle, which
holds the attacker's CA too, so only the pins stand between it and a forged leaf.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import tlspin
from tlspin.testing.pki import CA
from tlspin.testing.scenarios import ServerPKI
from tlspin.testing.servers import TLSServer

MakeServer = Callable[..., TLSServer]
HOST = "127.0.0.1"
HOOK_DIR = Path(tlspin.__file__).parent / "_run" / "hook"

CLIENT = """
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /app HTTP/1.1\\r\\nHost: app\\r\\nConnection: close\\r\\n\\r\\n")
        print(type(tls).__name__, tls.recv(4096).split(b"\\r\\n")[0].decode())
"""

# Starts the client with the same interpreter, as programs start helpers.
PARENT = """
import subprocess, sys
sys.exit(subprocess.run([sys.executable, *sys.argv[1:]]).returncode)
"""

MARKER = """
import os, sys
sys.stderr.write("RAN USER CODE\\n")
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLSPIN_", "PYTHONPATH"))}
    env.update(extra)
    return env


def _run(
    command: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else _env(),
        cwd=cwd,
        check=False,
    )


def _tlspin_run(policy: Path | str, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [sys.executable, "-m", "tlspin", "run", "--policy", str(policy), "--", *command],
        env=_env(**env),
    )


def write_files(pki: ServerPKI, directory: Path) -> Path:
    """Write the client scripts and a policy pinning the genuine leaf for 127.0.0.1."""
    (directory / "client.py").write_text(CLIENT)
    (directory / "parent.py").write_text(PARENT)
    (directory / "marker.py").write_text(MARKER)
    (directory / "pins.toml").write_text(
        textwrap.dedent(f"""
        [[rule]]
        hosts = ["{HOST}"]
        pins = ["{pki.leaf_pin}", "{CA.root("backup").pin}"]
        """)
    )
    return directory


@pytest.fixture
def files(pki: ServerPKI, tmp_path: Path) -> Path:
    """The client scripts and a policy pinning the genuine leaf for 127.0.0.1."""
    return write_files(pki, tmp_path)


@pytest.fixture
def forged(pki: ServerPKI, make_tls_server: MakeServer) -> TLSServer:
    """A server for 127.0.0.1 whose leaf comes from the attacker CA the clients trust."""
    return make_tls_server(pki.attacker.issue(HOST))


def _client(files: Path, server: TLSServer, pki: ServerPKI) -> list[str]:
    return [sys.executable, str(files / "client.py"), str(server.port), pki.cafile]


def _refused(proc: subprocess.CompletedProcess[str], server: TLSServer) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Certificate pinning failure" in proc.stderr, proc.stderr
    server.wait_idle()
    assert server.received == b""


# -- the program is pinned -----------------------------------------------------------------------


def test_pinned_program_reaches_the_genuine_server(
    pki: ServerPKI, tls_server: TLSServer, files: Path
) -> None:
    """Under `tlspin run` an unmodified client is pinned and reaches the pinned server."""
    proc = _tlspin_run(files / "pins.toml", *_client(files, tls_server, pki))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["PinnedSSLSocket", "HTTP/1.1", "200", "OK"]
    assert tls_server.requests == ["GET /app HTTP/1.1"]


def test_pinned_program_refuses_a_forged_leaf(
    pki: ServerPKI, forged: TLSServer, files: Path
) -> None:
    """The same program refuses a leaf from a CA it trusts; the server gets 0 bytes."""
    proc = _run(_client(files, forged, pki))
    assert proc.returncode == 0, "without tlspin run the forgery is accepted"
    forged.wait_idle()
    forged.reset()
    _refused(_tlspin_run(files / "pins.toml", *_client(files, forged, pki)), forged)


def test_grandchild_python_inherits_the_policy(
    pki: ServerPKI, forged: TLSServer, files: Path
) -> None:
    """A Python program started by the pinned one is pinned too (it inherits the environment)."""
    proc = _tlspin_run(
        files / "pins.toml",
        sys.executable,
        str(files / "parent.py"),
        *_client(files, forged, pki)[1:],
    )
    _refused(proc, forged)


def test_python_dash_m_module_is_pinned(
    pki: ServerPKI, forged: TLSServer, files: Path, tmp_path: Path
) -> None:
    """`python -m module` works and is pinned; the program's own PYTHONPATH is kept."""
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "appclient.py").write_text(CLIENT)
    proc = _run(
        [
            sys.executable,
            "-m",
            "tlspin",
            "run",
            "--policy",
            str(files / "pins.toml"),
            "--",
            sys.executable,
            "-m",
            "appclient",
            str(forged.port),
            pki.cafile,
        ],
        env=_env(PYTHONPATH=str(modules)),
    )
    _refused(proc, forged)


def test_programs_own_sitecustomize_still_runs(
    pki: ServerPKI, tls_server: TLSServer, files: Path, tmp_path: Path
) -> None:
    """A sitecustomize later on PYTHONPATH runs after tlspin's hook, which keeps the pins."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('TLSPIN_POLICY'): sys.stderr.write('OWN SITECUSTOMIZE\\n')\n"
    )
    proc = _run(
        [
            sys.executable,
            "-m",
            "tlspin",
            "run",
            "--policy",
            str(files / "pins.toml"),
            "--",
            *_client(files, tls_server, pki),
        ],
        env=_env(PYTHONPATH=str(own)),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("OWN SITECUSTOMIZE") == 1  # in the pinned program
    assert proc.stdout.startswith("PinnedSSLSocket")


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def test_venv_with_its_own_sitecustomize(
    pki: ServerPKI, forged: TLSServer, files: Path, tmp_path: Path
) -> None:
    """A fresh virtual environment with its own sitecustomize: both run, the client is pinned."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # tlspin and its dependencies, as if installed in this venv.
    src = str(Path(tlspin.__file__).parent.parent)
    Path(purelib, "deps.pth").write_text(f"{src}\n{_site_packages()}\n")
    Path(purelib, "sitecustomize.py").write_text(
        'import sys; sys.stderr.write("VENV SITECUSTOMIZE\\n")\n'
    )
    proc = _tlspin_run(
        files / "pins.toml", str(python), str(files / "client.py"), str(forged.port), pki.cafile
    )
    assert "VENV SITECUSTOMIZE" in proc.stderr
    _refused(proc, forged)


def test_base_interpreter_runs_usercustomize(
    pki: ServerPKI, tls_server: TLSServer, files: Path, tmp_path: Path
) -> None:
    """A base interpreter imports usercustomize after tlspin's hook; the client is pinned."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "usercustomize.py").write_text('import sys; sys.stderr.write("USERCUSTOMIZE\\n")\n')
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    src = str(Path(tlspin.__file__).parent.parent)
    proc = _run(
        [
            sys.executable,
            "-m",
            "tlspin",
            "run",
            "--policy",
            str(files / "pins.toml"),
            "--",
            str(base),
            str(files / "client.py"),
            str(tls_server.port),
            pki.cafile,
        ],
        env=_env(
            PYTHONPATH=os.pathsep.join([str(user), src, _site_packages()]), PYTHONNOUSERSITE=""
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "USERCUSTOMIZE" in proc.stderr
    assert proc.stdout.startswith("PinnedSSLSocket")


def test_a_program_that_never_imports_ssl_loads_nothing(files: Path) -> None:
    """The policy checked by `tlspin run` is applied at the first `import ssl`: a program that
    never imports it loads no ssl, and of tlspin only its start-up module (os and sys)."""
    check = (
        "import sys; print(sorted(m for m in sys.modules if m == 'ssl' or m.startswith('tlspin')))"
    )
    proc = _tlspin_run(files / "pins.toml", sys.executable, "-c", check)
    assert proc.stdout.strip() == "['tlspin', 'tlspin._startup']", proc.stderr
    after = (
        "import ssl, sys; print(ssl.SSLContext.sslsocket_class.__name__, 'tlspin' in sys.modules)"
    )
    proc = _tlspin_run(files / "pins.toml", sys.executable, "-c", after)
    assert proc.stdout.split() == ["PinnedSSLSocket", "True"], proc.stderr


# -- fail closed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["invalid", "missing", "bad pin", "empty"])
def test_bad_policy_stops_before_the_program(files: Path, problem: str) -> None:
    """An unreadable or invalid policy: exit 2, a clear message, the program never starts."""
    policy = files / "broken.toml"
    if problem == "invalid":
        policy.write_text("this is not = = toml")
    elif problem == "bad pin":
        policy.write_text('[[rule]]\nhosts = ["a.example"]\npins = ["sha256/short", "sha256/x"]\n')
    elif problem == "empty":
        policy.write_text("# no rules\n")
    proc = _tlspin_run(policy, sys.executable, str(files / "marker.py"))
    assert proc.returncode == 2
    assert "RAN USER CODE" not in proc.stderr
    assert proc.stderr.startswith("error: ")
    assert "not starting the program" in proc.stderr
    assert str(policy) in proc.stderr


def _env_form(policy: str, **extra: str) -> dict[str, str]:
    return _env(PYTHONPATH=str(HOOK_DIR), TLSPIN_POLICY=policy, **extra)


@pytest.mark.parametrize(
    "case",
    [
        "invalid file",
        "empty file",
        "missing file",
        "relative path",
        "no policy variable",
        "stale digest",
    ],
)
def test_child_fails_closed_with_status_70(files: Path, case: str) -> None:
    """In the pinned interpreter itself a policy it cannot apply ends it with status 70 before
    any of the program's code runs (an exception would only be printed, and the code would run).
    """
    bad = files / "bad.toml"
    bad.write_text("[[rule]]\nhosts = 3\n")
    empty = files / "empty.toml"
    empty.write_text("")
    env = {
        "invalid file": _env_form(str(bad)),
        "empty file": _env_form(str(empty)),
        "missing file": _env_form(str(files / "absent.toml")),
        "relative path": _env_form("pins.toml"),
        "no policy variable": _env(PYTHONPATH=str(HOOK_DIR)),
        # Validated once, then changed into an invalid file: the digest no longer matches.
        "stale digest": _env_form(str(bad), TLSPIN_POLICY_SHA256=_digest(files / "pins.toml")),
    }[case]
    proc = _run([sys.executable, str(files / "marker.py")], env=env, cwd=files)
    assert proc.returncode == 70, proc.stderr
    assert "RAN USER CODE" not in proc.stderr
    assert proc.stderr.startswith("tlspin: refused to start ")


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("validated", [False, True], ids=["validated-at-start", "deferred"])
def test_interpreter_without_tlspin_fails_closed(files: Path, validated: bool) -> None:
    """An interpreter that cannot import tlspin (a base Python here) refuses to start: 70."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    extra = {"TLSPIN_POLICY_SHA256": _digest(files / "pins.toml")} if validated else {}
    proc = _run(
        [str(base), str(files / "marker.py")], env=_env_form(str(files / "pins.toml"), **extra)
    )
    assert proc.returncode == 70, proc.stderr
    assert "RAN USER CODE" not in proc.stderr
    assert "install tlspin in the environment of that interpreter" in proc.stderr


def _base_python() -> str:
    """The interpreter the test venv was made from: tlspin is not installed for it."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


@pytest.mark.parametrize(
    "flags",
    [
        "venv -S",
        "venv -bS",
        "venv -Wignore -S",
        "base -I",
        "base -E",
        "base -bI",
        "base -Wignore -E",
    ],
)
def test_interpreter_flags_that_skip_the_hook_are_refused(files: Path, flags: str) -> None:
    """`tlspin run -- python -S …`, or `-I`/`-E` for an interpreter without tlspin installed,
    would run unpinned: refused with exit 2 before it starts."""
    which, *options = flags.split()
    python = sys.executable if which == "venv" else _base_python()
    proc = _tlspin_run(files / "pins.toml", python, *options, str(files / "marker.py"))
    assert proc.returncode == 2, proc.stderr
    assert "RAN USER CODE" not in proc.stderr
    assert "skip tlspin's start-up hook" in proc.stderr


def test_environment_form_from_print_env(pki: ServerPKI, forged: TLSServer, files: Path) -> None:
    """`--print-env` prints the variables of the environment form; with them a program is pinned
    without `tlspin run` (a Dockerfile ENV, a systemd EnvironmentFile)."""
    proc = _run(
        [sys.executable, "-m", "tlspin", "run", "--policy", str(files / "pins.toml"), "--print-env"]
    )
    assert proc.returncode == 0, proc.stderr
    variables = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert sorted(variables) == ["PYTHONPATH", "TLSPIN_POLICY", "TLSPIN_POLICY_SHA256"]
    assert variables["TLSPIN_POLICY"] == str(files / "pins.toml")
    _refused(_run(_client(files, forged, pki), env=_env(**variables)), forged)
    hook = _run([sys.executable, "-m", "tlspin", "run", "--hook-dir"])
    assert hook.stdout.strip() == variables["PYTHONPATH"]
    assert sorted(p.name for p in Path(hook.stdout.strip()).iterdir() if p.suffix == ".py") == [
        "sitecustomize.py"
    ]


# -- audit ---------------------------------------------------------------------------------------

AUDITED = "api.run.test"

APP = f"""
import sys, urllib.request
with urllib.request.urlopen("https://{AUDITED}:" + sys.argv[1] + "/app", timeout=10) as r:
    print(r.status, r.read().decode())
"""


@pytest.mark.parametrize("pinned", [True, False], ids=["tlspin-run", "plain"])
def test_audit_grades_the_app_under_tlspin_run(
    pki: ServerPKI, make_tls_server: MakeServer, tmp_path: Path, pinned: bool
) -> None:
    """Issue 14's pair, as its command: `tlspin audit --expect-pinned HOST -- tlspin run
    --policy P -- python app.py` is pinned (exit 0); the same app without `tlspin run` is NOT
    PINNED (exit 1). The app trusts its server's CA (SSL_CERT_FILE), as a deployed one does; the
    audit needs only --resolve to find the loopback server (and --json for this test to read).
    Pinned, the app refuses the forgery, sends its request to the genuine server in the audit's
    control run, and refuses the forgery again: the server gets exactly that one request."""
    origin = make_tls_server(pki.intermediate.issue(AUDITED))
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "pins.toml").write_text(
        f'[[rule]]\nhosts = ["{AUDITED}"]\npins = ["{pki.intermediate_pin}", "{pki.root_pin}"]\n'
    )
    app = [sys.executable, str(tmp_path / "app.py"), str(origin.port)]
    if pinned:
        app = [sys.executable, "-m", "tlspin", "run", "--policy", str(tmp_path / "pins.toml"),
               "--", *app]
    cafile = tmp_path / "origin-ca.pem"
    cafile.write_bytes(pki.root.cert_pem)
    proc = _run(
        [sys.executable, "-m", "tlspin", "audit", "--json", "--expect-pinned", AUDITED,
         "--resolve", f"{AUDITED}=127.0.0.1", "--", *app],
        env=_env(SSL_CERT_FILE=str(cafile)),
    )
    report = json.loads(proc.stdout)
    [entry] = [h for h in report["hosts"] if h["host"] == AUDITED]
    origin.wait_idle()
    if pinned:
        assert proc.returncode == 0, report
        assert entry["verdict"] == "pinned"
        assert entry["requests"] == []
        assert [run["kind"] for run in report["runs"]] == ["forged", "control", "confirmation"]
        assert origin.requests == ["GET /app HTTP/1.1"]
    else:
        assert proc.returncode == 1, report
        assert entry["verdict"] == "not-pinned"
        assert entry["requests"] == ["GET /app HTTP/1.1"]
        assert [run["kind"] for run in report["runs"]] == ["forged"]
