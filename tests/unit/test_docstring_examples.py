"""The `>>>` examples in the docstrings of every clipsql module run (examples that need a
server or weights are marked ``+SKIP`` and shown by the integration tests and the docs)."""

import doctest
import importlib
import pkgutil

import pytest

import clipsql

MODULES = sorted(m.name for m in pkgutil.walk_packages(clipsql.__path__, "clipsql.")
                 if m.name != "clipsql.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples in {name} failed (output above)"


def test_most_public_modules_show_a_running_example():
    ran = [name for name in MODULES
           if doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS,
                              verbose=False).attempted]
    assert len(ran) >= 15, ran
