"""The SQL text the Python code runs, kept in one file of named blocks: ``queries.sql``.

Each block starts with ``-- name: NAME`` and its description (comment lines); the text up
to the next block is the statement. The file is read once, at import, into :data:`SQL`, a
read-only mapping from name to statement (a lookup, not a call). Values are psycopg
``%s`` placeholders, bound by the driver; a few blocks have ``{field}`` slots for what must
be written into the text (an identifier, a dimension, a column list), filled by the caller
with :meth:`str.format` from clipsql's own constants, never from user input. The tables of
clipsql are named here and in the migrations only. Why this shape: docs/internals.md
("Where the SQL text lives").

>>> SQL["image_count"]
'SELECT count(*) FROM clipsql.images'
>>> SQL["reembed_add_column"].format(dim=2, zero="[0,0]")
"ALTER TABLE clipsql.images ADD COLUMN embedding_next halfvec(2) NOT NULL DEFAULT '[0,0]'"
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

#: The file of named blocks, beside this module (in the wheel too: package data).
FILE = Path(__file__).with_name("queries.sql")
_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)[ \t]*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """The blocks of ``text``: name -> statement (its comment lines and trailing ``;``
    dropped, lines joined by newlines, none empty; a name given twice is an error)."""
    names = list(_NAME.finditer(text))
    blocks: dict[str, str] = {}
    for found, following in zip(names, names[1:] + [None]):
        body = text[found.end():following.start() if following else len(text)]
        lines = [line.rstrip() for line in body.splitlines()
                 if line.strip() and not line.lstrip().startswith("--")]
        statement = "\n".join(lines).rstrip(";").rstrip()
        name = found.group(1)
        if name in blocks or not statement:
            raise ValueError(f"{FILE.name}: block {name!r} is {'repeated' if statement else 'empty'}")
        blocks[name] = statement
    return blocks


#: Every block of ``queries.sql`` by name.
SQL = MappingProxyType(parse(FILE.read_text(encoding="utf-8")))
