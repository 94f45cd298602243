"""Pure parts of the index kinds: build memory sizing, the CREATE INDEX text per kind, and
the binary scans' ORDER BY in the SQL functions (which must match the index expression).

The scan rules themselves (candidates, their share under a filter, the exact-scan threshold)
are SQL's alone (migrations/0013, 0020); tests/integration/test_quantized_index.py and
test_sql_parity.py test them on PostgreSQL, from the Python API and from SQL."""

import re
from pathlib import Path

import pytest

from clipsql.database import hnsw
from clipsql.errors import QueryError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


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


def _binary_orders(sql: str):
    """Every ``binary_quantize(...) <~> binary_quantize(...)`` ORDER BY of the SQL text, with
    its table alias dropped and its format() placeholder for the bits filled in (768)."""
    found = re.findall(r"ORDER BY (binary_quantize\((?:\w+\.)?embedding\)::bit\(%1\$s\)) '?\s*'?"
                       r"<~> binary_quantize\(([^)]*)\)::bit\(%1\$s\)", sql)
    return [(re.sub(r"\w+\.embedding", "embedding", left).replace("%1$s", "768"), right)
            for left, right in found]


def test_the_scan_expression_is_the_index_expression():
    index_expr = re.search(r"\(\((.*)\) bit_hamming_ops", hnsw.create_sql(
        "x", "embedding", kind="binary", dim=768)).group(1)
    sql = (MIGRATIONS / "0020_one_home.sql").read_text()
    orders = _binary_orders(sql)
    # clipsql.rank_images (a query vector $1) and clipsql.near_duplicates (a row's own)
    assert sorted(right for _, right in orders) == ["$1", "a.embedding"]
    assert all(left == index_expr for left, _ in orders), (orders, index_expr)
    assert _binary_orders("ORDER BY binary_quantize(embedding)::bit(%1$s) <~> "
                          "binary_quantize($1)::bit(%1$s)") == [(index_expr, "$1")]
    assert _binary_orders("ORDER BY binary_quantize(embedding)::bit(%1$s) <=> x") == []


def test_index_names_and_unknown_kinds():
    assert hnsw.index_name("halfvec") == hnsw.INDEX_NAME
    assert hnsw.index_name("binary") == hnsw.BINARY_INDEX_NAME
    with pytest.raises(QueryError, match="unknown index kind"):
        hnsw.index_name("ivfflat")
