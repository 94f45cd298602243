"""Ranked search over ``clipsql.images``: a query embedding plus an optional SQL filter.

The filter is a user-written ``WHERE`` fragment with ``%s`` placeholders and bound
parameters, run through :mod:`clipsql.database.user_sql` (read-only, rolled back, with a
statement timeout), so it can filter and join but never write.

Plan choice per query (measured in ``benchmarks/search.py``; README "Search performance"):

* No filter: the HNSW index (``hnsw.ef_search``: :mod:`clipsql.query.settings`).
* A filter: the planner's row estimate ``r`` for it (``EXPLAIN``, no execution) is weighed
  against the table's size ``N``. An iterative HNSW scan (pgvector 0.8) visits about
  ``ef_search / selectivity = ef_search * N / r`` rows to find ``limit`` that pass; an exact
  scan reads the ``r`` rows the filter keeps (through the filter's own indexes) and sorts
  them. The exact scan is chosen when ``r < sqrt(EXACT_FACTOR * ef_search * N)`` (28k rows
  at 1M, 8.9k at 100k: a bias towards exact, which never loses recall, where the costs are
  close; iterative-scan recall falls as the filter gets more selective). ``EXACT_ROWS_MIN``
  rows or fewer always go exact. Filtered index scans use ``settings.EF_SEARCH_FILTERED``.
* An index scan that comes back short of ``limit`` (the filter is more selective than
  estimated and ``hnsw.max_scan_tuples`` ran out) is completed by the exact scan, so the full
  top-k is always returned.
* A collection whose index kind is ``binary`` (:func:`clipsql.database.hnsw.set_index_kind`)
  scans its Hamming index for ``limit x oversample`` candidates (at most 1000, the filter
  applied, iterative scan in ``relaxed_order``: at 100k rows and a 10% filter, strict order
  found 0.967 recall@10 where relaxed found 1.000) and re-ranks them exactly by cosine
  similarity; the exact scan is unchanged, and its threshold uses the candidate count (and
  ``BINARY_EXACT_FACTOR``). A filter takes fewer candidates, by its estimated selectivity
  (:func:`quantized.for_filter`).

A row whose vector is all zeros (stored before imports refused them, or written by hand) has
no cosine similarity: pgvector's distance is NaN, which sorts after every number (last in a
scan, so leaving them out loses no other row). Such rows are left out of every ranking, so
no score is ever NaN; a query vector of zeros or non-finite values is a :class:`QueryError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, make_dataclass
from datetime import datetime

from clipsql.database import images, user_sql
from clipsql.database.connection import vector_version
from clipsql.errors import QueryError
from clipsql.query import quantized, relevance, settings

#: Filters the planner expects to keep at most this many rows are always ranked exactly.
EXACT_ROWS_MIN = 2_000
#: Exact when estimated rows < sqrt(EXACT_FACTOR * ef_search * table rows) (see module docs).
EXACT_FACTOR = 4.0
#: The same for the binary index, with its candidates for ef_search. Measured at 200k rows
#: and a 10% filter (benchmarks/quantized.py): a filtered binary scan costs 0.021 ms per
#: index tuple it visits, an exact scan 0.0028 ms per row it keeps, a ratio of 7.6.
BINARY_EXACT_FACTOR = 8.0


def _to_dict(self) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


def _field(c: images.Column):
    return (c.name, c.python | None if c.nullable else c.python)


#: One result: the ``clipsql.images`` columns of :data:`clipsql.database.images.HIT` plus
#: ``score`` (cosine similarity, higher is better) after ``path``. File facts are None for
#: rows imported without a file.
Hit = make_dataclass(
    "Hit", [_field(images.HIT[0]), _field(images.HIT[1]), ("score", float),
            *(_field(c) for c in images.HIT[2:])],
    namespace={"to_dict": _to_dict, "__module__": __name__,
               "__doc__": "One search result: the image row's columns plus ``score`` "
                          "(cosine similarity, higher is better)."})


class Results(list):
    """A list of :class:`Hit`, best first, that renders as a thumbnail grid in Jupyter.

    ``strategy`` says how it was ranked: ``index``, ``exact``, or ``index+exact`` (an index
    scan that came back short, completed by an exact scan).
    """

    strategy: str | None = None
    #: Which relevance rule cut the ranking, where: ``{"rule", "threshold", "kept",
    #: "candidates"}`` (see :mod:`clipsql.query.relevance`), or None.
    cutoff: dict | None = None

    def to_json(self) -> str:
        return json.dumps([h.to_dict() for h in self], ensure_ascii=False)

    def _repr_html_(self) -> str:
        from clipsql.query.display import results_html

        return results_html(self)


_SELECT = (f"{images.select_list(images.HIT[:2])}, 1 - (embedding <=> %s) AS score, "
           f"{images.select_list(images.HIT[2:])}")


def rank(conn, query, *, where=None, params=(), limit=10, min_score=None, exclude_id=None,
         strategy="auto") -> Results:
    """The top ``limit`` rows by cosine similarity to ``query`` (a numpy vector).

    ``strategy`` is ``auto`` (see module docs), ``index`` or ``exact``.
    """
    from pgvector import HalfVector

    if not isinstance(limit, int) or limit < 1:
        raise QueryError(f"limit must be a positive integer, not {limit!r}")
    if strategy not in ("auto", "index", "exact"):
        raise QueryError(f"unknown strategy {strategy!r}")
    if not _has_direction(query):
        raise QueryError("the query vector has no direction (all zeros, or not finite numbers)")
    q = HalfVector(query)
    params = list(params or ())
    conditions = [c for c in [user_sql.wrap(where)] if c]
    if exclude_id is not None:
        conditions.append("id <> %s")
    if min_score is not None:
        conditions.append("embedding <=> %s <= %s")
    where_sql = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    filter_params = params + ([exclude_id] if exclude_id is not None else [])
    filter_params += [q, 1 - float(min_score)] if min_score is not None else []
    with user_sql.read_only(conn, where) as conn:
        binary = quantized.plan(conn, limit)
        if conditions and (strategy == "auto" or (binary and strategy == "index")):
            estimated, total = _estimate(conn, where_sql, filter_params)
            if binary:  # fewer candidates re-ranked where the filter keeps fewer rows
                binary = quantized.for_filter(binary, limit, estimated / max(total, 1.0))
            if strategy == "auto":
                strategy = _choose(estimated, total, limit, binary)
        elif strategy == "auto":
            strategy = "index"
        rows = _run(conn, q, where_sql, filter_params, limit, strategy, binary)
        if strategy == "index" and len(rows) < limit and conditions:
            rows = _run(conn, q, where_sql, filter_params, limit, "exact")
            strategy = "index+exact"
    results = Results(Hit(*r) for r in rows)
    results.strategy = strategy
    return results


def find(conn, query, *, limit=10, min_score=None, within=None, adaptive=None, order_by=None,
         candidates=relevance.CANDIDATES, **rank_args) -> Results:
    """:func:`rank`, then the relevance cutoffs and the ordering of the relevant set
    (:mod:`clipsql.query.relevance`); ``results.cutoff`` says which rule cut where.

    Relative cutoffs and orderings look at the best ``candidates`` hits (through the index);
    other arguments go to :func:`rank`.
    """
    cutoff = relevance.Cutoff(min_score=min_score, within=within, adaptive=adaptive)
    if order_by is not None:
        relevance.parse_order(order_by)
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
        raise QueryError(f"candidates must be a positive integer, not {candidates!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise QueryError(f"limit must be a positive integer, not {limit!r}")
    pool = max(limit, candidates) if cutoff.relative or order_by else limit
    hits = rank(conn, query, limit=pool, min_score=min_score, **rank_args)
    keep, report = cutoff.apply([h.score for h in hits])
    kept = hits[:keep]
    if order_by is not None:
        kept = relevance.ordered(kept, order_by)
    results = Results(kept[:limit])
    results.strategy, results.cutoff = hits.strategy, report
    return results


def exact_threshold(table_rows: float, limit: int = 10, candidates: int = 0) -> float:
    """Estimated filtered rows below which the exact scan is chosen (see module docs);
    ``candidates``: the rows a binary-index scan must find before re-ranking (0: the
    halfvec index).

    >>> round(exact_threshold(1_000_000)), round(exact_threshold(1_000_000, candidates=400))
    (28284, 56569)
    """
    ef = max(settings.EF_SEARCH_FILTERED, limit, candidates)
    factor = BINARY_EXACT_FACTOR if candidates else EXACT_FACTOR
    return max(EXACT_ROWS_MIN, (factor * ef * max(table_rows, 0.0)) ** 0.5)


def _estimate(conn, where_sql, params) -> tuple[float, float]:
    """(rows the planner expects the filter to keep, rows in the table), planned only."""
    plan = conn.execute(
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {images.TABLE} {where_sql}", params).fetchone()[0]
    # The planner's own table size (pg_class.reltuples, kept by autovacuum/ANALYZE).
    total = conn.execute("SELECT greatest(reltuples, 0) FROM pg_class "
                         f"WHERE oid = '{images.TABLE}'::regclass").fetchone()[0]
    return float(plan[0]["Plan"]["Plan Rows"]), float(total)


def _choose(estimated, total, limit, binary=None) -> str:
    if estimated <= EXACT_ROWS_MIN:
        return "exact"
    candidates = binary.candidates if binary else 0
    return "exact" if estimated < exact_threshold(total, limit, candidates) else "index"


def _has_direction(vector) -> bool:
    import numpy as np

    v = np.asarray(vector, dtype=np.float64)
    return bool(np.isfinite(v).all() and v.any())


def _run(conn, q, where_sql, params, limit, strategy, binary=None):
    """The rows of one scan, best first; rows of a zero vector (a NaN score, last) left out."""
    return [r for r in _scan(conn, q, where_sql, params, limit, strategy, binary)
            if not math.isnan(r[2])]


def _scan(conn, q, where_sql, params, limit, strategy, binary=None):
    relaxed = False
    if strategy == "index" and binary:
        iterative = bool(where_sql) and vector_version(conn) >= (0, 8)
        settings.set_local_index_scan(conn, binary.candidates, filtered=bool(where_sql),
                                      iterative=iterative)
        if iterative:  # re-ranked anyway; strict order loses candidates among Hamming ties
            conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        sql = (f"SELECT {_SELECT} FROM {images.TABLE} {where_sql} "
               f"ORDER BY {binary.order} LIMIT %s")
        return conn.execute(quantized.rerank_sql(sql),
                            [q, *params, q, binary.candidates, limit]).fetchall()
    if strategy == "index":
        iterative = bool(where_sql) and vector_version(conn) >= (0, 8)
        settings.set_local_index_scan(conn, limit, filtered=bool(where_sql), iterative=iterative)
        relaxed = iterative and settings.ITERATIVE_SCAN == "relaxed_order"
        order = "embedding <=> %s"
    else:
        # An expression the HNSW operator class cannot serve: forces an exact sort.
        order = "(embedding <=> %s) + 0, id"
    sql = f"SELECT {_SELECT} FROM {images.TABLE} {where_sql} ORDER BY {order} LIMIT %s"
    if relaxed:  # relaxed_order yields rows nearly sorted: take a few more, sort, cut
        sql = (f"WITH found AS MATERIALIZED ({sql}) SELECT * FROM found "
               "ORDER BY score = 'NaN', score DESC, id LIMIT %s")
        return conn.execute(sql, [q, *params, q, 4 * limit, limit]).fetchall()
    return conn.execute(sql, [q, *params, q, limit]).fetchall()
