"""Ranked search over ``clipsql.images``: a query embedding plus an optional SQL filter.

The filter is a user-written ``WHERE`` fragment with ``%s`` placeholders and bound
parameters. It runs in a read-only transaction with a statement timeout, so it can filter
and join but never write.

Plan choice (measured in ``benchmarks/search.py``): with no filter, or a filter the planner
expects to keep many rows, the HNSW index answers, with pgvector 0.8's iterative scan so that
filtered-out rows do not starve the result. When the planner expects few rows (under
``EXACT_ROWS``), an exact scan over just those rows is both faster and exactly right. If an
index scan still comes back short of ``limit``, the exact scan runs as a fallback, so the
full top-k is always returned.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from .db import vector_version
from .errors import QueryError

#: Filters expected to keep at most this many rows are ranked exactly (brute force).
EXACT_ROWS = 20_000
EF_SEARCH = 100
MAX_SCAN_TUPLES = 50_000
STATEMENT_TIMEOUT_MS = 30_000

_META = ("sha256", "bytes", "mtime", "width", "height", "format", "orientation", "taken_at",
         "camera_make", "camera_model", "latitude", "longitude", "added_at")


@dataclass
class Hit:
    """One result: the image row's columns plus ``score`` (cosine similarity, higher is better)."""

    id: int
    path: str
    score: float
    sha256: str
    bytes: int
    mtime: datetime
    width: int
    height: int
    format: str
    orientation: int | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    latitude: float | None
    longitude: float | None
    added_at: datetime

    def to_dict(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


class Results(list):
    """A list of :class:`Hit`, best first, that renders as a thumbnail grid in Jupyter."""

    def to_json(self) -> str:
        return json.dumps([h.to_dict() for h in self], ensure_ascii=False)

    def _repr_html_(self) -> str:
        from .display import results_html

        return results_html(self)


_SELECT = "id, path, 1 - (embedding <=> %s) AS score, " + ", ".join(_META)
assert [f.name for f in fields(Hit)] == ["id", "path", "score", *_META]


def rank(conn, query, *, where=None, params=(), limit=10, min_score=None, exclude_id=None,
         strategy="auto") -> Results:
    """The top ``limit`` rows by cosine similarity to ``query`` (a numpy vector).

    ``strategy`` is ``auto`` (see module docs), ``index`` or ``exact``.
    """
    import psycopg
    from pgvector import HalfVector

    if not isinstance(limit, int) or limit < 1:
        raise QueryError(f"limit must be a positive integer, not {limit!r}")
    if strategy not in ("auto", "index", "exact"):
        raise QueryError(f"unknown strategy {strategy!r}")
    q = HalfVector(query)
    params = list(params or ())
    conditions = []
    if where and where.strip():
        conditions.append(f"(\n{where}\n)")
    if exclude_id is not None:
        conditions.append("id <> %s")
    if min_score is not None:
        conditions.append("embedding <=> %s <= %s")
    where_sql = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    if where and "\x00" in where:
        raise QueryError("the WHERE fragment contains a NUL character")
    filter_params = params + ([exclude_id] if exclude_id is not None else [])
    filter_params += [q, 1 - float(min_score)] if min_score is not None else []
    try:
        # Rolled back, never committed: a fragment such as set_config(..., false) must not
        # leave session settings behind for later queries on this connection.
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            if strategy == "auto":
                strategy = "index" if not conditions else _choose(conn, where_sql, filter_params)
            rows = _run(conn, q, where_sql, filter_params, limit, strategy)
            if strategy == "index" and len(rows) < limit and conditions:
                rows = _run(conn, q, where_sql, filter_params, limit, "exact")
    except psycopg.Error as exc:
        raise QueryError(_describe(exc, where)) from None
    except (IndexError, TypeError) as exc:  # placeholder / parameter count mismatch
        raise QueryError(f"the WHERE fragment and its parameters do not match: {exc}") from None
    return Results(Hit(*r) for r in rows)


def _choose(conn, where_sql, params) -> str:
    plan = conn.execute(
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM clipsql.images {where_sql}", params).fetchone()[0]
    estimated = plan[0]["Plan"]["Plan Rows"]
    return "exact" if estimated <= EXACT_ROWS else "index"


def _run(conn, q, where_sql, params, limit, strategy):
    if strategy == "index":
        conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, max(EF_SEARCH, limit))}")
        if vector_version(conn) >= (0, 8):
            conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        order = "embedding <=> %s"
    else:
        # An expression the HNSW operator class cannot serve: forces an exact sort.
        order = "(embedding <=> %s) + 0, id"
    sql = f"SELECT {_SELECT} FROM clipsql.images {where_sql} ORDER BY {order} LIMIT %s"
    return conn.execute(sql, [q, *params, q, limit]).fetchall()


def _describe(exc, where) -> str:
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag else None) or str(exc).strip().splitlines()[0]
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "25006":
        return f"the WHERE fragment tried to write ({primary}); filters are read-only"
    if sqlstate == "57014":
        return f"the query ran longer than {STATEMENT_TIMEOUT_MS // 1000} s and was cancelled"
    if where:
        return f"bad WHERE fragment {where!r}: {primary}"
    return f"search failed: {primary}"
