"""Every ```python block in docs/*.md, docs/commands/*.md and README.md runs, as a program of
its own.

Each block is written to a file and run with the interpreter running the tests, in a fresh
working directory, with warnings as errors; a block fails the test by exiting non-zero (an
uncaught exception or a failed ``assert``). Blocks that only show signatures are fenced as
```text and are not run. The examples watch real files on ext4 under /tmp, so these are
kernel tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = frozenset({"python", "py", "python3"})
TIMEOUT = 120  # seconds per block; the examples wait at most 10 s for an item

_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n]*)$")


def doc_files() -> list[Path]:
    """The documents whose examples must run: docs/*.md, docs/commands/*.md (the command
    pages), and README.md if there is one."""
    files = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs" / "commands").glob("*.md"))
    readme = ROOT / "README.md"
    if readme.is_file():
        files.append(readme)
    return files


def python_blocks(text: str) -> list[str]:
    """The code of the fenced blocks whose info string starts with python (CommonMark rules)."""
    blocks: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _OPEN.match(lines[i])
        if opened is None or (opened["fence"][0] == "`" and "`" in opened["info"]):
            i += 1
            continue
        fence, indent = opened["fence"], len(opened["indent"])
        words = opened["info"].split()
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            strip = min(indent, len(line) - len(line.lstrip(" ")))
            body.append(line[strip:])
            i += 1
        i += 1  # the closing fence (or the end of the document)
        if words and words[0].lower() in RUNNABLE:
            blocks.append("\n".join(body) + "\n")
    return blocks


def collect() -> list[Any]:
    """One ``pytest.param`` per runnable block, with an id such as ``docs/api.md-2``."""
    params = []
    for path in doc_files():
        name = path.relative_to(ROOT).as_posix()
        for number, code in enumerate(python_blocks(path.read_text(encoding="utf-8"))):
            params.append(pytest.param(name, number, code, id=f"{name}-{number}"))
    return params


def run_block(code: str, workdir: Path, name: str = "block.py") -> subprocess.CompletedProcess[str]:
    script = workdir / name
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.kernel
@pytest.mark.parametrize(("document", "number", "code"), collect())
def test_example_runs(document: str, number: int, code: str, tmp_path: Path) -> None:
    done = run_block(code, tmp_path, f"{Path(document).stem}_{number}.py")
    assert done.returncode == 0, (
        f"example {number} of {document} exited with {done.returncode}\n"
        f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    )


def test_documents_have_examples() -> None:
    documents = {path.relative_to(ROOT).as_posix() for path in doc_files()}
    assert {"docs/index.md", "docs/concepts.md", "docs/api.md"} <= documents
    assert {"docs/commands/index.md", "docs/commands/watch.md"} <= documents
    for name in ("docs/index.md", "docs/concepts.md", "docs/api.md"):
        assert python_blocks((ROOT / name).read_text(encoding="utf-8")), name


def test_only_python_fences_are_collected() -> None:
    text = (
        "```python\nprint(1)\n```\n"
        "```text\nnot run\n```\n"
        "~~~py title\n  x = 1\n~~~\n"
        "````python\n```\nstill inside\n````\n"
        "  ```python\n  indented = True\n  ```\n"
        "```python\nunclosed\n"
    )
    assert python_blocks(text) == [
        "print(1)\n",
        "  x = 1\n",
        "```\nstill inside\n",
        "indented = True\n",
        "unclosed\n",
    ]
    assert python_blocks("no fences at all\n") == []


def test_failing_block_is_reported(tmp_path: Path) -> None:
    assert run_block("assert 1 + 1 == 2\n", tmp_path).returncode == 0
    assert run_block("assert 1 + 1 == 3\n", tmp_path).returncode != 0
    assert run_block("import warnings\nwarnings.warn('x')\n", tmp_path).returncode != 0
