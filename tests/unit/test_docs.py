"""The documentation holds together: the README's Python compiles and its commands exist, every
page in mkdocs.yml's nav exists, and the site builds with ``mkdocs build --strict``.

The examples of docs/integrations.md and the README's database examples run against a real
database in ``tests/integration/test_use_from_code_docs.py``."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MKDOCS = ROOT / "mkdocs.yml"
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL = {"bash", "sh", "console", "shell"}


def readme_blocks(kinds: set[str]) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [m.group(2) for m in BLOCK.finditer(text) if m.group(1) in kinds]


def nav_pages(nav) -> list[str]:
    """Every page file named in a mkdocs nav (nested sections included)."""
    pages = []
    for entry in nav:
        items = entry.values() if isinstance(entry, dict) else [entry]
        for item in items:
            if isinstance(item, list):
                pages += nav_pages(item)
            elif isinstance(item, str) and not re.match(r"^[a-z]+://", item):
                pages.append(item)
    return pages


def mkdocs_config() -> dict:
    import yaml  # PyYAML: in the [test] extras

    # mkdocs.yml may use !!python/name tags; this file does not, so safe_load is enough.
    return yaml.safe_load(MKDOCS.read_text(encoding="utf-8"))


def test_every_python_block_of_the_readme_compiles():
    blocks = readme_blocks({"python"})
    assert blocks, "README.md has no python example"
    for code in blocks:
        compile(code, "README", "exec")


def test_the_readme_keeps_its_install_and_test_commands():
    """`.ci/run` and the Docker checks rely on these lines of the README."""
    shell = "\n".join(readme_blocks(SHELL))
    assert re.search(r'pip install -e "\.\[test\]"\s+# install$', shell, re.M)
    assert re.search(r"^pytest$", shell, re.M)
    assert "6 GB" in README.read_text(encoding="utf-8")


def readme_commands() -> list[list[str]]:
    """The words after ``clipsql`` of every command in the README's shell blocks."""
    commands = []
    for code in readme_blocks(SHELL):
        for line in code.splitlines():
            line = re.sub(r"^\$\s*", "", line.split("#")[0].strip())
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and words[0] == "clipsql":
                    commands.append(words[1:])
    return commands


def test_every_readme_command_exists():
    import click

    from clipsql.cli import main

    commands = readme_commands()
    assert len({c[0] for c in commands if c}) >= 5, commands
    for words in commands:
        assert words, "a bare `clipsql` in the README"
        group: click.Command = main
        for word in words:
            if not isinstance(group, click.Group) or word.startswith("-"):
                break
            assert word in group.commands, f"README names `clipsql ... {word}`, which does not exist"
            group = group.commands[word]
        assert not isinstance(group, click.Group), f"README names the group {words} without a command"


def test_every_nav_page_exists():
    config = mkdocs_config()
    assert config["theme"]["name"] == "material"
    docs = ROOT / config.get("docs_dir", "docs")
    pages = nav_pages(config["nav"])
    assert "index.md" in pages
    for page in pages:
        assert (docs / page).is_file(), f"mkdocs.yml lists {page}, which is not in {docs}"
    on_disk = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md")}
    assert on_disk <= set(pages), f"pages missing from the nav: {sorted(on_disk - set(pages))}"


def test_the_moved_sections_are_in_the_docs():
    integrations = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    assert "<!-- use-from-code:start -->" in integrations and "<!-- use-from-code:end -->" in integrations
    readme = README.read_text(encoding="utf-8")
    assert "<!-- use-from-code:start -->" not in readme
    assert len(readme.splitlines()) <= 200


def test_the_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install mkdocs-material); "
                    "the site build is not checked")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(MKDOCS),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
