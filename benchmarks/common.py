"""Helpers shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAKE_PHOTOS = ROOT.parent / "shared" / "bench" / "make_photos.py"


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the script exits, whether it succeeds or fails.

    Benchmarks write model checkpoints (600 MB for ViT-B-32) and database clusters here;
    left behind, a few runs fill a small disk.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def fresh_database(admin_url: str) -> str:
    """Create an empty database next to `admin_url`'s and return its URL."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    p = urlsplit(admin_url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    from clipsql.models.machine import cpu_model as model

    return model()


def print_machine() -> None:
    """The first lines of every benchmark: date, CPU model and features, package versions;
    then the load average (other processes share the CPU: a figure means little without it)."""
    import datetime

    from clipsql.models.machine import one_line

    print(f"{datetime.date.today()}  {one_line()}", flush=True)
    print(f"machine: {load_average()} at the start", flush=True)


def make_photos(folder: Path, count: int) -> Path:
    """``count`` camera-sized JPEGs from ``../shared/bench/make_photos.py`` in ``folder``."""
    if not MAKE_PHOTOS.exists():
        sys.exit(f"{MAKE_PHOTOS} is missing (it makes the benchmark photos)")
    subprocess.run([sys.executable, str(MAKE_PHOTOS), str(folder), "--count", str(count)],
                   check=True, stdout=subprocess.DEVNULL)
    return folder


#: An existing ViT-B-32 state_dict to use instead of building the random one (600 MB, seconds
#: to write): the tests pass the session's checkpoint.
ENV_CHECKPOINT = "CLIPSQL_BENCH_CHECKPOINT"
#: A cache folder kept across benchmark runs for the benchmark checkpoint's export (default:
#: one in the scratch folder, removed at exit): the tests share one, so ViT-B-32 is exported once.
ENV_CACHE = "CLIPSQL_BENCH_CACHE"


def random_vitb32(tmp: Path) -> str:
    """The spec of a ViT-B-32 checkpoint with (seeded) random weights saved in ``tmp``, or of
    ``$CLIPSQL_BENCH_CHECKPOINT`` where that is set.

    The export of it stays out of the user's home and cache: ``CLIPSQL_HOME`` becomes
    ``tmp/home`` and ``CLIPSQL_CACHE`` ``$CLIPSQL_BENCH_CACHE`` or ``tmp/home/cache``.
    """
    given = os.environ.get(ENV_CHECKPOINT)
    if given:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            sys.exit(f"{ENV_CHECKPOINT}={given}: no such file")
    else:
        import open_clip
        import torch

        path = tmp / "vit-b-32.pt"
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-32").state_dict(), path)
    os.environ["CLIPSQL_HOME"] = str(tmp / "home")
    os.environ["CLIPSQL_CACHE"] = os.environ.get(ENV_CACHE) or str(tmp / "home" / "cache")
    return f"ViT-B-32/{path}"


def model_only(model, n: int, batch: int = 32) -> float:
    """Images/s of ``model.encode_images`` alone, on random preprocessed batches (no decoding)."""
    import time

    import numpy as np

    size = model.image_size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    model.encode_images(x)  # warm-up
    done, started = 0, time.perf_counter()
    while done < n:
        model.encode_images(x)
        done += batch
    return done / (time.perf_counter() - started)


def timed_prepare(model) -> tuple[float, list[tuple[float, str]]]:
    """Prepare ``model`` (its one-time export if the cache has none): seconds, and the export's
    steps with their times (empty when the export was cached)."""
    import time

    steps = []
    started = time.perf_counter()
    model.prepare(lambda what: steps.append((time.perf_counter() - started, what)))
    return time.perf_counter() - started, steps


def load_average() -> str:
    """``load average 1.23 0.98 0.80 on N cores``: how busy the machine was."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} logical CPUs"


def camera_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A camera-sized JPEG: a smooth colour field with noise (quality 90)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 8, (height, width, 3))
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def proc_status(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = float(value.split()[0])
    return out


#: The web server (``python -c SERVER MODEL``), in a process of its own: serves until its stdin closes.
SERVER = r"""
import json, os, sys
from clipsql.web import create_app, serve_in_thread
app = create_app(None, sys.argv[1])
with serve_in_thread(app) as url:
    print(json.dumps({"url": url, "pid": os.getpid()}), flush=True)
    sys.stdin.readline()
"""
