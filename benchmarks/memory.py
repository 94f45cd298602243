"""Peak memory: a whole ``clipsql load`` of hostile image files, the one-time export, and the
web server's peak above idle for one uploaded query image.

    python benchmarks/memory.py                     # 1000 hostile files, ViT-B-32
    python benchmarks/memory.py --count 200 --ordinary 100 --model ARCH/CHECKPOINT

Default model: ViT-B-32 with seeded random weights (``$CLIPSQL_BENCH_CHECKPOINT``: an existing
ViT-B-32 state_dict instead). Everything runs in a scratch folder (its own CLIPSQL_HOME with
an embedded PostgreSQL, its own CLIPSQL_CACHE), in this order:

1. The export, once, into a brand-new cache, as a first use runs it (``export.in_subprocess``:
   a process of its own). Its peak RSS: as for the loads below.
2. ``clipsql load`` of ``--ordinary`` small JPEGs (the export now cached): the reference peak.
3. ``clipsql load`` of ``--count`` hostile files (:mod:`hostile`, shuffled, some in folders
   up to 24 deep): decompression bombs (PNG/GIF/TIFF/JPEG/ICNS headers far over the limits;
   PNG/ICO/TIFF/PSD files of a few hundred bytes that declare 13000 x 13000, under every
   limit; a real 13000 x 13000 1-bit PNG of 20 KB), truncated JPEGs, empty files, files whose
   extension lies, a 400-frame GIF, 1 MB of EXIF/XMP, a zTXt chunk that unpacks to 64 MB,
   random bytes named .nef, and ordinary photos. Peak RSS of the whole command (``ru_maxrss``
   from ``os.wait4`` in a small launcher process: the largest of the command and the
   children it waited for), and what became of each kind (embedded, or failed with which
   reason).
4. The web server (``create_app`` + ``serve_in_thread`` in a new process, on the loaded
   collection): VmRSS idle (from /proc/PID/status), then one POST /api/search/image of a
   12 Mpx camera JPEG; VmHWM after it minus the idle VmRSS is its peak above idle. Then the
   same upload again and a 1-bit PNG of 39.7 Mpx (just under the upload limit), each with
   the peak reset first (``echo 5 > /proc/PID/clear_refs``, where the kernel allows it).

The embedded PostgreSQL server runs as its own processes (not counted in either figure).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import hostile
from common import SERVER, camera_jpeg, print_machine, proc_status, random_vitb32, scratch_dir

CLIPSQL = [sys.executable, "-m", "clipsql"]

#: Runs a command and writes its ru_maxrss (and that of the children it waited for) to a file.
LAUNCHER = r"""
import json, os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kib": usage.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}, f)
"""

#: The one-time export as a first use runs it (in a subprocess), and its peak.
EXPORT = r"""
import sys
from clipsql.models import export
export.in_subprocess(sys.argv[1])
"""

def mb(kib: float) -> str:
    return f"{kib / 1024:,.0f} MB"


def peak_of(cmd: list, env: dict, out: Path) -> tuple[float, float, int]:
    """(peak RSS in KiB, seconds, exit status) of a whole command, its output to ``out``.

    Through :data:`LAUNCHER`: on Linux a process's ``ru_maxrss`` starts from the RSS of the
    image it replaced at exec, which for ``subprocess`` (vfork) is its parent's; this
    process is large (it built the checkpoint), the launcher is not.
    """
    result = out.with_suffix(".rusage.json")
    with open(out, "wb") as sink:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, str(result), *cmd], env=env, stdout=sink,
                       stderr=subprocess.STDOUT, check=True)
        seconds = time.perf_counter() - started
    r = json.loads(result.read_text())
    return float(r["maxrss_kib"]), seconds, r["exit"]


def last_json(path: Path) -> dict:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON report in {path}:\n{path.read_text(errors='replace')[-3000:]}")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def upload(url: str, data: bytes, name: str, kind: str) -> dict:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
            f"\r\nContent-Type: {kind}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/search/image?limit=5", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def measure_export(spec: str, env: dict, tmp: Path) -> None:
    """The export's peak: :func:`export.in_subprocess` (what a first use runs: a process of
    its own), started from a small process (see :func:`peak_of`)."""
    from clipsql.models.spec import ModelSpec

    resolved = ModelSpec.parse(spec).resolved()
    log = tmp / "export.log"
    peak, seconds, rc = peak_of([sys.executable, "-c", EXPORT, resolved], env, log)
    if rc != 0:
        raise SystemExit(f"the export failed (exit {rc}):\n{log.read_text(errors='replace')[-3000:]}")
    cache = Path(env["CLIPSQL_CACHE"])
    size = sum(f.stat().st_size for f in cache.rglob("*.onnx"))
    if not size:
        raise SystemExit(f"the export wrote no ONNX file under {cache}")
    print(f"export (export.in_subprocess, brand-new cache): peak RSS {mb(peak)}, {seconds:.1f} s, "
          f"{size / 1e6:.0f} MB of ONNX files", flush=True)


def measure_load(name: str, folder: Path, spec: str, env: dict, tmp: Path, batch: int,
                 fresh: bool = False):
    """Peak RSS and report of ``clipsql load FOLDER``; ``fresh``: load a hard-linked copy of
    the folder (new paths: ``clipsql load`` skips files it has seen), so the same files are
    decoded again."""
    if fresh:
        copy = folder.with_name(f"{folder.name}-{len(list(folder.parent.glob(folder.name + '-*')))}")
        shutil.copytree(folder, copy, copy_function=os.link)
        folder = copy
    cmd = [*CLIPSQL, "load", str(folder), "--model", spec, "--json", "--batch-size", str(batch)]
    log = tmp / f"load-{len(list(tmp.glob('load-*.log')))}.log"
    peak, seconds, rc = peak_of(cmd, env, log)
    if rc != 0:
        raise SystemExit(f"clipsql load ({name}) failed (exit {rc}):\n{log.read_text(errors='replace')[-3000:]}")
    report = last_json(log)
    print(f"clipsql load, {name}: peak RSS {mb(peak)} (whole command), {seconds:.1f} s; "
          f"added {report['added']}, failed {report['failed']}, ignored {report['ignored']}; "
          f"embedded with {report.get('backend') or '-'}", flush=True)
    return peak, report


def outcomes(kinds: dict, report: dict) -> None:
    """What became of each kind: embedded, or failed (by reason)."""
    failed = {path: why.split(":", 1)[0] for path, why in report["failures"]}
    table = defaultdict(Counter)
    for path, kind in kinds.items():
        table[kind][f"failed {failed[path]}" if path in failed else "embedded"] += 1
    for kind in hostile.KINDS:
        if kind in table:
            print(f"  {kind:<28} " + ", ".join(f"{what} {n}" for what, n in sorted(table[kind].items())))


def measure_server(spec: str, env: dict) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, spec], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info = None
        for line in proc.stdout:
            if line.startswith("{"):
                info = json.loads(line)
                break
        if info is None:
            raise SystemExit(f"the web server did not start (exit {proc.wait()})")
        pid, url = info["pid"], info["url"]
        time.sleep(1.0)
        idle = proc_status(pid)
        print(f"web server (create_app + serve_in_thread, model prepared): idle VmRSS "
              f"{mb(idle['VmRSS'])}, VmHWM so far {mb(idle['VmHWM'])} (start-up)", flush=True)
        photo = camera_jpeg()
        under = hostile.png(6300, 6300, hostile._zeros_stream(6300, (6300 + 7) // 8),
                            color_type=0, depth=1)
        resettable = reset_peak(pid)
        cases = [(f"camera JPEG 4000x3000, {len(photo) / 1e6:.1f} MB, first upload", photo, "image/jpeg"),
                 ("the same JPEG again", photo, "image/jpeg"),
                 (f"1-bit PNG 6300x6300 (39.7 Mpx), {len(under) // 1000} KB", under, "image/png")]
        for i, (what, data, kind) in enumerate(cases):
            if i and not resettable:
                break
            if i:
                reset_peak(pid)
            before = proc_status(pid)["VmRSS"]
            t = time.perf_counter()
            found = upload(url, data, "query.jpg" if kind == "image/jpeg" else "query.png", kind)
            took = time.perf_counter() - t
            after = proc_status(pid)
            print(f"  upload: {what}: VmHWM {mb(after['VmHWM'])} = {mb(after['VmHWM'] - idle['VmRSS'])} "
                  f"above idle ({mb(after['VmHWM'] - before)} above the RSS just before); VmRSS after "
                  f"{mb(after['VmRSS'])}; {took:.2f} s, {len(found['results'])} hits", flush=True)
        if not resettable:
            print("  (/proc/PID/clear_refs is not writable here: only the first upload's peak is shown)")
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="hostile files (default 1000)")
    ap.add_argument("--ordinary", type=int, default=200,
                    help="small JPEGs of the reference load (default 200)")
    ap.add_argument("--model", help="ARCH/CHECKPOINT (default: ViT-B-32, seeded random weights)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-server", action="store_true", help="skip the web server's figure")
    ap.add_argument("--with-env", action="append", default=[], metavar="KEY=VALUE",
                    help="measure the hostile load again with this in its environment (e.g. "
                         "MALLOC_ARENA_MAX=2); repeatable")
    args = ap.parse_args()
    print_machine()
    tmp = scratch_dir("clipsql-memory-")
    spec = args.model or random_vitb32(tmp)
    env = {**os.environ, "CLIPSQL_HOME": str(tmp / "home"), "CLIPSQL_CACHE": str(tmp / "cache"),
           "PYTHONWARNINGS": "ignore"}
    env.pop("CLIPSQL_DATABASE_URL", None)

    measure_export(spec, env, tmp)

    t = time.perf_counter()
    kinds = hostile.write_corpus(tmp / "hostile", args.count)
    hostile.write_ordinary(tmp / "ordinary", args.ordinary)
    size = sum(Path(p).stat().st_size for p in kinds)
    print(f"made {len(kinds)} hostile files ({size / 1e6:.1f} MB, {len(hostile.KINDS)} kinds) and "
          f"{args.ordinary} small JPEGs in {time.perf_counter() - t:.1f} s", flush=True)
    subprocess.run([*CLIPSQL, "status", "--model", spec], env=env, check=True,
                   capture_output=True)  # initdb outside the measured commands
    try:
        ref, _ = measure_load("ordinary", tmp / "ordinary", spec, env, tmp, args.batch_size)
        peak, report = measure_load("hostile", tmp / "hostile", spec, env, tmp, args.batch_size)
        print(f"hostile / ordinary peak RSS: {peak / ref:.2f}x ({mb(peak - ref)} more)")
        outcomes(kinds, report)
        for setting in args.with_env:
            key, _, value = setting.partition("=")
            again, _ = measure_load(f"hostile, {key}={value}", tmp / "hostile", spec,
                                    {**env, key: value}, tmp, args.batch_size, fresh=True)
            print(f"  with {key}={value}: {again / peak:.2f}x the peak above")
        if not args.no_server:
            measure_server(spec, env)
    finally:
        subprocess.run([*CLIPSQL, "db", "stop"], env=env, capture_output=True, check=False)


if __name__ == "__main__":
    main()
