"""The code's structure, checked: modules with docstrings and of one concept's size, no private names imported
across modules, no library code that exits the process or names CLI flags."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clipsql"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
#: Modules are sized by concept, not cut to a line count; one this long has grown past one
#: concept (a smell to act on, not a target to split under).
MAX_LINES = 800


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_module_is_one_concept_and_says_what_it_is_for(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, (
        f"{rel(path)} is over {MAX_LINES} lines: more than one concept? split it by concept")
    if path.name != "__main__.py":
        assert ast.get_docstring(ast.parse(text)), f"{rel(path)} has no module docstring"


def _clipsql_imports(tree):
    """(module imported, names) for every ``from clipsql... import`` and ``import clipsql...``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clipsql"):
            yield node.module, [a.name for a in node.names], {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("clipsql"):
                    yield a.name, [], {a.asname or a.name.split(".")[0]}


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_private_name_of_another_module_is_used(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = set()
    for module, names, bound in _clipsql_imports(tree):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{rel(path)} imports private {private} from {module}"
        aliases |= bound
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            pytest.fail(f"{rel(path)}:{node.lineno} uses {node.value.id}.{node.attr}")


LIBRARY = [p for p in MODULES if "cli" not in p.relative_to(PACKAGE).parts
           and p.name != "__main__.py"]


@pytest.mark.parametrize("path", LIBRARY, ids=rel)
def test_the_library_never_exits_or_names_cli_flags(path):
    text = path.read_text(encoding="utf-8")
    assert "sys.exit" not in text, f"{rel(path)} calls sys.exit: raise a clipsql error instead"
    tree = ast.parse(text)
    messages = [n.value for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and not (isinstance(n, ast.Expr))]
    docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
    flags = [m for m in messages if m not in docstrings and re.search(r"(^|\s)--[a-z][a-z-]+", m)]
    assert not flags, f"{rel(path)} names CLI flags in messages: {flags}"


def test_every_subpackage_is_a_layer_named_in_the_import_contract():
    import tomllib

    layers = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())[
        "tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    packages = {module_name(p.parent / "__init__.py") for p in PACKAGE.glob("*/__init__.py")}
    modules = {module_name(p) for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert packages | modules == named, (packages | modules) ^ named
