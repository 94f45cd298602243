"""The HNSW index over ``clipsql.images.embedding``: its parameters and its (serialised) build."""

from __future__ import annotations

from clipsql.database.binding import bound_model
from clipsql.database.migrations import LOCK_KEY

INDEX_NAME = "images_embedding_hnsw"
#: HNSW build parameters. m is pgvector's default; ef_construction 128 instead of its 64:
#: at 1M rows recall@10 0.996 instead of 0.94-0.98 at ef_search 200, for a 1.6x longer build
#: (benchmarks/search.py --ef-construction).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
#: Upper bound of the memory the index build may take (see build_memory_mb).
BUILD_MEMORY_MAX_MB = 3072
INDEX_LOCK_KEY = LOCK_KEY + 1


def build_memory_mb(conn, dim: int | None = None) -> int:
    """``maintenance_work_mem`` for the HNSW build: enough for the whole graph, within limits.

    pgvector builds fast while the graph fits in maintenance_work_mem and much slower once
    it does not (a 512-d halfvec graph takes about 1.4 kB per row: 130 MB at 100k rows).
    The estimate is rows x (2 x dim + 400) bytes + 25%, from 512 MB to BUILD_MEMORY_MAX_MB.
    ``dim`` defaults to the bound model's (a reembed builds for the new one's).
    """
    rows, bound_dim = conn.execute(
        "SELECT greatest(c.reltuples, 0), m.dim FROM pg_class c, clipsql.model m "
        "WHERE c.oid = 'clipsql.images'::regclass").fetchone()
    if rows == 0:  # never analysed (reltuples -1): count; a load or import just ran
        rows = conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0]
    dim = dim or bound_dim
    need = int(rows * (2 * dim + 400) * 1.25 / 2**20)
    return max(512, min(BUILD_MEMORY_MAX_MB, need))


def has_index(conn) -> bool:
    return conn.execute(
        "SELECT 1 FROM pg_indexes WHERE schemaname = 'clipsql' AND indexname = %s", (INDEX_NAME,)
    ).fetchone() is not None


def ensure_index(conn) -> bool:
    """Build the HNSW cosine index if it is missing; returns True if it was built now.

    Bulk loads build it after the rows are in, which is faster than maintaining it row by
    row (see benchmarks). ``maintenance_work_mem`` is raised for the build only.
    """
    if has_index(conn) or bound_model(conn) is None:
        return False
    with conn.transaction():
        # CREATE INDEX IF NOT EXISTS is not safe against a concurrent identical CREATE (two
        # loaders finishing together): serialise builders and check again under the lock.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK_KEY,))
        if has_index(conn):
            return False
        conn.execute(f"SET LOCAL maintenance_work_mem = '{build_memory_mb(conn)}MB'")
        conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
        conn.execute(create_sql(INDEX_NAME, "embedding", if_not_exists=True))
    return True


def create_sql(name: str, column: str, *, if_not_exists: bool = False,
               concurrently: bool = False) -> str:
    """The ``CREATE INDEX`` of an HNSW cosine index named ``name`` over ``column``."""
    return (f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}"
            f"{'IF NOT EXISTS ' if if_not_exists else ''}{name} ON clipsql.images "
            f"USING hnsw ({column} halfvec_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")


def index_valid(conn, name: str) -> bool | None:
    """Whether the index ``name`` is usable: None if absent, False if a build was cut short
    (``CREATE INDEX CONCURRENTLY`` leaves an invalid index behind)."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'clipsql' AND c.relname = %s", (name,)).fetchone()
    return None if row is None else row[0]


def build_concurrently(conn, name: str, column: str, dim: int) -> bool:
    """Build an HNSW index over ``column`` without blocking loads or searches (autocommit
    ``conn``); an invalid leftover of a killed build is dropped first. True if built now."""
    state = index_valid(conn, name)
    if state:
        return False
    if state is False:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS clipsql.{name}")
    conn.execute(f"SET maintenance_work_mem = '{build_memory_mb(conn, dim)}MB'")
    conn.execute("SET max_parallel_maintenance_workers = 2")
    try:
        conn.execute(create_sql(name, column, concurrently=True))
    finally:
        conn.execute("RESET maintenance_work_mem")
        conn.execute("RESET max_parallel_maintenance_workers")
    return True
