"""Searches through the binary-quantized HNSW index (index kind ``binary``).

The index orders rows by the Hamming distance between ``binary_quantize(embedding)`` and the
query's bits, a coarse proxy of cosine distance. A search takes ``limit x oversample`` such
candidates (at most :data:`MAX_CANDIDATES`, pgvector's ``ef_search`` cap) and re-ranks them
by the exact cosine distance of the stored halfvec embeddings. That count has one home, the
SQL function ``clipsql._binary_candidates`` (migration 0013), which :func:`plan` calls and
``clipsql._nearest`` uses; tests/integration/test_sql_parity.py checks the cap and the index
name around it against the SQL side.

A filtered search re-ranks fewer candidates (:func:`for_filter`): the filter leaves ``s N`` of
the ``N`` rows, and the candidates needed for a given recall grow with the rows searched
(measured unfiltered: 400 Hamming candidates gave recall@10 0.980 at 200k rows, 1000 gave 0.980
at 1M: about the square root of the rows), while each candidate that passes a filter costs
about ``1 / s`` index tuples visited. So a filter keeping a share ``s`` takes
``candidates x s ** FILTER_EXPONENT``, never fewer than ``MIN_PER_RESULT x limit``.

>>> for_filter(BinaryPlan(1000, "", 512), 10, 0.25).candidates
500
>>> for_filter(BinaryPlan(1000, "", 512), 10, 0.01).candidates, for_filter(BinaryPlan(1000, "", 512), 10, 1.0).candidates
(400, 1000)
>>> order_sql(512)
'binary_quantize(embedding)::bit(512) <~> binary_quantize(%s)::bit(512)'
"""

from __future__ import annotations

from dataclasses import dataclass

from clipsql.query.settings import EF_SEARCH_MAX

#: The most candidates one search re-ranks (pgvector's cap on hnsw.ef_search); from
#: ``limit`` = this on, searches do not use the binary index (``clipsql._nearest`` ranks
#: exactly there).
MAX_CANDIDATES = EF_SEARCH_MAX
#: Filtered candidates = unfiltered candidates x selectivity ** this (0: the same count).
FILTER_EXPONENT = 0.5
#: ... and never fewer than this many per result: at 1M rows and a 1% filter, 10 per result
#: (100 for k = 10) kept recall@10 0.917 where the unscaled 1000 kept 0.997, with forced index
#: scans (auto scans exactly there); benchmarks/quantized.py.
MIN_PER_RESULT = 40


@dataclass(frozen=True)
class BinaryPlan:
    """How to scan the binary index: candidates to fetch, and the ``ORDER BY`` expression
    (one ``%s``: the query embedding) that the index serves."""

    candidates: int
    order: str
    dim: int


def for_filter(plan: BinaryPlan, limit: int, selectivity: float) -> BinaryPlan:
    """``plan`` for a filter expected to keep ``selectivity`` (0-1) of the rows."""
    share = min(max(float(selectivity), 0.0), 1.0)
    scaled = round(plan.candidates * share ** FILTER_EXPONENT)
    candidates = min(plan.candidates, max(scaled, MIN_PER_RESULT * limit, limit))
    return BinaryPlan(candidates, plan.order, plan.dim)


def order_sql(dim: int, column: str = "embedding", query: str = "%s") -> str:
    """The distance expression of the binary index on ``dim``-d embeddings (it must match the
    index expression of :func:`clipsql.database.hnsw.create_sql` for the planner to use it)."""
    bits = f"::bit({int(dim)})"
    return f"binary_quantize({column}){bits} <~> binary_quantize({query}){bits}"


def plan(conn, limit: int) -> BinaryPlan | None:
    """The binary scan for ``limit`` results, or None when the collection does not search
    through the binary index (kind ``halfvec``, its index not built, or ``limit`` too large).
    The candidates are ``clipsql._binary_candidates(limit)``: the rule's one home."""
    if limit >= MAX_CANDIDATES:
        return None
    row = conn.execute("SELECT clipsql._binary_candidates(%s), m.dim FROM clipsql.model m",
                       [limit]).fetchone()
    if row is None or row[0] is None:
        return None
    return BinaryPlan(row[0], order_sql(row[1]), row[1])


def rerank_sql(candidate_sql: str) -> str:
    """``candidate_sql`` (rows with ``score`` and ``id``, ending in ``LIMIT %s``) wrapped so
    that its rows are re-ranked by exact score and cut to a final ``LIMIT %s``."""
    return (f"WITH candidates AS MATERIALIZED ({candidate_sql}) SELECT * FROM candidates "
            "ORDER BY score DESC, id LIMIT %s")
