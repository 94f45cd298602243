"""The ``clipsql`` command: a thin layer over the library, one module per command group.

Each command opens the collection, makes one library call and prints the result; library
errors become one-line messages (:func:`clipsql.cli.output.friendly`).

A command's module is imported when that command runs (:data:`MODULES`), so that ``clipsql
load`` does not import what ``caption`` or ``serve`` need; ``--help`` and a mistyped name
import them all.
"""

from __future__ import annotations

import importlib

import click

#: Each command's module in ``clipsql.cli`` (the commands it lists in its ``COMMANDS``).
MODULES = {
    "load": "load", "status": "load",
    "search": "search", "similar": "search", "embed-text": "search", "duplicates": "search",
    "labels": "labels", "classify": "labels", "label-search": "labels", "flag": "labels",
    "import-embeddings": "imports",
    "serve": "serve",
    "db": "database",
    "caption": "captions",
    "ocr": "ocr",
    "reembed": "reembed",
    "cache": "cache",
    "admin": "admin",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`MODULES` on first use; ``commands``
    (every command by name, as in any click group) imports them all."""

    def __init__(self, *args, **kwargs):
        self._loaded: set[str] = set()
        super().__init__(*args, **kwargs)

    @property
    def commands(self) -> dict:
        for module in sorted(set(MODULES.values())):
            self._load(module)
        return self._commands

    @commands.setter
    def commands(self, value) -> None:
        self._commands = value

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            for command in importlib.import_module(f"clipsql.cli.{module}").COMMANDS:
                self._commands[command.name] = command

    def get_command(self, ctx, cmd_name):
        if cmd_name in MODULES:
            self._load(MODULES[cmd_name])
        return self._commands.get(cmd_name)

    def list_commands(self, ctx):
        return sorted(set(MODULES) | set(self._commands))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipsql")
def main():
    """CLIP image search inside PostgreSQL."""


__all__ = ["main"]
