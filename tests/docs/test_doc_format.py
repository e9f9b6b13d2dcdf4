"""The block conventions of tests/docs/blocks.py: every document follows them, and each rule
refuses what breaks it."""

from __future__ import annotations

import re

import pytest

from docs.blocks import Command, DocFormatError, doc_paths, parse


@pytest.mark.parametrize("doc", doc_paths())
def test_document_follows_the_block_conventions(doc: str) -> None:
    """Every block has a known language, and every marker is known and well formed."""
    parse(doc)


def test_markers_and_actions() -> None:
    """Markers directly above a fence set what the harness does with the block."""
    text = """
<!-- illustrative: it installs into the reader's environment -->
```console
pip install thing
```

<!-- file: edges.toml -->
```toml
[[endpoint]]
```

```toml
[[rule]]
```

```python
def test_it(pki):
    pass
```

```python
print("hi")
```

```text
output
```
"""
    actions = [(b.line, b.action) for b in parse("x.md", text)]
    assert actions == [(3, "illustrative"), (8, "file"), (12, "policy"), (16, "pytest"),
                       (21, "python"), (25, "show")]


@pytest.mark.parametrize(("text", "message"), [
    ("```\nls\n```\n", "has no language"),
    ("```cobol\nls\n```\n", "unknown block language 'cobol'"),
    ("<!-- ilustrative: a typo for the marker -->\n```console\nls\n```\n",
     "unknown block marker 'ilustrative'"),
    ("<!-- illustrative: no -->\n```console\nls\n```\n", "needs a reason"),
    ("<!-- illustrative: output never runs anyway -->\n```text\nls\n```\n", "never runs"),
    ("<!-- file: a.toml -->\n<!-- illustrative: both at once is a contradiction -->\n"
     "```toml\nx = 1\n```\n", "either illustrative or a file"),
    ("<!-- file: ../escape -->\n```toml\nx = 1\n```\n", "a plain file name"),
    ("```console\nhello\n$ ls\n```\n", "output before the first '$ ' command"),
    ("```console\nls \\\n```\n", "ends in a backslash"),
    ("```console\nls\n", "never closed"),
], ids=["no-language", "unknown-language", "unknown-marker", "no-reason", "illustrative-text",
        "file-and-illustrative", "bad-file-name", "output-first", "trailing-backslash",
        "unclosed"])
def test_conventions_refuse(text: str, message: str) -> None:
    """Each convention has a refusal that names the line and says what is expected."""
    with pytest.raises(DocFormatError, match=re.escape(message)):
        parse("x.md", text)


def test_a_blank_line_detaches_a_marker() -> None:
    """A marker only counts on the lines directly above the fence."""
    text = "<!-- illustrative: it would install software -->\n\n```console\nls\n```\n"
    assert parse("x.md", text)[0].action == "shell"


def test_console_commands_and_expected_output() -> None:
    """Without prompts every line is a command; with them, other lines are expected output."""
    plain = parse("x.md", "```console\n# a comment\nls -l   # why\necho a \\\n  b\n```\n")[0]
    assert plain.commands() == [Command(3, "ls -l   # why"), Command(4, "echo a \\\n  b")]
    prompted = parse("x.md", "```console\n$ echo 1\n1\n\n$ echo 2 \\\n   3\n2 3\n```\n")[0]
    assert prompted.commands() == [Command(2, "echo 1", ("1",)),
                                   Command(5, "echo 2 \\\n   3", ("2 3",))]
