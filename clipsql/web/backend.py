"""What the web server does with the database: one shared collection, safely used from threads.

A psycopg connection must not be used by two threads at once, and the model should load
once. So the server keeps one :class:`~clipsql.collection.Collection` (its connection and
its loaded model) behind a lock for searches, plus a second connection behind its own lock
for the quick row look-ups that thumbnails and images need, so that a page full of
thumbnails never waits behind a search.

Filters from the page become one ``WHERE`` fragment with bound parameters; the user's own
free ``WHERE`` text is wrapped in parentheses and newlines (a trailing ``--`` comment cannot
swallow the other filters) and runs inside the library's read-only transaction with all the
rest.

>>> build_filter(camera="Canon", gps=True)
('camera_make = %s AND latitude IS NOT NULL AND longitude IS NOT NULL', ['Canon'])
>>> build_filter(where="path LIKE '%dog%'")
("(\\npath LIKE '%%dog%%'\\n)", [])
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from clipsql.database import binding, images
from clipsql.database import connection as dbmod
from clipsql.errors import QueryError

#: Deepest rank a page may reach (offset + limit): paging re-ranks the top this many.
MAX_RANK = 1000
#: Longest free WHERE fragment accepted from the page.
MAX_WHERE_CHARS = 4000
LABELS_TABLE = "clipsql.image_labels"


def build_filter(*, where: str | None = None, date_from: dt.date | None = None,
                 date_to: dt.date | None = None, camera: str | None = None,
                 gps: bool | None = None, label: str | None = None) -> tuple[str | None, list]:
    """One WHERE fragment (with ``%s`` placeholders) and its parameters, from the page's filters."""
    parts, params = [], []
    if where and where.strip():
        if len(where) > MAX_WHERE_CHARS:
            raise QueryError(f"the WHERE fragment is longer than {MAX_WHERE_CHARS} characters")
        # The free fragment has no parameters of its own: a literal % (LIKE '%x%') stays literal.
        parts.append("(\n" + where.replace("%", "%%") + "\n)")
    if date_from is not None:
        parts.append("taken_at >= %s")
        params.append(dt.datetime.combine(date_from, dt.time()))
    if date_to is not None:  # inclusive: the whole of that day
        parts.append("taken_at < %s")
        params.append(dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time()))
    if camera:
        parts.append("camera_make = %s")
        params.append(camera)
    if gps is True:
        parts.append("latitude IS NOT NULL AND longitude IS NOT NULL")
    elif gps is False:
        parts.append("(latitude IS NULL OR longitude IS NULL)")
    if label:
        parts.append(f"id IN (SELECT id FROM {LABELS_TABLE} WHERE label = %s)")
        params.append(label)
    return (" AND ".join(parts) or None), params


@dataclass
class Row:
    """The columns the server needs to serve one image's file."""

    id: int
    path: str
    sha256: str
    format: str


class Backend:
    """The server's collection, locks and look-ups."""

    def __init__(self, dsn: str | None = None, model: str | None = None,
                 device: str | None = None):
        from clipsql.collection import Collection

        self.dsn = dbmod.resolve_dsn(dsn)
        self.collection = Collection(self.dsn, model=model, device=device)
        self._search_lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self._lookup = dbmod.connect(self.dsn)
        self.warm_up()

    def warm_up(self) -> bool:
        """Load the model now (not on the first query) when the collection has one bound."""
        with self._search_lock:
            if binding.bound_model(self.collection.conn) is None:
                return False
            self.collection.embed_text("warm up")
        return True

    def close(self) -> None:
        self.collection.close()
        self._lookup.close()

    # --- searches (the collection's connection and model) -----------------------------------
    def search(self, text=None, *, image=None, offset=0, limit=40, filters=None,
               min_score=None):
        """Hits ``offset .. offset+limit`` of the ranking, and whether more follow."""
        if offset < 0 or limit < 1 or offset + limit > MAX_RANK:
            raise QueryError(f"offset + limit must stay within 1..{MAX_RANK}")
        where, params = build_filter(**(filters or {}))
        with self._search_lock:
            hits = self.collection.search(text, image=image, where=where, params=params,
                                          limit=offset + limit + 1, min_score=min_score)
        return hits[offset:offset + limit], len(hits) > offset + limit

    def status(self) -> dict:
        with self._search_lock:
            return self.collection.status()

    # --- look-ups (their own connection) -----------------------------------------------------
    def _query(self, sql, params=()):
        with self._lookup_lock:
            if self._lookup.closed or self._lookup.broken:
                self._lookup = dbmod.connect(self.dsn)  # e.g. the server restarted
            return self._lookup.execute(sql, params).fetchall()

    def row(self, image_id: int) -> Row | None:
        """The row with this id, or None: the only way the server finds a file to send."""
        rows = self._query("SELECT id, path, sha256, format FROM clipsql.images WHERE id = %s",
                           (image_id,))
        return Row(*rows[0]) if rows else None

    def image(self, image_id: int) -> dict | None:
        """All of one row's metadata (no embedding), JSON-ready."""
        rows = self._query(f"SELECT {images.select_list(images.DETAILS)} FROM {images.TABLE} "
                           "WHERE id = %s", (image_id,))
        return dict(zip((c.name for c in images.DETAILS), rows[0])) if rows else None

    def labels(self, limit: int = 500) -> list[dict]:
        """Each stored label with how many images carry it, most common first."""
        rows = self._query(
            f"SELECT label, count(DISTINCT id) FROM {LABELS_TABLE} "
            "GROUP BY label ORDER BY 2 DESC, 1 LIMIT %s", (limit,))
        return [{"label": label, "images": n} for label, n in rows]

    def facets(self) -> dict:
        """What the page's filters can offer: cameras, the date range, GPS count, labels."""
        cameras = self._query(
            "SELECT camera_make, count(*) FROM clipsql.images WHERE camera_make IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 200")
        lo, hi, gps, total = self._query(
            "SELECT min(taken_at)::date, max(taken_at)::date, "
            "count(*) FILTER (WHERE latitude IS NOT NULL AND longitude IS NOT NULL), count(*) "
            "FROM clipsql.images")[0]
        return {
            "images": total,
            "cameras": [{"camera_make": c, "images": n} for c, n in cameras],
            "taken_at": {"min": lo, "max": hi},
            "with_gps": gps,
            "labels": self.labels(),
        }
