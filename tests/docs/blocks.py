"""Fenced blocks of the Markdown docs, and what the doc-block harness does with each.

The conventions (also in test_doc_blocks.py's docstring, which is what authors read):

Every fenced block has a language. ``console``/``sh``/``bash``/``shell`` blocks run as shell
commands, ``python`` blocks run as Python, ``toml`` blocks load as a pin policy; ``text``,
``json`` and the other languages in `SHOWN` are only shown.

HTML comments on the lines directly above the opening fence (no blank line between) set
markers, one per comment: ``<!-- illustrative: REASON -->`` keeps a block that would run from
running (the reason is required and says why it cannot run here); ``<!-- file: NAME -->``
writes the block's text to NAME in the session directory instead of running it (an endpoints
file, a crt.sh export…), for later blocks to use. ``<!-- vector: NAME -->`` belongs to
tests/bundles/test_bundle_spec.py. Any other ``<!-- word: … -->`` there is an error.

In a console block without ``$ `` prompts, every line is a command. With prompts, the lines
starting with ``$ `` are commands and the other lines are the output expected from the command
above them (`expected_lines`). A line ending in a backslash continues on the next line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHELL = frozenset({"console", "sh", "bash", "shell"})
PYTHON = frozenset({"python", "py"})
POLICY = frozenset({"toml"})
SHOWN = frozenset({
    "text", "json", "xml", "kotlin", "java", "swift", "javascript", "js", "http", "ini",
    "yaml", "diff", "csv", "html", "plist", "dockerfile",
})
MARKERS = frozenset({"illustrative", "file", "vector"})
MIN_REASON = 15  # characters: a reason says why, not just "skip"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<key>[a-z][a-z-]*):\s*(?P<value>.*?)\s*-->\s*$")


class DocFormatError(ValueError):
    """A block or marker that breaks the conventions; the message names the line."""


@dataclass(frozen=True)
class Command:
    """One shell command of a console block, and the output lines the doc shows for it."""

    line: int
    text: str
    expected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    markers: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``doc:line``: the test id, and where to look."""
        return f"{self.doc}:{self.line}"

    @property
    def action(self) -> str:
        """What the harness does: shell, python, pytest, policy, file, illustrative or show."""
        if "illustrative" in self.markers:
            return "illustrative"
        if "file" in self.markers:
            return "file"
        if self.lang in SHELL:
            return "shell"
        if self.lang in PYTHON:
            return "pytest" if re.search(r"^def test_\w+\(", self.text, re.MULTILINE) else "python"
        if self.lang in POLICY:
            return "policy"
        return "show"

    def commands(self) -> list[Command]:
        """The commands of a shell block (see the module docstring)."""
        lines = self.text.splitlines()
        prompted = any(line.startswith("$ ") for line in lines)
        commands: list[Command] = []
        current: list[str] = []
        start = 0
        expected: list[str] = []

        def flush() -> None:
            if current:
                commands.append(Command(start, "\n".join(current), tuple(expected)))

        continuing = False
        for offset, line in enumerate(lines, start=self.line + 1):
            if continuing:
                current.append(line)
                continuing = line.endswith("\\")
                continue
            if prompted and not line.startswith("$ "):
                if not current:
                    if line.strip():
                        raise DocFormatError(
                            f"{self.doc}:{offset}: output before the first '$ ' command"
                        )
                    continue
                if line.strip():
                    expected.append(line.rstrip())
                continue
            text = line[2:] if prompted else line
            if not prompted and (not text.strip() or text.lstrip().startswith("#")):
                continue
            flush()
            current, start, expected = [text], offset, []
            continuing = text.endswith("\\")
        flush()
        if continuing:
            raise DocFormatError(f"{self.doc}:{self.line}: the last command ends in a backslash")
        return commands


def doc_paths() -> list[str]:
    """README.md and every docs/*.md, relative to the repository root."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    return ["README.md", *docs]


def parse(doc: str, text: str | None = None) -> list[Block]:
    """Every fenced block of *doc*, with its markers.

    Raises:
        DocFormatError: an unclosed fence, a block without a language, an unknown language or
            marker, an illustrative marker without a reason, or contradicting markers.
    """
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines() if text is None \
        else text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        opening = index
        fence, indent = match["fence"], match["indent"]
        lang = match["info"].strip().split()[0].lower() if match["info"].strip() else ""
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = lines[index].strip()
            if closing.startswith(fence[0] * len(fence)) and set(closing) == {fence[0]}:
                break
            body.append(lines[index][len(indent):] if lines[index].startswith(indent) else
                        lines[index])
            index += 1
        else:
            raise DocFormatError(f"{doc}:{opening + 1}: the block opened here is never closed")
        index += 1
        block = Block(doc, opening + 1, lang, "\n".join(body) + "\n",
                      _markers(doc, lines, opening))
        _check(block)
        blocks.append(block)
    return blocks


def _markers(doc: str, lines: list[str], opening: int) -> dict[str, str]:
    markers: dict[str, str] = {}
    above = opening - 1
    while above >= 0 and lines[above].lstrip().startswith("<!--"):
        match = _MARKER.match(lines[above])
        if match is not None:
            key = match["key"]
            if key not in MARKERS:
                raise DocFormatError(
                    f"{doc}:{above + 1}: unknown block marker '{key}'; expected one of "
                    f"{sorted(MARKERS)}"
                )
            if key in markers:
                raise DocFormatError(f"{doc}:{above + 1}: a second '{key}' marker for one block")
            markers[key] = match["value"]
        above -= 1
    return markers


def _check(block: Block) -> None:
    where = block.id
    if not block.lang:
        raise DocFormatError(
            f"{where}: the block has no language; use console/python/toml for a block that runs, "
            "text for output"
        )
    known = SHELL | PYTHON | POLICY | SHOWN
    if block.lang not in known:
        raise DocFormatError(
            f"{where}: unknown block language '{block.lang}'; expected one of {sorted(known)} "
            "(add a shown-only language to SHOWN in tests/docs/blocks.py)"
        )
    markers = block.markers
    if "illustrative" in markers:
        if len(markers["illustrative"]) < MIN_REASON:
            raise DocFormatError(
                f"{where}: '<!-- illustrative: REASON -->' needs a reason that says why the "
                f"block cannot run (at least {MIN_REASON} characters), found "
                f"{markers['illustrative']!r}"
            )
        if block.lang in SHOWN:
            raise DocFormatError(f"{where}: a '{block.lang}' block never runs; drop the "
                                 "illustrative marker")
        if "file" in markers:
            raise DocFormatError(f"{where}: a block is either illustrative or a file, not both")
    if "file" in markers:
        name = markers["file"]
        if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
            raise DocFormatError(f"{where}: '<!-- file: NAME -->' takes a plain file name, "
                                 f"found {name!r}")
    if block.action == "shell":
        block.commands()


def all_blocks() -> Iterator[Block]:
    """The blocks of every document, in order."""
    for doc in doc_paths():
        yield from parse(doc)
