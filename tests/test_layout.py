"""The layout keeps the architecture: the modules at the top of the package never load a tool.

Directly under ``tlspin/`` sit the pinning core and the public entry points; each tool is a
package of its own (``tlspin.cli``, ``tlspin.audit``, ``tlspin.lint``, …), and the plumbing
several tools share is ``tlspin._shared`` (ARCHITECTURE.md has the map). Each check imports a
module in a fresh interpreter and looks at what else got loaded.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tlspin

_PACKAGE = Path(tlspin.__file__).parent
_ENTRIES = list(pkgutil.iter_modules([str(_PACKAGE)]))
# ``python -m tlspin`` would run the command line; _entry is what it calls.
CORE = sorted(m.name for m in _ENTRIES if not m.ispkg and m.name != "__main__")
# Every package is a tool but the integrations, which the core reaches through inject() (the
# process-wide hooks of tlspin.integrations._process): glue between the core and client libraries.
TOOLS = sorted(m.name for m in _ENTRIES if m.ispkg and m.name != "integrations")

_PROBE = """
import importlib, sys
importlib.import_module(sys.argv[1])
tools = set(sys.argv[2].split(","))
print(",".join(sorted(m for m in sys.modules
                      if m.startswith("tlspin.") and m.split(".")[1] in tools)))
"""


def _tools_loaded_by(module: str) -> list[str]:
    """The tool modules a fresh interpreter has loaded after importing *module*."""
    env = {k: v for k, v in os.environ.items() if k != "TLSPIN_POLICY"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, module, ",".join(TOOLS)],
        capture_output=True, text=True, check=True, env=env,
    )
    return [m for m in proc.stdout.strip().split(",") if m]


def test_the_layout_is_what_the_checks_assume() -> None:
    """The discovery below finds the core modules and the tool packages it should."""
    assert {"pins", "policy", "policyfile", "verify", "context", "_startup"} <= set(CORE)
    assert {"audit", "cli", "lint", "preflight", "reporting", "_run", "_shared"} <= set(TOOLS)


@pytest.mark.parametrize("name", CORE)
def test_core_module_loads_no_tool(name: str) -> None:
    """Importing a top-level module loads no tool package (the core never imports them)."""
    assert _tools_loaded_by(f"tlspin.{name}") == []


def test_probe_sees_a_tool_import() -> None:
    """Twin: the probe does report tool modules when they get loaded."""
    assert "tlspin._shared.sender" in _tools_loaded_by("tlspin.reporting")


_LOADED = """
import sys
{code}
print(",".join(sorted(m for m in sys.modules if m.startswith("tlspin."))))
"""


def _tlspin_modules_after(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED.format(code=code)],
        capture_output=True, text=True, check=True,
    )
    return {m for m in proc.stdout.strip().split(",") if m}


def test_import_tlspin_loads_no_submodule() -> None:
    """``import tlspin`` loads nothing else: every public name comes on first use."""
    assert _tlspin_modules_after("import tlspin") == set()


def test_a_public_name_loads_its_module() -> None:
    """Twin: the first use of a public name does load its module."""
    assert "tlspin.policy" in _tlspin_modules_after("import tlspin; tlspin.PinPolicy")


def test_policy_imports_neither_verify_nor_policyfile() -> None:
    """No circle: the check and the policy documents build on the policy module, not the
    reverse; PinPolicy.check, load and loads import them when called."""
    assert _tlspin_modules_after("import tlspin.policy").isdisjoint(
        {"tlspin.verify", "tlspin.policyfile"}
    )
    assert "tlspin.policy" in _tlspin_modules_after("import tlspin.verify")
    assert "tlspin.policy" in _tlspin_modules_after("import tlspin.policyfile")


def test_policy_methods_reach_verify_and_policyfile() -> None:
    """Twin: PinPolicy.loads and PinPolicy.check work from the policy module alone."""
    code = (
        "from tlspin.policy import PinPolicy\n"
        "p = PinPolicy.loads('[[rule]]\\nhosts = [\"a.example\"]\\n"
        "pins = [\"sha256/' + 'A' * 43 + '=\", \"sha256/' + 'B' * 43 + '=\"]\\n')\n"
        "assert p.rules_for('a.example') and p.check('b.example', []).pinned is False\n"
    )
    assert {"tlspin.verify", "tlspin.policyfile"} <= _tlspin_modules_after(code)
