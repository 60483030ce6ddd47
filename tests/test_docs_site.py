"""The documentation site builds with ``mkdocs build --strict``, and covers every command.

mkdocs.yml turns every link, anchor and nav check of mkdocs into a warning, and strict mode
makes a warning fail the build. The other tests check what mkdocs does not: that each
``aioduet`` subcommand has a page under docs/commands/, that each of those pages is in the
nav, and that every image a page shows exists. Each check is a function that is also run
on a broken example, so that the test shows it can fail.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # comes with mkdocs, a test dependency: never skipped

from aioduet._cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMANDS = DOCS / "commands"
TIMEOUT = 120  # seconds; the build takes about one

# ![alt](target "title") and <img src="target">; targets with a scheme are not checked.
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site_dir``, from the config's directory."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(config),
            "--site-dir",
            str(site_dir),
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def load_config(config: Path) -> dict[str, Any]:
    """mkdocs.yml as a dict (plain YAML: the config uses no ``!!python`` tags)."""
    loaded: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    return loaded


def nav_pages(nav: Any) -> Iterator[str]:
    """The page paths (relative to docs/) in an mkdocs ``nav``, at every depth."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for entry in nav:
            yield from nav_pages(entry)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    """The names of the subcommands of ``parser``."""
    names: list[str] = []
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            names.extend(action.choices)
    return names


def image_targets(text: str) -> list[str]:
    """The local image targets of a Markdown page, outside fenced code blocks."""
    targets: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opened = _FENCE.match(line)
        if opened is not None:
            mark = opened[1]
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark) :]:
                fence = None
            continue
        if fence is not None:
            continue
        for found in (*_MARKDOWN_IMAGE.findall(line), *_HTML_IMAGE.findall(line)):
            if "://" not in found and not found.startswith(("data:", "#")):
                targets.append(found.split("#", 1)[0].split("?", 1)[0])
    return targets


def missing_images(docs: Path) -> list[str]:
    """``page: target`` for every image a page under ``docs`` shows that does not exist."""
    missing = []
    for page in sorted(docs.rglob("*.md")):
        for target in image_targets(page.read_text(encoding="utf-8")):
            base = docs if target.startswith("/") else page.parent
            resolved = base / target.lstrip("/")
            if not resolved.is_file():
                missing.append(f"{page.relative_to(docs).as_posix()}: {target}")
    return missing


def test_site_builds_strictly(tmp_path: Path) -> None:
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "commands" / "watch" / "index.html").is_file()


def test_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    (project / "docs" / "index.md").write_text("# Home\n\n[gone](gone.md)\n", encoding="utf-8")
    config = load_config(ROOT / "mkdocs.yml")
    config["nav"] = [{"Home": "index.md"}]
    (project / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    done = build(project / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "gone.md" in done.stdout + done.stderr


def test_every_docs_page_is_in_the_nav() -> None:
    listed = set(nav_pages(load_config(ROOT / "mkdocs.yml")["nav"]))
    pages = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert pages - listed == set()
    assert {page.relative_to(DOCS).as_posix() for page in COMMANDS.glob("*.md")} <= listed
    assert set(nav_pages([{"A": "a.md"}, {"B": [{"C": "b/c.md"}, "d.md"]}])) == {
        "a.md",
        "b/c.md",
        "d.md",
    }


def test_every_command_has_a_page() -> None:
    names = subcommands(build_parser())
    assert {"watch", "scan", "status", "daemon", "doctor", "demo"} <= set(names)
    missing = [name for name in names if not (COMMANDS / f"{name}.md").is_file()]
    assert missing == [], f"no docs/commands/<name>.md for {missing}"
    overview = (COMMANDS / "index.md").read_text(encoding="utf-8")
    unlinked = [name for name in names if f"]({name}.md)" not in overview]
    assert unlinked == [], f"docs/commands/index.md does not link to {unlinked}"


def test_every_image_exists() -> None:
    assert missing_images(DOCS) == []


def test_missing_images_are_found(tmp_path: Path) -> None:
    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "here.png").write_bytes(b"\x89PNG")
    (tmp_path / "commands" / "page.md").write_text(
        "![ok](here.png)\n"
        '![gone](gone.png "title")\n'
        '<img alt="x" src="../img/also-gone.svg">\n'
        "![remote](https://example.org/x.png)\n"
        "```text\n![in a code block](not-checked.png)\n```\n",
        encoding="utf-8",
    )
    assert missing_images(tmp_path) == [
        "commands/page.md: gone.png",
        "commands/page.md: ../img/also-gone.svg",
    ]
