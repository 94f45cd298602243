"""Cold start: wall time of `clipsql search ...` in a new process, per kind of query.

    python benchmarks/cold_start.py [--runs 5]

Makes a ViT-B-32 checkpoint with random weights, loads a few generated images into a fresh
CLIPSQL_HOME (embedded PostgreSQL, kept running with `clipsql db start` as a user's would
be), then times new `python -m clipsql ...` processes (warm disk cache: each kind runs once
untimed first). "new text, full model" deletes the exported text tower before each run, so
it measures torch + open_clip + building the model; "new text, exported tower" is the
default path from the second text query on. Prints medians and the ratio of the two. Last,
the same query with the embedded server stopped: the command starts it and stops it again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import scratch_dir


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
    import open_clip
    import torch
    from PIL import Image

    tmp = scratch_dir("clipsql-cold-")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), tmp / "vit-b-32.pt")
    photos = tmp / "photos"
    photos.mkdir()
    for i in range(8):
        Image.new("RGB", (320, 240), (30 * i, 255 - 30 * i, 90)).save(photos / f"{i}.jpg")
    env = {**os.environ, "CLIPSQL_HOME": str(tmp / "home"),
           "CLIPSQL_MODEL": f"ViT-B-32/{tmp / 'vit-b-32.pt'}"}
    env.pop("CLIPSQL_DATABASE_URL", None)
    cli = [sys.executable, "-m", "clipsql"]
    try:
        subprocess.run([*cli, "db", "start"], env=env, check=True, capture_output=True)
        subprocess.run([*cli, "load", str(photos)], env=env, check=True, capture_output=True)
        subprocess.run([*cli, "embed-text", "a searched text"], env=env, check=True,
                       capture_output=True)  # also exports the text tower
        export = tmp / "home" / "cache" / "text"
        rows = {}

        def measure(name, make_cmd, before=None):
            times = []
            for i in range(args.runs + 1):  # run 0 warms the disk cache, untimed
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
        measure("new text, full model (no export)", lambda i: [*cli, "search", f"full model {i}"],
                before=lambda: shutil.rmtree(export, ignore_errors=True))
        subprocess.run([*cli, "search", "export again"], env=env, check=True, capture_output=True)
        assert export.is_dir(), "the text tower was not exported"
        measure("new text, exported tower", lambda i: [*cli, "search", f"exported tower {i}"])
        print(f"new text: exported tower is {rows['new text, full model (no export)'] / rows['new text, exported tower']:.1f}x faster "
              f"than loading the model ({sys.version.split()[0]}, {os.cpu_count()} cores)")
        subprocess.run([*cli, "db", "stop"], env=env, check=True, capture_output=True)
        measure("same, server not running (start + stop)",
                lambda i: [*cli, "search", f"server stopped {i}"])
    finally:
        subprocess.run([*cli, "db", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
