"""The SQL text of the Python code lives in clipsql/database/queries.sql (issue 29): every
block is used, every block named in the code exists, and no module writes SQL naming one of
clipsql's tables in a string of its own."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from clipsql.database import queries

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clipsql"
_KEYWORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|ALTER|LOCK|TRUNCATE|CREATE|DROP|"
                       r"FROM|JOIN|ANALYZE|INTO)\b")


def _tables() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted((ROOT / "migrations").glob("0*.sql")))
    return set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?clipsql\.(\w+)", text))


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def sql_with_tables(path: Path, tables: set[str]) -> list[str]:
    """The strings of ``path`` (docstrings left out) that are SQL naming one of ``tables``."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    named = re.compile(r"\bclipsql\.(" + "|".join(sorted(tables)) + r")\b")
    strings = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and id(node) not in docs]
    code = [re.sub(r"(?m)^\s*--.*$", "", s) for s in strings]  # SQL comments are not SQL
    return [s for s, c in zip(strings, code) if named.search(c) and _KEYWORDS.search(c)]


def test_no_module_writes_sql_naming_clipsql_tables():
    tables = _tables()
    assert {"images", "model", "text_embeddings", "reembed", "captions"} <= tables
    found = {str(p.relative_to(ROOT)): sql_with_tables(p, tables)
             for p in sorted(PACKAGE.rglob("*.py"))}
    assert not {p: s for p, s in found.items() if s}, \
        "move this SQL text to clipsql/database/queries.sql"


def _used_names() -> set[str]:
    return {m for p in PACKAGE.rglob("*.py")
            for m in re.findall(r"""\bSQL\[["'](\w+)["']\]""", p.read_text())}


def test_every_block_is_used_and_every_name_is_a_block():
    used = _used_names()
    assert sorted(used - set(queries.SQL)) == []
    assert sorted(set(queries.SQL) - used) == []


def test_blocks_name_tables_that_the_migrations_make():
    tables = _tables()
    for name, sql in queries.SQL.items():
        for table in re.findall(r"\bclipsql\.(\w+)\b(?!\s*\()", sql):
            assert table in tables | {"schema_version"}, (name, table)


def test_fields_are_plain_names():
    for name, sql in queries.SQL.items():
        for _, field, spec, conversion in string.Formatter().parse(sql):
            if field is not None and "'{}'" not in sql:
                assert field.isidentifier() and not spec and not conversion, (name, field)


def test_parse_rules():
    assert queries.parse("-- name: a\n-- about a\nSELECT 1;\n\n-- name: b\nSELECT\n  2;\n") \
        == {"a": "SELECT 1", "b": "SELECT\n  2"}
    with pytest.raises(ValueError, match="repeated"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match="empty"):
        queries.parse("-- name: a\n-- nothing\n")


def test_the_sql_file_is_package_data():
    """hatchling puts every file of the package in the wheel: the file must sit inside it
    and be kept by git (no ignore rule)."""
    assert queries.FILE.parent == PACKAGE / "database"
    ignores = (ROOT / ".gitignore").read_text() if (ROOT / ".gitignore").exists() else ""
    assert "*.sql" not in ignores.split()
