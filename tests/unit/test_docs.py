"""The documentation holds together: the README's Python compiles and its commands exist, every
page is in mkdocs.yml's nav and in the overview's list, the files the docs cite exist, the
schema page names every table the migrations create, the web page's browser recipe waits on
selectors the page has, and the site builds with ``mkdocs build --strict``.

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
DOCS = ROOT / "docs"
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
    assert "7 GB" in README.read_text(encoding="utf-8")   # a fresh .venv: 7.0 GB


def readme_commands() -> list[list[str]]:
    """The words after ``clipsql`` of every command in the README's shell blocks."""
    commands = []
    for code in readme_blocks(SHELL):
        for line in code.splitlines():
            line = re.sub(r"^\$\s*", "", re.sub(r"(^|\s)#.*", "", line).strip())  # a comment
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


def test_the_overview_lists_every_page():
    pages = set(nav_pages(mkdocs_config()["nav"])) - {"index.md"}
    linked = set(re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]*)?\)", (DOCS / "index.md").read_text(encoding="utf-8")))
    on_disk = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert on_disk <= linked, f"docs/index.md does not list: {sorted(on_disk - linked)}"
    assert pages <= linked, f"docs/index.md does not list nav pages: {sorted(pages - linked)}"


#: Paths inside the repository that the docs name, as `clipsql/x.py`, `tests/...`, etc.
CITED = re.compile(r"(?<![\w/$.~-])((?:clipsql|tests|benchmarks|migrations|docker|docs)/[\w./-]*\w)")


def test_every_file_the_docs_cite_exists():
    cited = set()
    for doc in [README, *DOCS.glob("*.md")]:
        text = doc.read_text(encoding="utf-8")
        start = text.find("<!-- cli-reference:start")   # --help text, checked by test_cli_reference
        cited |= {(doc.name, m) for m in CITED.findall(text[:start] if start >= 0 else text)}
    assert len(cited) >= 20, cited
    missing = sorted((doc, path) for doc, path in cited if not (ROOT / path).exists())
    assert not missing, f"the docs cite files that do not exist: {missing}"


def test_every_python_name_the_docs_cite_exists():
    """`clipsql.x.y` in the docs: where `clipsql.x` is Python (not a SQL table or function of
    the clipsql schema), the whole dotted name must resolve."""
    import importlib
    import pkgutil

    import clipsql

    python = {m.name for m in pkgutil.iter_modules(clipsql.__path__)} | set(dir(clipsql))
    bad = []
    for doc in [README, *DOCS.glob("*.md")]:
        for name in set(re.findall(r"`(clipsql(?:\.\w+)+)", doc.read_text(encoding="utf-8"))):
            parts = name.split(".")
            if parts[1] not in python:
                continue   # a table or a function of the clipsql schema
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                try:
                    for attr in parts[i:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    bad.append((doc.name, name))
                break
            else:
                bad.append((doc.name, name))
    assert not bad, f"the docs name Python that does not exist: {sorted(bad)}"


def test_the_internals_page_names_every_table_of_the_migrations():
    made = set()
    for sql in sorted((ROOT / "migrations").glob("[0-9]*.sql")):
        made |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?clipsql\.(\w+)", sql.read_text(encoding="utf-8")))
        made -= set(re.findall(r"DROP TABLE (?:IF EXISTS )?clipsql\.(\w+)", sql.read_text(encoding="utf-8")))
    assert {"images", "model", "captions"} <= made, made
    internals = (DOCS / "internals.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `clipsql\.(\w+)` \|", internals, re.M))
    assert made <= listed, f"docs/internals.md omits the tables {sorted(made - listed)}"
    runner = {"schema_version"}  # made by clipsql.database.migrations, not by a migration file
    assert listed <= made | runner, f"docs/internals.md lists tables no migration makes: {sorted(listed - made - runner)}"
    assert "migrations/schema.sql" in internals
    schema = (ROOT / "migrations" / "schema.sql").read_text(encoding="utf-8")
    generated = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?clipsql\.(\w+)", schema))
    assert generated == listed, f"migrations/schema.sql's tables differ: {sorted(generated ^ listed)}"


def layout_rows() -> dict[str, str]:
    """The package-layout table of docs/internals.md: first cell -> the rest of the row."""
    internals = (DOCS / "internals.md").read_text(encoding="utf-8")
    section = internals[internals.index("## Package layout"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| (`[^|]+`) \| (.*) \|$", section, re.M)}


def test_the_package_layout_names_every_module_and_no_other():
    package = ROOT / "clipsql"
    rows = layout_rows()
    first_cells = " ".join(rows)
    for module in sorted(package.glob("*.py")):
        assert module.name in first_cells, f"docs/internals.md's layout omits clipsql/{module.name}"
    checked = 0
    for sub in sorted(d for d in package.iterdir() if (d / "__init__.py").is_file()):
        row = next((rest for cell, rest in rows.items() if f"`clipsql/{sub.name}/`" in cell), None)
        assert row is not None, f"docs/internals.md's layout has no row for clipsql/{sub.name}/"
        named = set(re.findall(r"`(\w+)` \(", row)) - {"__init__"}
        modules = {m.stem for m in sub.glob("*.py")} - {"__init__"}
        assert named == modules, (f"clipsql/{sub.name}/ in docs/internals.md: missing "
                                  f"{sorted(modules - named)}, gone {sorted(named - modules)}")
        checked += 1
    assert checked >= 7


def test_the_layer_diagram_is_the_import_contract():
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = contract["tool"]["importlinter"]["contracts"][0]["layers"]
    short = [" | ".join(part.strip().removeprefix("clipsql.") for part in layer.split("|"))
             for layer in layers]
    internals = (DOCS / "internals.md").read_text(encoding="utf-8")
    diagram = next(line for line in internals.splitlines() if line.startswith("cli → "))
    assert diagram.split(" → ") == short[:-1], "docs/internals.md's layer diagram is not pyproject's"
    assert set(short[-1].split(" | ")) == {"config", "errors"}


def test_the_browser_recipe_waits_on_what_the_page_has():
    web = (DOCS / "web.md").read_text(encoding="utf-8")
    recipe = web[web.index("### Screenshots and scripts of your own"):]
    code = BLOCK.search(recipe).group(2)
    compile(code, "web.md", "exec")
    static = ROOT / "clipsql" / "web" / "static"
    html = (static / "index.html").read_text(encoding="utf-8")
    script = (static / "app.js").read_text(encoding="utf-8")
    assert 'page.wait_for_selector(\'body[data-ready="1"]\'' in code
    assert re.search(r'dataset\.ready\s*=\s*"1"', script), "app.js no longer sets body[data-ready]"
    assert 'page.wait_for_selector("#grid .card")' in code
    assert 'id="grid"' in html and 'className: "card"' in script
    assert 'id="q"' in html and "#q" in recipe
    # the tests wait the same way
    browser_test = (ROOT / "tests" / "e2e" / "test_browser.py").read_text(encoding="utf-8")
    assert "document.body.dataset.ready === '1'" in browser_test


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
