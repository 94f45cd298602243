"""One implementation of each ranking rule (SQL: migrations/0008, 0013, 0020), reached from
several surfaces on the real PostgreSQL: the Python API (:mod:`clipsql.query.search`,
:mod:`clipsql.query.algebra`, :mod:`clipsql.captions.hybrid`) and the public SQL functions must
give the same rows for the same inputs, and refuse the same inputs; constants are read from
the SQL side (the functions' defaults and results, pg_settings, the CHECK constraints).

* query algebra: ``clipsql.combine``, from ``algebra.combine`` and from SQL;
* the relevant set: ``clipsql.relevant_ranking`` from :func:`clipsql.query.search.find` and
  ``clipsql.relevant_images``;
* reciprocal rank fusion: ``clipsql.hybrid_ranking`` from :mod:`clipsql.captions.hybrid` and
  ``clipsql.hybrid_search``;
* ``hnsw.ef_search``: ``clipsql.ef_search_for`` and pgvector's cap;
* the binary index's candidates: ``clipsql._binary_candidates``; the cap and the index name;
* index kinds: ``clipsql.index_config``'s CHECK constraints and :mod:`clipsql.database.hnsw`.
"""

import math
import re
from functools import partial

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector

from clipsql.captions import hybrid
from clipsql.database import binding, connection, hnsw
from clipsql.errors import QueryError
from clipsql.query import algebra, relevance, search
from tests.conftest import insert_vectors

N, DIM = 300, 8
INF, NAN = math.inf, math.nan


@pytest.fixture
def conn(dsn):
    with connection.connect(dsn) as conn:
        yield conn


@pytest.fixture
def rows(conn):
    """N rows (ids 1..N): rows 1-3 share one vector and rows 4-5 another, both near the query
    ``q`` (ties at the top of the ranking, none where a candidate list is cut)."""
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(N, DIM))
    q = rng.normal(size=DIM)
    vecs[0:3] = q + 0.2 * rng.normal(size=DIM)
    vecs[3:5] = q + 0.3 * rng.normal(size=DIM)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    binding.bind_model(conn, {"arch": "synthetic", "pretrained": "none", "dim": DIM})
    insert_vectors(conn, vecs)
    q = HalfVector(q / np.linalg.norm(q)).to_numpy().astype(np.float32)  # as stored in SQL
    return conn, q


def sql_default(conn, signature: str, argument: str):
    """The value of ``argument``'s DEFAULT in the function ``signature``, evaluated by SQL."""
    args = conn.execute("SELECT pg_get_function_arguments(%s::regprocedure)",
                        [signature]).fetchone()[0]
    expr = re.search(rf"\b{argument} [a-z ]+ DEFAULT ([^,]+)", args).group(1)
    return conn.execute(f"SELECT {expr}").fetchone()[0]


def both(conn, python, sql):
    """(Python's result or QueryError, SQL's result or its SQLSTATE class)."""
    try:
        py = python()
    except QueryError:
        py = QueryError
    try:
        with conn.transaction():  # its own transaction: an error leaves conn usable
            got = sql()
    except psycopg.Error as exc:
        got = f"SQLSTATE {exc.sqlstate[:2]}"
    return py, got


# -- query algebra -------------------------------------------------------------------------

def run_combine(conn, parts, weights):
    text = [None if p is None else str(list(map(float, p))) for p in parts]
    weights = None if weights is None else [None if w is None else float(w) for w in weights]
    def python():
        vectors = [None if p is None else np.asarray(p, np.float32) for p in parts]
        return HalfVector(algebra.combine(conn, vectors, weights)).to_list()

    def sql():
        return conn.execute("SELECT clipsql.combine(%s::text[]::halfvec[], %s::float8[])",
                            [text, weights]).fetchone()[0].to_list()
    return both(conn, python, sql)


#: Parts whose normalised forms are exact in half precision: both sides then round alike.
COMBINED = {
    "one part": ([[0, 2, 0, 0]], None),
    "weights default to 1": ([[0, 2, 0, 0], [0, 0, 0, 3]], None),
    "negative weight": ([[1, 1, 1, 1], [0, 4, 0, 0]], [1, -0.5]),
    "zero weight adds nothing": ([[1, 1, 1, 1], [0, 4, 0, 0]], [2, 0]),
    "NULL weight counts 1": ([[1, 1, 1, 1], [0, 4, 0, 0]], [None, 3]),
    "a part of zeros adds nothing": ([[0, 0, 0, 0], [0, 0, 5, 0]], [1, 1]),
    "one dimension": ([[2], [3], [-1]], [1, 1, 1]),
    "tiny weights": ([[1, 0], [0, 1]], [1e-5, 2e-5]),
    "large weights": ([[1, 0], [0, 1]], [1e150, -1e150]),
}
REFUSED = {
    "no parts": ([], None),
    "fewer weights": ([[1, 0], [0, 1]], [1]),
    "more weights": ([[1, 0]], [1, 1]),
    "a NULL part": ([[1, 0], None], None),
    "different dimensions": ([[1, 0], [1, 0, 0]], None),
    "parts that cancel out": ([[1, 0], [2, 0]], [1, -1]),
    "every weight zero": ([[1, 0], [0, 1]], [0, 0]),
    "every part zeros": ([[0, 0], [0, 0]], None),
    "below the cancel threshold": ([[1, 0]], [1e-7]),
    "an infinite weight": ([[1, 0], [0, 1]], [INF, 1]),
    "a NaN weight": ([[1, 0], [0, 1]], [NAN, 1]),
    "weights whose sum overflows": ([[1, 0], [0, 1]], [1e300, 1e300]),
}


@pytest.mark.parametrize("parts, weights", COMBINED.values(), ids=COMBINED)
def test_combine_gives_the_same_vector(conn, parts, weights):
    py, sql = run_combine(conn, parts, weights)
    assert py == sql and isinstance(py, list)


@pytest.mark.parametrize("parts, weights", REFUSED.values(), ids=REFUSED)
def test_combine_refuses_the_same_inputs(conn, parts, weights):
    assert run_combine(conn, parts, weights) == (QueryError, "SQLSTATE 22")


def test_combine_of_stored_embeddings_agrees_within_half_precision(rows):
    """Any parts: SQL normalises each part in half precision (pgvector's l2_normalize),
    Python in double, so they differ by about one half-precision step (2**-11)."""
    conn = rows[0]
    stored = [np.asarray(r[0].to_list(), np.float32) for r in conn.execute(
        "SELECT embedding FROM clipsql.images WHERE id IN (7, 8, 9) ORDER BY id")]
    weights = [1.0, 0.5, -0.75]
    py = algebra.combine(conn, stored, weights)
    sql = conn.execute("SELECT clipsql.combine(array_agg(embedding ORDER BY id), %s) "
                       "FROM clipsql.images WHERE id IN (7, 8, 9)", [weights]).fetchone()[0]
    assert np.abs(sql.to_numpy() - py).max() < 2e-3


# -- the relevant set ----------------------------------------------------------------------

def relevant_both(conn, q, within, min_score, candidates):
    def python():
        return [(h.id, h.score) for h in search.find(
            conn, q, limit=candidates, candidates=candidates, within=within,
            min_score=min_score, strategy="exact")]

    def sql():
        return [tuple(r) for r in conn.execute(
            "SELECT id, score FROM clipsql.relevant_images(%s, %s, %s, %s)",
            [HalfVector(q), within, min_score, candidates])]
    return both(conn, python, sql)


@pytest.mark.parametrize("within, min_score, candidates", [
    (None, None, 10), (0.0, None, 10), (0.05, None, 10), (0.2, 0.3, 50), (None, 0.5, 50),
    (None, 1.5, 10), (10.0, -10.0, 40), (None, None, 1), (0.1, None, N + 5), (2.0, None, 999),
    (2.0, None, 1000)])
def test_relevant_images_keeps_the_same_rows(rows, within, min_score, candidates):
    py, sql = relevant_both(*rows, within, min_score, candidates)
    assert py == sql and isinstance(py, list)


def test_relevant_images_cut_exactly_at_a_score(rows):
    """A cutoff that falls exactly on a row's score keeps that row, on both sides: for every
    row, ``within`` = best - its score, and ``min_score`` = its score."""
    conn, q = rows
    scores = [s for _, s in relevant_both(conn, q, None, None, 60)[1]]
    assert len(set(scores)) < len(scores), "the data must have ties"
    for n, score in enumerate(scores):
        for within, min_score in ((scores[0] - score, None), (None, score)):
            py, sql = relevant_both(conn, q, within, min_score, 60)
            assert py == sql, (n, within, min_score)
            assert len(sql) >= n + 1


@pytest.mark.parametrize("within, min_score, candidates", [
    (-0.1, None, 10), (None, None, 0), (None, None, -3), (NAN, None, 10), (INF, None, 10),
    (None, NAN, 10), (None, -INF, 10), (None, INF, 10), (None, None, None)])
def test_relevant_images_refuses_the_same_inputs(rows, within, min_score, candidates):
    assert relevant_both(*rows, within, min_score, candidates) == (QueryError, "SQLSTATE 22")


def test_relevant_images_default_candidates_is_pythons(conn):
    assert sql_default(conn, "clipsql.relevant_images(halfvec, float8, float8, integer)",
                       "candidates") == relevance.CANDIDATES


# -- reciprocal rank fusion ----------------------------------------------------------------

@pytest.fixture
def captioned(rows):
    """Captions that the words 'red boat' find: the top rows of the CLIP ranking, rows near
    rank 150 (found by both rankings only when each keeps more than 150), a tie of identical
    captions, two models' captions of one row (its best counts) and a stale caption."""
    conn, q = rows
    order = [r[0] for r in conn.execute(
        "SELECT id FROM clipsql.images ORDER BY (embedding <=> %s) + 0, id", [HalfVector(q)])]
    captions = [(order[0], "m", "red boat red boat"), (order[1], "m", "a red boat"),
                (order[150], "m", "red boat red boat red"), (order[151], "m", "red boat"),
                (order[152], "m", "red boat"), (order[40], "m", "boat"),
                (order[40], "other", "red boat red"), (order[7], "m", "a green boat")]
    conn.cursor().executemany("INSERT INTO clipsql.captions (image_id, model, caption) VALUES (%s, %s, %s)",
                     captions)
    conn.execute("INSERT INTO clipsql.captions (image_id, model, caption, image_sha256) "
                 "VALUES (%s, 'm', 'red boat red boat red boat', 'stale')", [order[3]])
    for text in ("red boat", "zebra"):
        conn.execute("INSERT INTO clipsql.text_embeddings (query, embedding) VALUES (%s, %s)",
                     [text, HalfVector(q)])
    return conn, q


def hybrid_both(conn, q, text, k, rrf_k, candidates, sql_candidates="same", weights=None):
    weights = weights or {}

    def python():
        return [(h.id, h.score, h.clip_rank, h.text_rank, h.ocr_rank) for h in hybrid.hybrid(
            conn, q, text, limit=k, rrf_k=rrf_k, candidates=candidates, strategy="exact",
            weights=weights)]

    def sql():
        return [tuple(r) for r in conn.execute(
            "SELECT id, score, clip_rank, text_rank, ocr_rank "
            "FROM clipsql.hybrid_search(%s, %s, %s, %s, %s, %s, %s)",
            [text, k, rrf_k, candidates if sql_candidates == "same" else sql_candidates,
             *(weights.get(n, 1) for n in hybrid.RANKINGS)])]
    return both(conn, python, sql)


@pytest.fixture
def read_words(captioned):
    """:func:`captioned` plus words read in images (``clipsql.ocr``): rows the CLIP and
    caption rankings also find, rows only OCR finds, a tie, and a stale OCR row."""
    conn, q = captioned
    order = [r[0] for r in conn.execute(
        "SELECT id FROM clipsql.images ORDER BY (embedding <=> %s) + 0, id", [HalfVector(q)])]
    words = [(order[0], "RED BOAT for sale"), (order[160], "red boat red boat"),
             (order[170], "boat red"), (order[171], "boat red"), (order[2], "green car"),
             (order[40], "the red boat")]
    conn.cursor().executemany(
        "INSERT INTO clipsql.ocr (image_id, engine, languages, text) "
        "VALUES (%s, 'tesseract', 'eng', %s)", words)
    conn.execute("INSERT INTO clipsql.ocr (image_id, engine, languages, text, image_sha256) "
                 "VALUES (%s, 'tesseract', 'eng', 'red boat red boat red boat', 'stale')",
                 [order[5]])
    return conn, q


@pytest.mark.parametrize("text, k, rrf_k, candidates", [
    ("red boat", 10, 60, 100), ("red boat", 10, 0, 100), ("red boat", 5, 60, 3),
    ("red boat", 50, 1, 20), ("red boat", 3, 1000, 200), ("red boat", 40, 60, 160),
    ("red boat", 400, 60, 1), ("zebra", 10, 60, 100)])
def test_hybrid_search_fuses_the_same_ranking(captioned, text, k, rrf_k, candidates):
    py, sql = hybrid_both(*captioned, text, k, rrf_k, candidates)
    assert py == sql and isinstance(py, list) and len(py) == min(k, N)


@pytest.mark.parametrize("weights, k, candidates", [
    ({}, 10, 100), ({}, 30, 165), ({"ocr": 3}, 10, 100), ({"clip": 0}, 10, 100),
    ({"clip": 0, "text": 0}, 10, 100), ({"text": 0.5, "ocr": 2.5}, 20, 200),
    ({"clip": 0.25}, 5, 3)])
def test_hybrid_search_with_words_in_images_fuses_the_same_ranking(read_words, weights, k,
                                                                   candidates):
    py, sql = hybrid_both(*read_words, "red boat", k, 60, candidates, weights=weights)
    assert py == sql and py
    # the fusion itself: each score is the weighted sum over the rankings that found the row,
    # best first, ties by id
    w = [weights.get(n, 1) for n in hybrid.RANKINGS]
    for _, score, *ranks in py:
        assert score == pytest.approx(sum(x / (60 + r) for x, r in zip(w, ranks) if r), rel=1e-12)
    assert py == sorted(py, key=lambda r: (-r[1], r[0]))
    if weights.get("clip") == 0:
        assert all(r[2] is None for r in py)
    assert any(r[4] is not None for r in py)  # the OCR ranking took part


@pytest.mark.parametrize("weights", [
    {"clip": -1}, {"ocr": float("nan")}, {"text": float("inf")}, {"clip": 0, "text": 0, "ocr": 0}])
def test_hybrid_search_refuses_the_same_weights(read_words, weights):
    assert hybrid_both(*read_words, "red boat", 10, 60, 100, weights=weights) == (
        QueryError, "SQLSTATE 22")


@pytest.mark.parametrize("k, rrf_k, candidates", [
    (0, 60, 100), (None, 60, 100), (10, -1, 100), (10, None, 100), (10, 60, 0), (10, 60, -5)])
def test_hybrid_search_refuses_the_same_inputs(captioned, k, rrf_k, candidates):
    assert hybrid_both(*captioned, "red boat", k, rrf_k, candidates) == (
        QueryError, "SQLSTATE 22")


def test_hybrid_search_defaults_are_pythons(captioned):
    conn, q = captioned
    signature = ("clipsql.hybrid_search(text, integer, integer, integer, double precision, "
                 "double precision, double precision, text)")
    assert sql_default(conn, signature, "rrf_k") == hybrid.RRF_K
    assert sql_default(conn, signature, "candidates") == hybrid.CANDIDATES
    # a NULL candidates is the default too; the data tell 100 candidates from 160
    py, sql = hybrid_both(conn, q, "red boat", 10, hybrid.RRF_K, hybrid.CANDIDATES,
                          sql_candidates=None)
    assert py == sql
    assert hybrid_both(conn, q, "red boat", 10, hybrid.RRF_K, 160)[0] != py


def test_search_of_a_text_is_the_same_ranking_from_every_surface(captioned):
    """clipsql.search (0019), clipsql.search_images (0020, with and without a filter) and the
    Python API rank a stored text alike."""
    conn, q = captioned
    py = [(h.id, h.path) for h in search.rank(conn, q, limit=10, strategy="exact")]
    assert [tuple(r) for r in conn.execute(
        "SELECT id, path FROM clipsql.search('red boat', 10)")] == py
    assert [tuple(r) for r in conn.execute(
        "SELECT id, path FROM clipsql.search_images('red boat', 10)")] == py
    assert [tuple(r) for r in conn.execute(
        "SELECT id, path FROM clipsql.search_images('red boat', 10, 'id % 2 = 0')")] == [
        (h.id, h.path) for h in search.rank(conn, q, where="id %% 2 = 0", limit=10,
                                            strategy="exact")]


# -- hnsw.ef_search ------------------------------------------------------------------------

@pytest.mark.parametrize("base", [1, 40, 200, 1000])
def test_ef_search_for_is_the_one_rule(conn, base):
    conn.execute("SELECT '[1]'::halfvec")  # pgvector's library loaded: its settings exist
    for k in sorted({1, base - 1, base, base + 1, 999, 1000, 1001, 5000} - {0}):
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL hnsw.ef_search = {base}")
            got = conn.execute("SELECT clipsql.ef_search_for(%s)", [k]).fetchone()[0]
        assert got == min(1000, max(k, 200, base)), k


def test_the_ef_search_cap_is_pgvectors(rows):
    conn, _ = rows
    conn.execute("SELECT '[1]'::halfvec")
    cap = conn.execute("SELECT clipsql.ef_search_for(1000000)").fetchone()[0]
    max_val = conn.execute("SELECT max_val::int FROM pg_settings "
                           "WHERE name = 'hnsw.ef_search'").fetchone()[0]
    assert cap == max_val
    # the binary index's candidates never pass it
    hnsw.set_index_kind(conn, "binary", oversample=1000)
    assert conn.execute("SELECT max(clipsql._binary_candidates(k)) FROM generate_series(1, 999) k"
                        ).fetchone()[0] == max_val


# -- the binary index ----------------------------------------------------------------------

def _binary_scans(conn):
    return conn.execute("SELECT coalesce(pg_stat_get_xact_numscans(to_regclass(%s)), 0)",
                        [f"clipsql.{hnsw.BINARY_INDEX_NAME}"]).fetchone()[0]


def _sql_candidates(conn, q, limit):
    """clipsql.rank_images from SQL: whether it scanned the binary index, and the candidates
    it re-ranked."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL enable_seqscan = off")
        before = _binary_scans(conn)
        conn.execute("SELECT count(*) FROM clipsql.rank_images(%s, %s)", [HalfVector(q), limit])
        used = _binary_scans(conn) > before
        got = conn.execute("SELECT current_setting('clipsql_rank.candidates')").fetchone()[0]
    return used, int(got) if got else None


def test_the_binary_plan_is_the_sql_rule(rows):
    conn, q = rows
    assert search.rank(conn, q, limit=10).candidates is None  # kind halfvec
    assert _sql_candidates(conn, q, 10) == (False, None)
    hnsw.set_index_kind(conn, "binary", oversample=40)
    for oversample in (1, 40, 1000):
        conn.execute("UPDATE clipsql.index_config SET oversample = %s", [oversample])
        for limit in (1, 10, 24, 25, 26, 999):
            sql = conn.execute("SELECT clipsql._binary_candidates(%s)", [limit]).fetchone()[0]
            assert limit <= sql <= 1000
            assert search.rank(conn, q, limit=limit).candidates == sql  # the Python API
            assert _sql_candidates(conn, q, limit) == (True, sql)  # SQL
    # from pgvector's cap on, every surface ranks without the binary index
    assert search.rank(conn, q, limit=1000).candidates is None
    assert _sql_candidates(conn, q, 1000) == (False, None)
    # the SQL rule finds the index by the name Python builds it under
    conn.execute(f"DROP INDEX clipsql.{hnsw.BINARY_INDEX_NAME}")
    assert conn.execute("SELECT clipsql._binary_candidates(10)").fetchone()[0] is None
    assert search.rank(conn, q, limit=10).candidates is None
    assert hnsw.ensure_index(conn)
    assert search.rank(conn, q, limit=10).candidates == conn.execute(
        "SELECT clipsql._binary_candidates(10)").fetchone()[0] == 1000  # oversample 1000


# -- index kinds ---------------------------------------------------------------------------

def _check(conn, column):
    return conn.execute(
        "SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_attribute a "
        "ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) WHERE k.contype = 'c' "
        "AND k.conrelid = 'clipsql.index_config'::regclass AND a.attname = %s",
        [column]).fetchone()[0]


def _fetch(conn, sql, value):
    return conn.execute(sql, [value]).fetchone()[0]


def test_index_kinds_are_the_check_constraint(conn):
    allowed = tuple(re.findall(r"'([^']*)'::text", _check(conn, "kind")))
    assert allowed == hnsw.KINDS
    default = conn.execute("SELECT kind FROM clipsql.index_config").fetchone()[0]
    assert hnsw.index_kind(conn)[0] == default == hnsw.KINDS[0]
    for kind in (*hnsw.KINDS, "ivfflat", "HALFVEC", ""):
        py, got = both(conn, partial(hnsw.index_name, kind), partial(
            _fetch, conn, "UPDATE clipsql.index_config SET kind = %s RETURNING kind", kind))
        assert (py is QueryError) == (got == "SQLSTATE 23"), kind


def test_oversample_bounds_are_the_check_constraint(conn):
    assert "oversample" in _check(conn, "oversample")
    for oversample in (-1, 0, 1, 2, 999, 1000, 1001):
        py, got = both(conn, partial(hnsw.set_index_kind, conn, "halfvec", oversample=oversample),
                       partial(_fetch, conn, "UPDATE clipsql.index_config SET oversample = %s "
                               "RETURNING oversample", oversample))
        assert (py is QueryError) == (got == "SQLSTATE 23"), oversample
