"""The places loads were given, resolved: ``clipsql.roots`` (migration 0018).

Each load records the folders (and files named one by one) it walked, resolved
(:attr:`~clipsql.ingest.walk.Found.inside`), and, where it was told to follow links out of
them (``follow_links``), the places those links led to
(:attr:`~clipsql.ingest.walk.Found.followed`). The web server sends a row's file only while
the file's own path, resolved when it is asked for, lies inside one of them
(:func:`clipsql.web.files.resolve_inside`, asked with :data:`HOLDS`): a loaded file later
replaced by a link to a place outside the loaded folders is not sent.

Why a table and not the rows' own paths: a row's path is where the load found the file,
links included (``/photos/cat.png`` may be a link to ``/private/secret.png``), so the
folders of the rows say nothing about where their files really are; the roots, resolved when
the load ran, do. Rows are never pruned: a place once loaded stays one (the server still
sends only files of rows, checked against their hashes).

>>> record(conn, discover(["/photos"]))            # doctest: +SKIP
"""

from __future__ import annotations

from clipsql.database.queries import SQL
from clipsql.ingest.walk import printable

#: ``SELECT`` whether the resolved path ``%(real)s`` is a recorded place or lies under one
#: (queries.sql's ``roots_holds``).
HOLDS = SQL["roots_holds"]


def record(conn, found) -> None:
    """Record the places ``found`` (a walk) stayed inside and the links it followed."""
    rows = {printable(p): None for p in found.inside}
    for link, real in found.followed:
        rows.setdefault(printable(real), printable(link))
    if not rows:
        return
    conn.execute(SQL["roots_record"], (list(rows), list(rows.values())))


def places(conn) -> tuple[str, ...]:
    """Every recorded place: where later reads of the rows' files (OCR, a reembed, the web
    server's renditions) may open a file (:mod:`clipsql.ingest.confine`)."""
    return tuple(p for (p,) in conn.execute(SQL["roots_places"]).fetchall())


def holds(conn, real: str) -> bool:
    """Whether the resolved path ``real`` lies inside a place that was loaded."""
    return bool(conn.execute(HOLDS, {"real": real}).fetchone()[0])
