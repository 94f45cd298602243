"""Pure parts of the index kinds: build memory sizing, the CREATE INDEX text per kind, the
binary scan's filtered candidates and its ORDER BY (which must match the index expression).

The unfiltered candidate count is the SQL function ``clipsql._binary_candidates``'s alone;
tests/integration/test_sql_parity.py checks Python against it, and the kinds against the
CHECK constraint."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsql.database import hnsw
from clipsql.errors import QueryError
from clipsql.query import quantized, search


def test_graph_memory_is_sized_to_the_graph_within_limits():
    assert hnsw.graph_memory_mb(0, 512) == 512
    assert hnsw.graph_memory_mb(1_000_000, 512) == int(1e6 * 1824 * 1.15 / 2**20)
    assert hnsw.graph_memory_mb(10_000_000, 512) == hnsw.BUILD_MEMORY_MAX_MB
    # one bit per dimension: a binary graph needs about half the halfvec one
    assert hnsw.graph_memory_mb(1_000_000, 512, vector_bytes=64) < \
        hnsw.graph_memory_mb(1_000_000, 512) / 2 + 1


def test_create_sql_per_kind():
    half = hnsw.create_sql(hnsw.INDEX_NAME, "embedding")
    assert "USING hnsw (embedding halfvec_cosine_ops)" in half
    binary = hnsw.create_sql(hnsw.BINARY_INDEX_NAME, "embedding", kind="binary", dim=512)
    assert "USING hnsw ((binary_quantize(embedding)::bit(512)) bit_hamming_ops)" in binary
    assert f"ef_construction = {hnsw.BINARY_EF_CONSTRUCTION}" in binary
    with pytest.raises(QueryError):
        hnsw.create_sql(hnsw.BINARY_INDEX_NAME, "embedding", kind="binary")


def test_the_scan_expression_is_the_index_expression():
    index_expr = re.search(r"\(\((.*)\) bit_hamming_ops", hnsw.create_sql(
        "x", "embedding", kind="binary", dim=768)).group(1)
    assert quantized.order_sql(768).startswith(index_expr + " <~> ")


def test_index_names_and_unknown_kinds():
    assert hnsw.index_name("halfvec") == hnsw.INDEX_NAME
    assert hnsw.index_name("binary") == hnsw.BINARY_INDEX_NAME
    with pytest.raises(QueryError, match="unknown index kind"):
        hnsw.index_name("ivfflat")


def test_rerank_wraps_and_cuts():
    sql = quantized.rerank_sql("SELECT id, 0.5 AS score FROM t LIMIT %s")
    assert sql.startswith("WITH candidates AS MATERIALIZED (SELECT id")
    assert sql.endswith("ORDER BY score DESC, id LIMIT %s") and sql.count("%s") == 2


def test_exact_threshold_counts_binary_candidates():
    assert search.exact_threshold(1e6, candidates=400) > search.exact_threshold(1e6)
    # a binary scan visits dearer tuples (a factor of 8, not 4: measured, see search.py)
    assert search.exact_threshold(1e6, candidates=200) == pytest.approx(
        search.exact_threshold(1e6) * 2 ** 0.5)


@settings(max_examples=200, deadline=None)
@given(candidates=st.integers(1, 1000), limit=st.integers(1, 100),
       a=st.floats(0, 1), b=st.floats(0, 1))
def test_filtered_candidates_shrink_with_selectivity_within_bounds(candidates, limit, a, b):
    plan = quantized.BinaryPlan(candidates, "o", 512)
    lo, hi = sorted((a, b))
    few, many = (quantized.for_filter(plan, limit, s).candidates for s in (lo, hi))
    assert few <= many <= candidates  # never more than unfiltered, monotone in selectivity
    assert few >= min(candidates, quantized.MIN_PER_RESULT * limit)
    assert quantized.for_filter(plan, limit, 1.0).candidates == candidates
