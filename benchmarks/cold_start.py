"""Cold start: wall time of `clipsql search ...` in a new process, per kind of query.

    python benchmarks/cold_start.py [--runs 5]

Makes a ViT-B-32 checkpoint with random weights (``$CLIPSQL_BENCH_CHECKPOINT``: an existing
ViT-B-32 state_dict instead), loads a few generated images into a fresh CLIPSQL_HOME
(embedded PostgreSQL, kept running with `clipsql db start` as a user's would be; the first
load makes the checkpoint's ONNX export, timed), then times new `python -m clipsql ...`
processes (warm disk cache: each kind runs once untimed first). "new text" embeds on the
cached export (ONNX Runtime, no torch); "new text, no export" removes the cache first, so
that one command exports the checkpoint again (once: it takes a minute). Prints medians
and the ratio of the two. Last, the same query with the embedded server stopped: the
command starts it and stops it again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import print_machine, random_vitb32, scratch_dir


def timed(cmd, env) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print_machine()
    from PIL import Image

    tmp = scratch_dir("clipsql-cold-")
    spec = random_vitb32(tmp)  # sets CLIPSQL_HOME and CLIPSQL_CACHE (scratch)
    photos = tmp / "photos"
    photos.mkdir()
    for i in range(8):
        Image.new("RGB", (320, 240), (30 * i, 255 - 30 * i, 90)).save(photos / f"{i}.jpg")
    env = {**os.environ, "CLIPSQL_MODEL": spec}
    env.pop("CLIPSQL_DATABASE_URL", None)
    cli = [sys.executable, "-m", "clipsql"]
    try:
        subprocess.run([*cli, "db", "start"], env=env, check=True, capture_output=True)
        first_load = timed([*cli, "load", str(photos)], env)
        print(f"first load (8 images, the checkpoint's export included): {first_load:.1f} s",
              flush=True)
        subprocess.run([*cli, "embed-text", "a searched text"], env=env, check=True,
                       capture_output=True)
        cache = Path(env["CLIPSQL_CACHE"])
        rows = {}

        def measure(name, make_cmd, before=None, runs=args.runs):
            times = []
            for i in range(runs + 1):  # run 0 warms the disk cache, untimed
                if before:
                    before()
                t = timed(make_cmd(i), env)
                if i:
                    times.append(t)
            rows[name] = statistics.median(times)
            print(f"{name:<40} median {rows[name]:5.2f} s  (runs: "
                  + ", ".join(f"{t:.2f}" for t in times) + ")", flush=True)

        measure("python -c 'import torch'", lambda i: [sys.executable, "-c", "import torch"])
        measure("python -c 'import open_clip'", lambda i: [sys.executable, "-c", "import open_clip"])
        measure("python -m clipsql --help", lambda i: [*cli, "--help"])
        measure("image id (clipsql similar 1)", lambda i: [*cli, "similar", "1"])
        measure("text searched before", lambda i: [*cli, "search", "a searched text"])
        measure("new text (export cached)", lambda i: [*cli, "search", f"exported {i}"])
        measure("new text, no export (exports first)", lambda i: [*cli, "search", f"no export {i}"],
                before=lambda: shutil.rmtree(cache, ignore_errors=True), runs=1)
        print(f"new text: the cached export is {rows['new text, no export (exports first)'] / rows['new text (export cached)']:.1f}x "
              f"faster than a first use that exports ({sys.version.split()[0]}, {os.cpu_count()} cores)")
        subprocess.run([*cli, "db", "stop"], env=env, check=True, capture_output=True)
        measure("same, server not running (start + stop)",
                lambda i: [*cli, "search", f"server stopped {i}"])
    finally:
        subprocess.run([*cli, "db", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
