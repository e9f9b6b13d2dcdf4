"""Check tlspin's built distributions and an installed wheel (run by scripts/check-package).

    python scripts/package_contents.py dist DIST_DIR      # the sdist and the wheel in DIST_DIR
    python scripts/package_contents.py installed          # the tlspin this interpreter imports

``dist`` compares the files of the wheel (which ``python -m build`` built from the sdist, so a
complete wheel also proves the sdist holds what building needs) with the package's source
files, every one of them: modules, Alembic migrations, templates, static files, ``py.typed``.
It also compares the wheel's metadata (extras, console scripts, entry points) with
pyproject.toml, and checks that the sdist carries the files a rebuild reads.

``installed`` runs inside a fresh venv holding only the wheel: tlspin must come from that venv
(not from a checkout), with ``py.typed``, its pytest plugin's entry point, its migrations and
templates that Jinja can compile, and ``tlspin-startup.pth`` in site-packages: an interpreter
started with ``-I`` and ``TLSPIN_POLICY`` alone must come up pinned, and one without it must
not load tlspin at all. (The editable install of the test venvs gets the same file: hatchling
force-includes it there too, and tests/cli/test_run.py relies on it.)

Exit status 0 when everything is in place, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from configparser import ConfigParser
from pathlib import Path, PurePosixPath
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tlspin"
# Files a rebuild from the sdist reads besides the package itself.
SDIST_NEEDS = ("pyproject.toml", "README.md", "src/tlspin-startup.pth")
# Files the wheel installs next to the package, in site-packages (force-include), and where
# their source lives: the start-up hook that pins an interpreter when TLSPIN_POLICY is set.
ROOT_FILES = {"tlspin-startup.pth": "src/tlspin-startup.pth"}


def source_files() -> set[str]:
    """The package's files, relative to src/, as git sees them (tracked or untracked, not
    ignored: what hatchling packages); a plain walk outside a git checkout."""
    src = ROOT / "src"
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "--",
             f"src/{PACKAGE}"],
            capture_output=True, text=True, check=True,
        ).stdout
        names = {line[len("src/"):] for line in out.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        names = {
            path.relative_to(src).as_posix()
            for path in (src / PACKAGE).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
    # A file deleted in the work tree but still tracked is not part of the package any more.
    return {n for n in names if (src / n).is_file() and not n.endswith((".pyc", ".pyo"))}


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        sys.exit(f"error: expected one {pattern} in {dist}, found {[p.name for p in found]}")
    return found[0]


def _entry_points(text: str) -> dict[str, dict[str, str]]:
    parser = ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep names' case
    parser.read_string(text)
    return {section: {k: v.strip() for k, v in parser[section].items()}
            for section in parser.sections()}


def check_wheel(wheel: Path, expected: set[str], project: dict[str, Any]) -> list[str]:
    """Problems with the wheel's files and metadata."""
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
        if len(dist_info) != 1:
            return [f"{wheel.name}: expected one .dist-info directory, found {sorted(dist_info)}"]
        info = dist_info.pop()
        packaged = {n for n in names if n.startswith(f"{PACKAGE}/") and not n.endswith("/")}
        strays = names - packaged - set(ROOT_FILES) - {
            n for n in names if n.startswith(f"{info}/")}
        for name, source in ROOT_FILES.items():
            if name not in names:
                problems.append(f"{wheel.name} lacks {name} (from {source}, force-include in "
                                "pyproject.toml): TLSPIN_POLICY alone would pin nothing")
            elif zf.read(name) != (ROOT / source).read_bytes():
                problems.append(f"{wheel.name}: {name} differs from {source}")
        metadata = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        entry_text = zf.read(f"{info}/entry_points.txt").decode() if (
            f"{info}/entry_points.txt" in names) else ""
    for name in sorted(expected - packaged):
        problems.append(f"{wheel.name} lacks src/{name}: the installed package would miss it "
                        "(see [tool.hatch.build] in pyproject.toml)")
    for name in sorted(packaged - expected):
        problems.append(f"{wheel.name} holds {name}, which is not a source file of the package")
    for name in sorted(strays):
        problems.append(f"{wheel.name} holds {name} outside the {PACKAGE} package")
    want_extras = sorted(project.get("optional-dependencies", {}))
    have_extras = sorted(metadata.get_all("Provides-Extra") or [])
    if have_extras != want_extras:
        problems.append(
            f"{wheel.name}: extras {have_extras}, pyproject.toml declares {want_extras}"
        )
    if metadata["Version"] != project["version"]:
        problems.append(f"{wheel.name}: version {metadata['Version']}, pyproject.toml says "
                        f"{project['version']}")
    want_eps: dict[str, dict[str, str]] = {}
    if project.get("scripts"):
        want_eps["console_scripts"] = dict(project["scripts"])
    for group, entries in project.get("entry-points", {}).items():
        want_eps[group] = dict(entries)
    have_eps = _entry_points(entry_text)
    if have_eps != want_eps:
        problems.append(
            f"{wheel.name}: entry points {have_eps}, pyproject.toml declares {want_eps}"
        )
    return problems


def check_sdist(sdist: Path, expected: set[str]) -> list[str]:
    """Problems with the sdist: it must carry the package and the files a rebuild reads."""
    with tarfile.open(sdist) as tf:
        members = {m.name for m in tf.getmembers() if m.isfile()}
    tops = {PurePosixPath(m).parts[0] for m in members}
    if len(tops) != 1:
        return [f"{sdist.name}: expected one top directory, found {sorted(tops)}"]
    top = tops.pop()
    inside = {m[len(top) + 1:] for m in members}
    needed = {f"src/{n}" for n in expected} | set(SDIST_NEEDS)
    return [f"{sdist.name} lacks {name}: a wheel built from the sdist could not be complete"
            for name in sorted(needed - inside)]


def check_dist(dist: Path) -> list[str]:
    """Problems with the wheel and sdist in *dist*."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    expected = source_files()
    if f"{PACKAGE}/py.typed" not in expected:
        return [f"src/{PACKAGE}/py.typed is missing from the source tree (the package is typed)"]
    wheel = _one(dist, f"{PACKAGE}-*.whl")
    sdist = _one(dist, f"{PACKAGE}-*.tar.gz")
    return check_wheel(wheel, expected, project) + check_sdist(sdist, expected)


def check_installed() -> list[str]:
    """Problems with the tlspin this interpreter imports (run inside the wheel's venv)."""
    problems: list[str] = []
    import tlspin

    where = Path(tlspin.__file__).resolve()
    if Path(sys.prefix).resolve() not in where.parents:
        problems.append(f"tlspin was imported from {where}, not from the venv at {sys.prefix}")
    if ROOT in where.parents:
        problems.append(f"tlspin was imported from the checkout ({where}), not from the wheel")
    package = where.parent
    if not (package / "py.typed").is_file():
        problems.append(f"{package}/py.typed is missing: type checkers would ignore tlspin's types")
    plugins = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == PACKAGE]
    if [ep.value for ep in plugins] != ["tlspin.testing.plugin"]:
        problems.append(f"pytest11 entry point: expected tlspin = tlspin.testing.plugin, found "
                        f"{[f'{ep.name} = {ep.value}' for ep in plugins]}")
    elif importlib.util.find_spec(plugins[0].value) is None:
        problems.append(f"the pytest plugin module {plugins[0].value} is not installed")
    problems += check_startup_hook()
    versions = package / "collector" / "migrations" / "versions"
    if not sorted(versions.glob("v*.py")):
        problems.append(f"no Alembic migrations under {versions}")
    try:
        from tlspin.collector import dashboard
    except ImportError as exc:
        problems.append(f"tlspin.collector.dashboard does not import: {exc}")
    else:
        templates = sorted(p.name for p in (package / "collector" / "templates").glob("*.html"))
        if not templates:
            problems.append("the collector's templates are missing")
        for name in templates:
            try:
                dashboard._env.get_template(name)
            except Exception as exc:  # noqa: BLE001 - any template error is a packaging problem
                problems.append(f"template {name} does not compile: {type(exc).__name__}: {exc}")
    return problems


# What a pinned interpreter reports: the class its contexts wrap sockets with, and whether it
# loaded tlspin at all.
_PROBE = (
    "import sys; loaded = 'tlspin' in sys.modules; import ssl; "
    "print(ssl.SSLContext().sslsocket_class.__name__, loaded)"
)


def check_startup_hook() -> list[str]:
    """Problems with tlspin-startup.pth in this venv: TLSPIN_POLICY alone, with -I (no
    PYTHONPATH, no sitecustomize of ours), must pin a new interpreter; without it, nothing of
    tlspin is loaded."""
    import base64
    import hashlib
    import os
    import sysconfig
    import tempfile

    site = Path(sysconfig.get_paths()["purelib"])
    problems: list[str] = []
    for name, source in ROOT_FILES.items():
        installed = site / name
        if not installed.is_file():
            problems.append(f"{installed} is not installed (from {source})")
        elif installed.read_bytes() != (ROOT / source).read_bytes():
            problems.append(f"{installed} differs from {source}")
    pins = ", ".join(
        '"sha256/' + base64.b64encode(hashlib.sha256(seed).digest()).decode() + '"'
        for seed in (b"one", b"two")
    )
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "pins.toml")
        policy.write_text(f'[[rule]]\nhosts = ["api.example.com"]\npins = [{pins}]\n')
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TLSPIN_", "PYTHON"))}
        for env, want in (
            ({**base, "TLSPIN_POLICY": str(policy)}, "PinnedSSLSocket True"),
            (base, "SSLSocket False"),
        ):
            out = subprocess.run(
                [sys.executable, "-I", "-c", _PROBE], env=env, capture_output=True, text=True,
                check=False, cwd=tmp,
            )
            got = out.stdout.strip()
            if out.returncode != 0 or got != want:
                problems.append(
                    f"python -I with TLSPIN_POLICY {'set' if 'TLSPIN_POLICY' in env else 'unset'}"
                    f": expected {want!r}, found {got!r} (exit {out.returncode}; "
                    f"{out.stderr.strip()[-300:]})"
                )
    return problems


def main(argv: list[str]) -> int:
    """Run the check named by argv[0]; print one line per problem."""
    if argv[:1] == ["dist"] and len(argv) == 2:
        problems = check_dist(Path(argv[1]))
    elif argv == ["installed"]:
        problems = check_installed()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for line in problems:
        print(f"package problem: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
