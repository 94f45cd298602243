"""Peak memory of the web server for hostile uploads: container files whose directory says
256x256 or 1024x1024 but that hold a 13000x13000 PNG (a complete one: black pixels, about
0.5 MB), alone and three at once, a 1-bit 13000x13000 PNG (a decompression bomb), and an
ordinary camera JPEG for reference; and for a hostile search filter (issue 22:
``repeat('x',300000000)``, five times), refused by its parser.

Each hostile case prints the bound on its peak above idle that the tests asserted on whatever
machine ran them until issue 31 (tests/integration/test_upload_memory.py: 300 MB for the
containers; test_web_hostile.py: 500 MiB for the bomb, 50 MiB for the filter), and whether it
was met here; the tests now assert the behaviour (refused from the headers, never sent to
PostgreSQL).

    python benchmarks/upload_memory.py                     # a small random model
    python benchmarks/upload_memory.py --model ARCH/CHECKPOINT
    cd OTHER_CHECKOUT && PYTHONPATH=$PWD python /path/to/benchmarks/upload_memory.py   # its clipsql

The server is ``create_app`` + ``serve_in_thread`` in a process of its own on a collection of
a few small images in a scratch embedded PostgreSQL, a new one for each case (memory a case
frees but keeps would hide the next case's peak). For each case: its VmRSS idle, the peak
reset (``echo 5 > /proc/PID/clear_refs``; where the kernel refuses, VmHWM includes the
start-up), the upload(s), then VmHWM (the peak) and VmRSS (what it keeps) from
/proc/PID/status. Default model: the tests' tiny CLIP config (32-d, 64 px) with seeded random
weights; an upload's file is decoded the same way whatever the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import ENV_CACHE, SERVER, camera_jpeg, print_machine, proc_status, scratch_dir
from hostile import UNDER, giant_png, icns_with, ico_with, png_bomb_1bit

SIDE = UNDER  # the giant frame's side
TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}

def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Server:
    def __init__(self, spec: str, env: dict, settle: float = 1.0):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, spec], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        info = json.loads(self.proc.stdout.readline() or "null")
        if not info:
            raise SystemExit(f"the web server did not start (exit {self.proc.wait()})")
        self.url, self.pid = info["url"], info["pid"]
        time.sleep(settle)  # its threads started, its memory settled before the idle figure

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def post(url: str, name: str, data: bytes) -> str:
    if name.startswith("where="):  # not an upload: a text search with this filter
        r = httpx.get(f"{url}/api/search", params={"q": "x", "where": name[6:]}, timeout=600)
    else:
        kind = "image/jpeg" if name.endswith(".jpg") else "application/octet-stream"
        r = httpx.post(f"{url}/api/search/image?limit=3", files={"file": (name, data, kind)},
                       timeout=600)
    detail = "" if r.status_code == 200 else ": " + r.json().get("detail", "")[:90]
    return f"{r.status_code}{detail}"


def measure(spec: str, env: dict, what: str, uploads: list, bound_mb: float | None = None,
            settle: float = 1.0) -> None:
    server = Server(spec, env, settle)
    try:
        if uploads[0][0].startswith("where="):  # a filter's first use imports the parser: untimed
            post(server.url, *uploads[0])
        fresh = reset_peak(server.pid)
        before = {k: v / 1024 for k, v in proc_status(server.pid).items()}  # MB
        started = time.perf_counter()
        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(lambda u: post(server.url, *u), uploads))
        took = time.perf_counter() - started
        after = {k: v / 1024 for k, v in proc_status(server.pid).items()}
    finally:
        server.close()
    grew = after['VmHWM'] - before['VmRSS']
    peak = f"{grew:+,.0f} MB" if fresh else "(not reset: start-up incl.)"
    bound = ""
    if bound_mb is not None:
        verdict = "met" if fresh and grew < bound_mb else "NOT MET" if fresh else "not measured"
        bound = f"; bound: peak under +{bound_mb:,.0f} MB above idle: {verdict}"
    print(f"{what}: idle VmRSS {before['VmRSS']:,.0f} MB, peak VmHWM {after['VmHWM']:,.0f} MB "
          f"{peak}, VmRSS after {after['VmRSS']:,.0f} MB, {took:.2f} s; "
          f"answers: {'; '.join(sorted(set(answers)))}{bound}", flush=True)


def tiny_model(tmp: Path) -> str:
    import open_clip
    import torch

    configs = tmp / "configs"
    configs.mkdir()
    (configs / "bench-tiny.json").write_text(json.dumps(TINY))
    os.environ["CLIPSQL_MODEL_CONFIGS"] = str(configs)
    open_clip.add_model_config(configs)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("bench-tiny").state_dict(), tmp / "tiny.pt")
    return f"bench-tiny/{tmp / 'tiny.pt'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="ARCH/CHECKPOINT (default: a tiny CLIP with random weights)")
    ap.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                    help="wait after each server's start before its idle figure (default 1)")
    args = ap.parse_args()
    print_machine()
    import clipsql

    print(f"clipsql from {Path(clipsql.__file__).parent}", flush=True)
    tmp = scratch_dir("clipsql-upload-memory-")
    # the model's export: in $CLIPSQL_BENCH_CACHE where set (the tests share theirs), else here
    env = {**os.environ, "CLIPSQL_HOME": str(tmp / "home"),
           "CLIPSQL_CACHE": os.environ.get(ENV_CACHE) or str(tmp / "cache"),
           "PYTHONWARNINGS": "ignore"}
    env.pop("CLIPSQL_DATABASE_URL", None)
    spec = args.model or tiny_model(tmp)
    if os.environ.get("CLIPSQL_MODEL_CONFIGS"):
        env["CLIPSQL_MODEL_CONFIGS"] = os.environ["CLIPSQL_MODEL_CONFIGS"]
    photos = tmp / "photos"
    photos.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (96, 72), (60 * i, 90, 200 - 40 * i)).save(photos / f"p{i}.png")
    subprocess.run([sys.executable, "-m", "clipsql", "load", str(photos), "--model", spec],
                   env=env, check=True, capture_output=True)
    t = time.perf_counter()
    frame = giant_png()
    icns, ico, photo = icns_with(frame), ico_with(frame), camera_jpeg()
    print(f"made the files in {time.perf_counter() - t:.1f} s: ICNS {len(icns) / 1000:,.0f} KB, "
          f"ICO {len(ico) / 1000:,.0f} KB (a {SIDE}x{SIDE} PNG each), camera JPEG "
          f"{len(photo) / 1e6:.1f} MB", flush=True)
    bomb = png_bomb_1bit(0)[0]
    repeat = "where=CAST(repeat('x',300000000) AS int)=1"
    # (what, uploads, bound on the peak above idle in MB, from the tests that asserted it)
    cases = [("camera JPEG 4000x3000", [("photo.jpg", photo)], None),
             (f"ICNS, ic10 holding a {SIDE}x{SIDE} PNG", [("giant.icns", icns)], 300),
             (f"ICO, one 256x256 entry holding a {SIDE}x{SIDE} PNG", [("giant.ico", ico)], 300),
             ("three ICO at once", [(f"giant{i}.ico", ico) for i in range(3)], 300),
             ("three ICNS at once", [(f"giant{i}.icns", icns) for i in range(3)], 300),
             (f"PNG, 1-bit {SIDE}x{SIDE} ({len(bomb) / 1000:,.0f} KB)", [("bomb.png", bomb)],
              500 * 1.048576),
             ("filter repeat('x',300000000), five times", [(repeat, b"")] * 5,
              50 * 1.048576)]
    try:
        for what, uploads, bound_mb in cases:
            measure(spec, env, what, uploads, bound_mb, args.settle)
    finally:
        subprocess.run([sys.executable, "-m", "clipsql", "db", "stop"], env=env, capture_output=True)

if __name__ == "__main__":
    main()
