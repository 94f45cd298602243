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
    """The first line of every benchmark: date, CPU model and features, package versions."""
    import datetime

    from clipsql.models.machine import one_line

    print(f"{datetime.date.today()}  {one_line()}", flush=True)


def make_photos(folder: Path, count: int) -> Path:
    """``count`` camera-sized JPEGs from ``../shared/bench/make_photos.py`` in ``folder``."""
    if not MAKE_PHOTOS.exists():
        sys.exit(f"{MAKE_PHOTOS} is missing (it makes the benchmark photos)")
    subprocess.run([sys.executable, str(MAKE_PHOTOS), str(folder), "--count", str(count)],
                   check=True, stdout=subprocess.DEVNULL)
    return folder


def random_vitb32(tmp: Path) -> str:
    """The spec of a ViT-B-32 checkpoint with (seeded) random weights saved in ``tmp``; the
    text tower exported for it stays in ``tmp`` too, not in the user's home."""
    import open_clip
    import torch

    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), tmp / "vit-b-32.pt")
    os.environ["CLIPSQL_HOME"] = str(tmp / "home")
    return f"ViT-B-32/{tmp / 'vit-b-32.pt'}"


def model_only(model, n: int, batch: int = 32) -> float:
    """Images/s of ``model.encode_images`` alone, on random preprocessed batches (no decoding)."""
    import time

    import torch

    x = torch.randn(batch, 3, model.image_size, model.image_size)
    model.encode_images(x)  # warm-up
    done, started = 0, time.perf_counter()
    while done < n:
        model.encode_images(x)
        done += batch
    return done / (time.perf_counter() - started)
