"""The attacks of issue 28 on the current code (and, with ``--rev``, on an older revision in the
same run): peak memory and seconds of each.

    python benchmarks/media_attacks.py                    # the current checkout, default sizes
    python benchmarks/media_attacks.py --rev 8b6eb81      # ... and that revision, for before/after
    python benchmarks/media_attacks.py --side 12800 --timeout 600   # the issue's full-size video

The attack files are made first (not timed), in a scratch folder:

* **refs16**: an H.264 MP4 of ``--side`` x ``--side`` pixels (default 4096; the issue's is
  12800, 169 Mpx, under the 180 Mpx cap), 34 flat frames at 1 fps, one keyframe, encoded
  with ``refs=16, bframes=0, g=1000``: a few tens of KB that make a decoder hold 16
  reference frames;
* **skip**: ``--skip-size`` (default 4096x2160) at 4 fps, one keyframe then ``--skip-frames``
  (default 480) skip frames of a few bytes each: cheap to store, slow to decode;
* **sparse**: a 20 GB sparse ``.mp4`` (``truncate``: nothing on disk).

Each attack runs in processes of its own (``python -m clipsql`` and the web server of
benchmarks/common.py), with ``PYTHONPATH`` and the working folder at the code under test, its
own ``CLIPSQL_HOME`` (an embedded PostgreSQL) and the same tiny model (decoding does not depend
on it):

* ``load refs16`` / ``load skip`` / ``load sparse``: ``clipsql load`` of a folder holding that
  one file; the peak RSS is the loader's (``wait4``: the largest of it and the processes it
  waited for), the seconds its wall time;
* ``web flood``: the server on the collection with the refs16 video loaded, ``--flood``
  (default 42) concurrent GETs of ``/thumbs/ID`` and ``/images/ID`` for its moments, while
  ``/api/status`` is asked every 0.25 s; the peak is the server's VmHWM (reset first where the
  kernel allows), the seconds the flood's, plus the slowest ``/api/status`` and the answers;
* ``web sparse``: the loaded refs16 video replaced by a 20 GB sparse file, 45 concurrent
  ``GET /videos/ID`` (the same measures).

* ``load NAME`` (``--corpus DIR``, repeatable): ``clipsql load`` of any folder, whole, e.g.
  Pillow's own test corpus (``pip download --no-deps --no-binary :all: pillow==13.0.0``, then
  ``--corpus pillow-13.0.0/Tests/images``: 1,060 files, bombs, truncated and exotic ones).

``--only load`` or ``--only web`` runs one group. An attack that runs past ``--timeout`` is
killed and shown as such. ``--rev REV`` exports that
revision with ``git archive`` into the scratch folder (the repository is not touched) and runs
the same attacks on it first, so "before" and "after" come from one run on one machine. The
first lines are the machine (CPU model and features, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import ROOT, SERVER, load_average, print_machine, proc_status, scratch_dir
from upload_memory import reset_peak, tiny_model

SPARSE_BYTES = 20 << 30
#: Runs a command and prints the peak RSS (KiB) of it and the processes it waited for. A
#: process of its own, so that the peak is not this script's: Linux carries a parent's peak
#: RSS over fork and exec into the child's ``ru_maxrss``, and this script's is large.
PEAK = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); "
        "sys.exit(rc)")


# --- the attack files ----------------------------------------------------------------------
def h264(path: Path, width: int, height: int, frames: int, fps: int, options: dict) -> Path:
    """An MP4 of ``frames`` identical flat frames, encoded by libx264 with ``options``."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", **options}
        picture = av.VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8),
                                             format="rgb24")
        for _ in range(frames):
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def sparse(path: Path, size: int = SPARSE_BYTES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        os.truncate(f.fileno(), size)
    return path


def build(tmp: Path, args) -> dict[str, Path]:
    started = time.perf_counter()
    w, h = map(int, args.skip_size.lower().split("x"))
    made = {
        "refs16": h264(tmp / "files" / "refs16" / "refs16.mp4", args.side, args.side, 34, 1,
                       {"refs": "16", "bf": "0", "g": "1000"}),
        "skip": h264(tmp / "files" / "skip" / "skip.mp4", w, h, args.skip_frames, 4,
                     {"bf": "0", "g": "100000", "sc_threshold": "0"}),
        "sparse": sparse(tmp / "files" / "sparse" / "sparse.mp4"),
    }
    print(f"made the files in {time.perf_counter() - started:.1f} s: refs16 {args.side}x"
          f"{args.side} {made['refs16'].stat().st_size / 1000:,.0f} KB; skip {w}x{h} "
          f"{args.skip_frames} frames {made['skip'].stat().st_size / 1000:,.0f} KB; sparse "
          f"{SPARSE_BYTES >> 30} GB ({made['sparse'].stat().st_blocks * 512 // 1024} KB on disk)",
          flush=True)
    return made


# --- running the code under test ---------------------------------------------------------------
class Code:
    """One version of clipsql: its folder, and the environment its processes run in."""

    def __init__(self, label: str, root: Path, tmp: Path, spec: str):
        self.label, self.root, self.spec = label, root, spec
        self.home = tmp / f"home-{label}"
        self.env = {**os.environ, "PYTHONPATH": str(root), "CLIPSQL_HOME": str(self.home),
                    "CLIPSQL_CACHE": str(tmp / "cache"), "PYTHONWARNINGS": "ignore"}
        self.env.pop("CLIPSQL_DATABASE_URL", None)

    def where(self) -> str:
        out = subprocess.run([sys.executable, "-c", "import clipsql; print(clipsql.__file__)"],
                             env=self.env, cwd=self.root, capture_output=True, text=True)
        return out.stdout.strip() or out.stderr.strip()[-200:]

    def load(self, folder: Path, timeout: float) -> dict:
        """``clipsql load FOLDER``: peak RSS (MB), seconds, and how it ended."""
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", PEAK, sys.executable, "-m", "clipsql",
                                 "load", str(folder), "--model", self.spec], env=self.env,
                                cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the loader and the wrapper (the session this started)
            output, _ = proc.communicate()
            killed = True
        took = time.perf_counter() - started
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        peak = next((int(line.split()[1]) for line in lines if line.startswith("PEAK ")), 0)
        lines = [line for line in lines if not line.startswith("PEAK ")]
        if killed:
            ended = f"killed after {timeout:g} s"
        else:
            ended = f"exit {proc.returncode}: " + (" | ".join(lines[-2:])[:160] if lines else "")
        return {"peak_mb": peak / 1024, "seconds": took, "ended": ended}

    def stop_database(self) -> None:
        subprocess.run([sys.executable, "-m", "clipsql", "db", "stop"], env=self.env,
                       cwd=self.root, capture_output=True)


class Server:
    def __init__(self, code: Code):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, code.spec], env=code.env,
                                     cwd=code.root, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        info = json.loads(self.proc.stdout.readline() or "null")
        if not info:
            raise SystemExit(f"the web server did not start (exit {self.proc.wait()})")
        self.url, self.pid = info["url"], info["pid"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def flood(server: Server, urls: list[str], timeout: float, headers=None) -> dict:
    """GET ``urls`` all at once while a poller asks /api/status every 0.25 s: the server's
    peak (MB), the flood's seconds, the answers, the slowest status."""
    fresh = reset_peak(server.pid)
    before = proc_status(server.pid)
    latencies: list[float] = []
    done = threading.Event()

    def poll():
        with httpx.Client(base_url=server.url, timeout=timeout) as c:
            while not done.is_set():
                t = time.perf_counter()
                try:
                    c.get("/api/status")
                except httpx.HTTPError:
                    pass
                latencies.append(time.perf_counter() - t)
                done.wait(0.25)

    def get(url):
        try:
            return str(httpx.get(server.url + url, headers=headers, timeout=timeout).status_code)
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    poller = threading.Thread(target=poll, daemon=True)
    started = time.perf_counter()
    poller.start()
    with ThreadPoolExecutor(len(urls)) as pool:
        answers = Counter(pool.map(get, urls))
    took = time.perf_counter() - started
    done.set()
    poller.join(timeout)
    after = proc_status(server.pid)
    return {"peak_mb": after["VmHWM"] / 1024, "seconds": took,
            "ended": (f"answers {dict(sorted(answers.items()))}; /api/status slowest "
                      f"{max(latencies, default=float('nan')):.2f} s of {len(latencies)}; idle "
                      f"{before['VmRSS'] / 1024:,.0f} MB" + ("" if fresh else
                                                             " (peak not reset: start-up incl.)"))}


def moments(server: Server, name: str) -> list[int]:
    """The row ids of the moments of the video called ``name``."""
    r = httpx.get(server.url + "/api/search", params={"q": "a video", "limit": 100}, timeout=120)
    r.raise_for_status()
    return [h["id"] for h in r.json()["results"]
            if h.get("start_s") is not None and h.get("name") == name]


def web_attacks(code: Code, made: dict[str, Path], args, report) -> None:
    """The flood of moment previews and the sparse video, on the web server."""
    if "load" not in args.only:  # the web attacks need the refs16 video loaded
        code.load(made["refs16"].parent, args.timeout)
    server = Server(code)
    try:
        ids = moments(server, made["refs16"].name)
        if not ids:
            print(f"{code.label:>10} | web attacks  | skipped: the refs16 video has no "
                  f"moments in this collection", flush=True)
            return
        urls = [f"/{'thumbs' if i % 2 else 'images'}/{ids[i % len(ids)]}"
                for i in range(args.flood)]
        report("web flood", flood(server, urls, args.timeout))
        video = made["refs16"]
        kept = video.with_name("kept.bin")
        os.replace(video, kept)
        try:
            sparse(video)
            report("web sparse", flood(server, [f"/videos/{ids[0]}"] * 45, args.timeout,
                                       headers={"Range": "bytes=0-99"}))
        finally:
            os.replace(kept, video)
    finally:
        server.close()


def attacks(code: Code, made: dict[str, Path], args) -> list[tuple[str, dict]]:
    print(f"--- {code.label}: clipsql from {code.where()}", flush=True)
    found = []

    def report(what, result):
        found.append((what, result))
        print(f"{code.label:>10} | {what:<12} | peak {result['peak_mb']:8,.0f} MB | "
              f"{result['seconds']:7.1f} s | {result['ended']}", flush=True)

    try:
        for kind in ("refs16", "skip", "sparse"):
            if "load" in args.only:
                report(f"load {kind}", code.load(made[kind].parent, args.timeout))
        if "web" in args.only:
            web_attacks(code, made, args, report)
        for corpus in args.corpus:  # any folder, e.g. Pillow's own test images (last: the
            report(f"load {corpus.name}", code.load(corpus, args.timeout))  # web's rows first)
    finally:
        code.stop_database()
    return found


def export(rev: str, tmp: Path) -> Path:
    """Revision ``rev`` of this repository as plain files (``git archive``: no worktree, the
    repository's state untouched)."""
    target = tmp / f"rev-{rev.replace('/', '_')}"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", help="also run the attacks on this git revision (first)")
    ap.add_argument("--side", type=int, default=4096, help="the refs16 video's side (px)")
    ap.add_argument("--skip-size", default="4096x2160", help="the skip video's WxH")
    ap.add_argument("--skip-frames", type=int, default=480)
    ap.add_argument("--flood", type=int, default=42, help="concurrent media GETs")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per attack")
    ap.add_argument("--model", help="ARCH/CHECKPOINT (default: a tiny CLIP, random weights)")
    ap.add_argument("--corpus", type=Path, action="append", default=[], metavar="DIR",
                    help="also load this folder whole (peak RSS, seconds): e.g. Pillow's "
                         "Tests/images from its sdist (see docs/performance.md)")
    ap.add_argument("--only", default="load,web",
                    help="which attacks: load, web or both (default load,web)")
    args = ap.parse_args()
    args.only = set(args.only.split(","))
    print_machine()
    tmp = scratch_dir("clipsql-media-attacks-")
    spec = args.model or tiny_model(tmp)
    made = build(tmp, args)
    codes = []
    if args.rev:
        codes.append(Code(args.rev, export(args.rev, tmp), tmp, spec))
    codes.append(Code("current", ROOT, tmp, spec))
    results = {}
    for code in codes:
        results[code.label] = attacks(code, made, args)
        shutil.rmtree(code.home, ignore_errors=True)
    print(f"machine: {load_average()} at the end", flush=True)
    if len(codes) == 2:
        print("before -> after (peak MB, seconds):")
        after = dict(results["current"])
        for what, old in results[args.rev]:
            new = after.get(what)
            if new:
                print(f"  {what:<12} {old['peak_mb']:8,.0f} -> {new['peak_mb']:8,.0f} MB   "
                      f"{old['seconds']:7.1f} -> {new['seconds']:7.1f} s")


if __name__ == "__main__":
    main()
