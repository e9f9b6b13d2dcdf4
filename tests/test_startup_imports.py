"""What tlspin imports on its start-up paths, and the shortcuts that keep heavy modules out.

``bench/bench_run.py`` and ``bench/bench_startup.py`` time these paths; these tests only check
which modules get loaded (no timing), and that each shortcut answers exactly as the module it
avoids would.
"""

from __future__ import annotations

import ast
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tlspin import PinPolicy, PolicyError, _run
from tlspin.hosts import _canonical_ip
from tlspin.policyfile import _path
from tlspin.testing.pki import CA

# Never needed to pin a process by a TOML policy naming hosts (not addresses).
_HEAVY = {
    "click",
    "cryptography",
    "idna",
    "importlib.abc",
    "importlib.resources",
    "ipaddress",
    "json",
    "pathlib",
    "publicsuffixlist",
    "shutil",
    "tempfile",
}
_MODULES = "import sys; print(sorted(sys.modules))"
_PINNED = (
    "from tlspin.injection import injected_policy; p = injected_policy(); "
    "print([h.text for r in p.rules for h in r.hosts])"
)


def _write_policy(path: Path, host: str) -> Path:
    pins = f'"{CA.root("a").pin}", "{CA.root("b").pin}"'
    if path.suffix == ".json":
        path.write_text(f'{{"rule": [{{"hosts": ["{host}"], "pins": [{pins}]}}]}}')
    else:
        path.write_text(f'[[rule]]\nhosts = ["{host}"]\npins = [{pins}]\n')
    return path


def _child(code: str, env: dict[str, str]) -> list[str]:
    """Run ``python -c code`` and return its output lines."""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TLSPIN_", "PYTHON"))}


def test_pinned_interpreter_loads_nothing_heavy(tmp_path: Path) -> None:
    """Under ``tlspin run`` (a TOML policy naming hosts), a program that imports ssl is pinned
    without pathlib, json, ipaddress, importlib.abc, click or cryptography being loaded."""
    policy = _write_policy(tmp_path / "pins.toml", "api.example.com")
    path, raw, _ = _run.read_policy(policy)
    env = _run.environment(path, raw, _plain_env())
    modules, hosts = _child(f"import ssl; {_MODULES}; {_PINNED}", env)
    assert hosts == "['api.example.com']"
    assert _HEAVY.isdisjoint(ast.literal_eval(modules))


def test_pinned_interpreter_loads_what_its_policy_needs(tmp_path: Path) -> None:
    """Twin: a JSON policy pinning an IP address gets json and ipaddress, and is applied."""
    policy = _write_policy(tmp_path / "pins.json", "127.0.0.1")
    path, raw, _ = _run.read_policy(policy)
    env = _run.environment(path, raw, _plain_env())
    modules, hosts = _child(f"import ssl; {_MODULES}; {_PINNED}", env)
    assert hosts == "['127.0.0.1']"
    assert {"json", "ipaddress"} <= set(ast.literal_eval(modules))


def test_loading_a_policy_needs_no_ssl_module(tmp_path: Path) -> None:
    """``PinPolicy.load`` by a string path imports neither ssl nor pathlib; the error classes
    are still ssl's."""
    policy = _write_policy(tmp_path / "pins.toml", "api.example.com")
    code = (
        f"import tlspin; p = tlspin.PinPolicy.load({str(policy)!r}); {_MODULES}; "
        "import ssl; print(issubclass(tlspin.PinMismatchError, ssl.SSLCertVerificationError))"
    )
    modules, subclass = _child(code, _plain_env())
    loaded = set(ast.literal_eval(modules))
    assert "tlspin.policy" in loaded
    assert loaded.isdisjoint({"ssl", "socket", "pathlib", "json"} | _HEAVY)
    assert subclass == "True"


@given(st.text(alphabet="/.aJjSsOoNn \\x", max_size=16))
def test_policy_path_names_and_formats_as_pathlib_does(text: str) -> None:
    """The shortcut for a policy's shown path and format agrees with pathlib on any path."""
    path = Path(text)
    assert _path(text) == (str(path), path.suffix.lower() == ".json")
    assert _path(path) == (str(path), path.suffix.lower() == ".json")


@pytest.mark.parametrize(
    "spelling", ["{d}/pins.json", "{d}//pins.json", "{d}/./pins.json", "{d}/pins.json/"]
)
def test_policy_files_load_by_any_spelling_of_their_path(tmp_path: Path, spelling: str) -> None:
    """Every spelling of a path reads the file as Path reads it, and errors name it as Path
    writes it; an unreadable one is refused with that name."""
    _write_policy(tmp_path / "pins.json", "api.example.com")
    text = spelling.format(d=tmp_path)
    assert PinPolicy.load(text) == PinPolicy.load(tmp_path / "pins.json")
    (tmp_path / "pins.json").write_text("{")
    with pytest.raises(PolicyError, match=f"^{tmp_path}/pins.json: line 1: invalid JSON"):
        PinPolicy.load(text)
    (tmp_path / "pins.json").unlink()
    with pytest.raises(PolicyError, match=f"^cannot read policy file {tmp_path}/pins.json: "):
        PinPolicy.load(text)


def _ipaddress_says(text: str) -> bool:
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(candidate.partition("%")[0])
    except ValueError:
        return False
    return True


@given(
    st.one_of(
        st.text(alphabet="0123456789.:abcdefxX%[] \u0661\uff10\uff0e", max_size=16),
        st.ip_addresses().map(str),
    )
)
def test_ip_literals_are_told_from_names_as_ipaddress_tells_them(text: str) -> None:
    """The shortcut that spares names the ipaddress module calls nothing else a name."""
    try:
        canonical = _canonical_ip(text)
    except PolicyError:
        canonical = "refused"  # an address with a malformed zone ID
    assert (canonical is not None) == _ipaddress_says(text)
