"""The page's filters as one ``WHERE`` fragment with bound parameters.

The user's own free ``WHERE`` text is untrusted: it must pass the allowlisted grammar of
:mod:`clipsql.database.allowlist` (PostgreSQL's parser, before anything reaches the server),
and what runs is the condition as the parser read it, printed back (no comments), in
parentheses on lines of their own. It then runs through the library's read-only guard
(:mod:`clipsql.database.user_sql`) with the rest. The page's own conditions (dates, camera,
GPS, the label subquery) are trusted code with bound parameters.

>>> build_filter(camera="Canon", gps=True)
('camera_make = %s AND latitude IS NOT NULL AND longitude IS NOT NULL', ['Canon'])
>>> build_filter(where="path LIKE '%dog%' AND id % 2 = 0 -- comment")
("(\\npath LIKE '%dog%' AND id %% 2 = 0\\n)", [])
>>> build_filter(where="pg_sleep(1) IS NULL")  # doctest: +ELLIPSIS
Traceback (most recent call last):
clipsql.errors.QueryError: this filter may not use the function pg_sleep; allowed: ...
>>> build_filter(date_to=dt.date.max)  # the end of time: no upper bound at all
(None, [])
"""

from __future__ import annotations

import datetime as dt

from clipsql.database import allowlist, user_sql
from clipsql.errors import QueryError

#: Longest free WHERE fragment accepted from the page (the allowlist's bound).
MAX_WHERE_CHARS = allowlist.MAX_CHARS
LABELS_TABLE = "clipsql.image_labels"


def build_filter(*, where: str | None = None, date_from: dt.date | None = None,
                 date_to: dt.date | None = None, camera: str | None = None,
                 gps: bool | None = None, label: str | None = None) -> tuple[str | None, list]:
    """One WHERE fragment (with ``%s`` placeholders) and its parameters, from the page's filters."""
    parts, params = [], []
    if any("\x00" in (v or "") for v in (where, camera, label)):
        raise QueryError("a filter contains a NUL character")
    if where and where.strip():
        # Untrusted: only the allowlisted grammar, and what runs is what the parser read.
        checked = allowlist.check(where)
        # The box takes no parameters: every % outside literals is a literal percent too
        # (the search's own user_sql.wrap then reads it by the usual rule).
        parts.append("(\n" + user_sql.without_placeholders(checked) + "\n)")
    if date_from is not None:
        parts.append("taken_at >= %s")
        params.append(dt.datetime.combine(date_from, dt.time()))
    if date_to is not None and date_to < dt.date.max:  # inclusive: the whole of that day
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
