"""Helpers shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from pathlib import Path


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
