"""The vector index over ``clipsql.images.embedding``: its kind, parameters and (serialised)
build.

Two kinds (:data:`KINDS`, the list of ``clipsql.index_config``'s CHECK constraint, compared
by tests/integration/test_sql_parity.py), chosen per collection in ``clipsql.index_config``
(migration 0013, the one home of the fact; change it with :func:`set_index_kind`):

* ``halfvec`` (default): HNSW over the halfvec embeddings, cosine distance.
* ``binary``: HNSW over ``binary_quantize(embedding)::bit(dim)``, Hamming distance: one bit
  per dimension (64 bytes at 512-d instead of 1 kB), so about a quarter of the index size and
  a faster build. Searches take ``k x oversample`` Hamming candidates and re-rank them
  exactly by ``embedding <=> q`` (:mod:`clipsql.query.search`, ``clipsql._nearest``).

Builds run after bulk loads (:func:`ensure_index`), with ``maintenance_work_mem`` sized to
the graph and parallel workers (see docs/scale.md, "Index build").
"""

from __future__ import annotations

from clipsql.database.binding import bound_model
from clipsql.database.migrations import LOCK_KEY
from clipsql.database.queries import SQL
from clipsql.errors import QueryError

INDEX_NAME = "images_embedding_hnsw"
BINARY_INDEX_NAME = "images_embedding_bq"
KINDS = ("halfvec", "binary")
#: HNSW build parameters. m is pgvector's default; ef_construction 128 instead of its 64:
#: at 1M rows recall@10 0.996 instead of 0.94-0.98 at ef_search 200, for a 1.6x longer build
#: (benchmarks/search.py --ef-construction).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
#: ef_construction of the binary index: 64 builds in 0.62x the time of 128 with the same
#: recall after re-ranking at 200k rows (benchmarks/index_build.py --kinds binary).
BINARY_EF_CONSTRUCTION = 64
#: Upper bound of the memory the index build may take (see build_memory_mb).
BUILD_MEMORY_MAX_MB = 3072
#: Parallel workers of a build (plus the leader process, which builds too).
BUILD_WORKERS = 2
INDEX_LOCK_KEY = LOCK_KEY + 1


def build_memory_mb(conn, dim: int | None = None, kind: str = "halfvec") -> int:
    """``maintenance_work_mem`` for the HNSW build: enough for the whole graph, within limits.

    pgvector builds fast while the graph fits in maintenance_work_mem and much slower once
    it does not (a 512-d halfvec graph takes about 1.8 kB per row, a binary one 0.85 kB).
    ``dim`` defaults to the bound model's (a reembed builds for the new one's).
    """
    rows, bound_dim = conn.execute(SQL["index_build_rows"]).fetchone()
    if rows == 0:  # never analysed (reltuples -1): count; a load or import just ran
        rows = conn.execute(SQL["image_count"]).fetchone()[0]
    dim = dim or bound_dim
    return graph_memory_mb(rows, dim, vector_bytes=dim / 8 if kind == "binary" else None)


def graph_memory_mb(rows: float, dim: int, vector_bytes: float | None = None) -> int:
    """The ``maintenance_work_mem`` (MB) for an HNSW graph of ``rows`` vectors of ``dim``
    dimensions (halfvec: 2 bytes each, or ``vector_bytes``), from 512 MB to
    BUILD_MEMORY_MAX_MB: rows x (vector + 800 B) x 1.15. The 800 B are pgvector's in-memory
    element at m = 16: ~130 B of header, heap TIDs and lock, 32 level-0 neighbour slots of
    16 B, upper levels. (With 400 B a 1M-row binary build outgrew its memory and took over
    20 minutes instead of minutes.)

    >>> graph_memory_mb(100_000, 512), graph_memory_mb(1_000_000, 512)
    (512, 2000)
    >>> graph_memory_mb(1_000_000, 512, vector_bytes=64)
    947
    """
    per_row = (2 * dim if vector_bytes is None else vector_bytes) + 800
    need = int(rows * per_row * 1.15 / 2**20)
    return max(512, min(BUILD_MEMORY_MAX_MB, need))


def index_kind(conn) -> tuple[str, int]:
    """The collection's index kind and binary oversampling factor (``clipsql.index_config``)."""
    return tuple(conn.execute(SQL["index_kind"]).fetchone())


def index_name(kind: str) -> str:
    """The name of the index of ``kind``."""
    if kind not in KINDS:
        raise QueryError(f"unknown index kind {kind!r}: one of {', '.join(KINDS)}")
    return BINARY_INDEX_NAME if kind == "binary" else INDEX_NAME


def has_index(conn, kind: str | None = None) -> bool:
    """Whether the index of ``kind`` (default: the configured one) exists."""
    name = index_name(kind or index_kind(conn)[0])
    return conn.execute(SQL["index_exists"], (name,)).fetchone() is not None


def set_index_kind(conn, kind: str, *, oversample: int | None = None) -> bool:
    """Make ``kind`` the collection's index: record it, build its index now if the collection
    has rows, and drop the other kind's index. Returns True if an index was built.

    ``oversample`` (binary only): Hamming candidates per result re-ranked exactly
    (default 100: 1000 candidates for k = 10 found recall@10 0.980 at 1M rows, 400 only
    0.933; benchmarks/index_build.py --build-only --kinds binary).
    """
    index_name(kind)
    if oversample is not None and not (isinstance(oversample, int) and 1 <= oversample <= 1000):
        raise QueryError(f"oversample must be an integer from 1 to 1000, not {oversample!r}")
    with conn.transaction():
        conn.execute(SQL["index_set_kind"], (kind, oversample))
    # An empty collection gets its index after its first load (faster than row by row).
    has_rows = conn.execute(SQL["image_exists"]).fetchone()[0]
    built = ensure_index(conn) if has_rows else False
    if built or not has_rows or has_index(conn, kind):
        other = index_name("halfvec" if kind == "binary" else "binary")
        conn.execute(SQL["index_drop"].format(name=other))
    if not conn.autocommit:
        conn.commit()
    return built


def ensure_index(conn) -> bool:
    """Build the configured kind's HNSW index if it is missing; True if it was built now.

    Bulk loads build it after the rows are in, which is faster than maintaining it row by
    row (see benchmarks). ``maintenance_work_mem`` is raised for the build only.
    """
    kind = index_kind(conn)[0]
    if has_index(conn, kind) or (model := bound_model(conn)) is None:
        return False
    with conn.transaction():
        # CREATE INDEX IF NOT EXISTS is not safe against a concurrent identical CREATE (two
        # loaders finishing together): serialise builders and check again under the lock.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INDEX_LOCK_KEY,))
        if has_index(conn, kind):
            return False
        conn.execute(f"SET LOCAL maintenance_work_mem = '{build_memory_mb(conn, kind=kind)}MB'")
        conn.execute(f"SET LOCAL max_parallel_maintenance_workers = {BUILD_WORKERS}")
        conn.execute(create_sql(index_name(kind), "embedding", if_not_exists=True, kind=kind,
                                dim=model["dim"]))
    return True


def create_sql(name: str, column: str, *, if_not_exists: bool = False,
               concurrently: bool = False, kind: str = "halfvec", dim: int | None = None) -> str:
    """The ``CREATE INDEX`` of an HNSW index named ``name`` over ``column``: cosine over the
    halfvec, or (``kind="binary"``) Hamming over its ``dim``-bit binary quantization."""
    if kind == "binary":
        if not isinstance(dim, int) or dim < 1:
            raise QueryError(f"a binary index needs the dimension, not {dim!r}")
        using = f"(binary_quantize({column})::bit({dim})) bit_hamming_ops"
    else:
        using = f"{column} halfvec_cosine_ops"
    return SQL["index_create"].format(
        concurrently="CONCURRENTLY " if concurrently else "",
        if_not_exists="IF NOT EXISTS " if if_not_exists else "", name=name, using=using,
        m=HNSW_M, ef_construction=BINARY_EF_CONSTRUCTION if kind == "binary" else HNSW_EF_CONSTRUCTION)


def index_valid(conn, name: str) -> bool | None:
    """Whether the index ``name`` is usable: None if absent, False if a build was cut short
    (``CREATE INDEX CONCURRENTLY`` leaves an invalid index behind)."""
    row = conn.execute(SQL["index_valid"], (name,)).fetchone()
    return None if row is None else row[0]


def build_concurrently(conn, name: str, column: str, dim: int) -> bool:
    """Build an HNSW index over ``column`` without blocking loads or searches (autocommit
    ``conn``); an invalid leftover of a killed build is dropped first. True if built now."""
    state = index_valid(conn, name)
    if state:
        return False
    if state is False:
        conn.execute(SQL["index_drop_concurrently"].format(name=name))
    conn.execute(f"SET maintenance_work_mem = '{build_memory_mb(conn, dim)}MB'")
    conn.execute(f"SET max_parallel_maintenance_workers = {BUILD_WORKERS}")
    try:
        conn.execute(create_sql(name, column, concurrently=True))
    finally:
        conn.execute("RESET maintenance_work_mem")
        conn.execute("RESET max_parallel_maintenance_workers")
    return True
