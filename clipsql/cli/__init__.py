"""The ``clipsql`` command: a thin layer over the library, one module per command group.

Each command opens the collection, makes one library call and prints the result; library
errors become one-line messages (:func:`clipsql.cli.output.friendly`).
"""

from __future__ import annotations

import click

from clipsql.cli import (
    admin,
    cache,
    captions,
    database,
    imports,
    labels,
    load,
    ocr,
    reembed,
    search,
    serve,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipsql")
def main():
    """CLIP image search inside PostgreSQL."""


for _module in (load, search, labels, imports, serve, database, captions, ocr, reembed, cache, admin):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
