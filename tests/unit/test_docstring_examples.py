"""The `>>>` examples in the docstrings of modules that need no database or weights run."""

import doctest
import importlib

import pytest

# modules whose examples need a server (collection, db, embedded, ...) are shown by the
# integration tests and the README instead
PURE = ["config", "decode", "device", "display", "duplicates", "importer", "labels", "metadata",
        "model", "modelspec", "sql_functions", "textcache", "textfast", "thumbnails"]


@pytest.mark.parametrize("name", PURE)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"clipsql.{name}")
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert attempted, f"clipsql.{name} has no examples left: drop it from PURE"
    assert failed == 0, f"{failed} of {attempted} examples in clipsql.{name} failed (output above)"
