"""Ranked search over ``clipsql.images``: a query embedding plus an optional SQL filter.

The filter is a user-written ``WHERE`` fragment with ``%s`` placeholders and bound
parameters. It runs in a read-only transaction with a statement timeout, so it can filter
and join but never write.

Plan choice per query (measured in ``benchmarks/search.py``; README "Search performance"):

* No filter: the HNSW index (``hnsw.ef_search = EF_SEARCH``).
* A filter: the planner's row estimate ``r`` for it (``EXPLAIN``, no execution) is weighed
  against the table's size ``N``. An iterative HNSW scan (pgvector 0.8) visits about
  ``ef_search / selectivity = ef_search * N / r`` rows to find ``limit`` that pass; an exact
  scan reads the ``r`` rows the filter keeps (through the filter's own indexes) and sorts
  them. The exact scan is chosen when ``r < sqrt(EXACT_FACTOR * ef_search * N)`` (28k rows
  at 1M, 8.9k at 100k: a bias towards exact, which never loses recall, where the costs are
  close; iterative-scan recall falls as the filter gets more selective). ``EXACT_ROWS_MIN``
  rows or fewer always go exact. Filtered index scans use ``EF_SEARCH_FILTERED``.
* An index scan that comes back short of ``limit`` (the filter is more selective than
  estimated and ``hnsw.max_scan_tuples`` ran out) is completed by the exact scan, so the full
  top-k is always returned.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from .db import vector_version
from .errors import QueryError

#: Filters the planner expects to keep at most this many rows are always ranked exactly.
EXACT_ROWS_MIN = 2_000
#: Exact when estimated rows < sqrt(EXACT_FACTOR * ef_search * table rows) (see module docs).
EXACT_FACTOR = 4.0
#: HNSW candidate list: unfiltered queries, and filtered ones (iterative scan).
EF_SEARCH = 200
EF_SEARCH_FILTERED = 200
#: pgvector 0.8 iterative scan: "strict_order", or "relaxed_order" (re-sorted here). With the
#: index built at ef_construction 128, strict_order gave the same recall in less time at 1M.
ITERATIVE_SCAN = "strict_order"
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
    sha256: str | None  # None (and the five below) for rows imported without a file
    bytes: int | None
    mtime: datetime | None
    width: int | None
    height: int | None
    format: str | None
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
    """A list of :class:`Hit`, best first, that renders as a thumbnail grid in Jupyter.

    ``strategy`` says how it was ranked: ``index``, ``exact``, or ``index+exact`` (an index
    scan that came back short, completed by an exact scan).
    """

    strategy: str | None = None

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
                strategy = "index" if not conditions else _choose(conn, where_sql, filter_params,
                                                                  limit)
            rows = _run(conn, q, where_sql, filter_params, limit, strategy)
            if strategy == "index" and len(rows) < limit and conditions:
                rows = _run(conn, q, where_sql, filter_params, limit, "exact")
                strategy = "index+exact"
    except psycopg.Error as exc:
        raise QueryError(_describe(exc, where)) from None
    except (IndexError, TypeError) as exc:  # placeholder / parameter count mismatch
        raise QueryError(f"the WHERE fragment and its parameters do not match: {exc}") from None
    results = Results(Hit(*r) for r in rows)
    results.strategy = strategy
    return results


def exact_threshold(table_rows: float, limit: int = 10) -> float:
    """Estimated filtered rows below which the exact scan is chosen (see module docs)."""
    ef = max(EF_SEARCH_FILTERED, limit)
    return max(EXACT_ROWS_MIN, (EXACT_FACTOR * ef * max(table_rows, 0.0)) ** 0.5)


def _choose(conn, where_sql, params, limit) -> str:
    plan = conn.execute(
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM clipsql.images {where_sql}", params).fetchone()[0]
    estimated = plan[0]["Plan"]["Plan Rows"]
    if estimated <= EXACT_ROWS_MIN:
        return "exact"
    # The planner's own table size (pg_class.reltuples, kept by autovacuum/ANALYZE).
    total = conn.execute("SELECT greatest(reltuples, 0) FROM pg_class "
                         "WHERE oid = 'clipsql.images'::regclass").fetchone()[0]
    return "exact" if estimated < exact_threshold(total, limit) else "index"


def _run(conn, q, where_sql, params, limit, strategy):
    relaxed = False
    if strategy == "index":
        ef = EF_SEARCH_FILTERED if where_sql else EF_SEARCH
        conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, max(ef, limit))}")
        if where_sql and vector_version(conn) >= (0, 8):
            relaxed = ITERATIVE_SCAN == "relaxed_order"
            conn.execute(f"SET LOCAL hnsw.iterative_scan = {ITERATIVE_SCAN}")
            conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN_TUPLES}")
        order = "embedding <=> %s"
    else:
        # An expression the HNSW operator class cannot serve: forces an exact sort.
        order = "(embedding <=> %s) + 0, id"
    sql = f"SELECT {_SELECT} FROM clipsql.images {where_sql} ORDER BY {order} LIMIT %s"
    if relaxed:  # relaxed_order yields rows nearly sorted: take a few more, sort, cut
        sql = (f"WITH found AS MATERIALIZED ({sql}) SELECT * FROM found "
               "ORDER BY score DESC, id LIMIT %s")
        return conn.execute(sql, [q, *params, q, 4 * limit, limit]).fetchall()
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
