"""How loads and imports write rows: binary COPY into a temporary table, then one upsert.

COPY is the fastest way in, but it cannot update a row whose path is already there; the
temporary table (emptied at each commit) takes the batch, and one
``INSERT ... ON CONFLICT (path, start_s) DO UPDATE`` moves it into ``clipsql.images`` (a
row's key: its path, and for a video moment its start; NULLs equal, migration 0015). The caller
holds the transaction, so a batch is in the table wholly or not at all.

>>> with conn.transaction():                                               # doctest: +SKIP
...     added, total = upsert(conn, ["path", "embedding"], [("a.jpg", HalfVector(v))])
"""

from __future__ import annotations

from clipsql.database.images import WRITTEN
from clipsql.database.queries import SQL


def upsert(conn, columns, rows) -> tuple[int, int]:
    """Write ``rows`` (tuples in ``columns`` order, ``path`` first) into ``clipsql.images``.

    Rows already there get the given columns replaced (others keep their values). Returns
    (rows added, rows written). Runs inside the caller's transaction.
    """
    columns = list(columns)
    conn.execute(SQL["upsert_staging"].format(
        columns=", ".join(f"{c} {t}" for c, t in WRITTEN.items())))
    cols = ", ".join(columns)
    with conn.cursor() as cur, cur.copy(SQL["upsert_copy"].format(columns=cols)) as copy:
        copy.set_types([WRITTEN[c] for c in columns])
        for row in rows:
            copy.write_row(row)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in ("path", "start_s"))
    inserted = conn.execute(SQL["upsert"].format(columns=cols, updates=updates)).fetchall()
    return sum(1 for (new,) in inserted if new), len(inserted)
