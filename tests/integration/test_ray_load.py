"""The Ray engine on a real local Ray runtime (2 CPUs, loopback) and the real PostgreSQL:
the same rows and failures as the local loader, a killed embedding actor or driver loses
and duplicates nothing, the CLI's ``--ray``, a runtime of its own that listens on loopback
only, and the clear error without Ray."""

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import open_clip
import psutil
import pytest
import ray
from click.testing import CliRunner

import clipsql
from clipsql.cli import main
from clipsql.errors import ConfigError
from clipsql.ingest.ray_engine import CLUSTERS_OFF, LOOPBACK, loopback_only
from clipsql.models.openclip import ClipModel
from tests.conftest import (
    ROOT,
    TINY_CONFIG,
    fresh_database,
    make_checkpoint,
    make_image,
)
from tests.videos import THREE_SCENES, make_video

COLUMNS = ("path, start_s, end_s, sha256, bytes, mtime, width, height, format, taken_at, "
           "camera_make, camera_model, orientation, exif")


#: Slower than the tiny model (about 2 GFLOP an image), so that a load lasts long enough
#: to be killed in the middle; 32-d like the tiny one.
SLOW_CONFIG = {**TINY_CONFIG, "vision_cfg": {"image_size": 160, "layers": 6, "width": 384,
                                              "patch_size": 16, "head_width": 64}}


#: The environment of a driver in a process of its own that joins the module's runtime (on
#: loopback: without it, Ray rewrites the address 127.0.0.1 to the machine's and cannot
#: reach it).
JOIN_ENV = {CLUSTERS_OFF: "0"}


@pytest.fixture(scope="module")
def ray_runtime(model_configs):
    """One local Ray runtime for the module: 2 CPUs, loopback only, no dashboard. Started
    after the model configs are registered: its workers inherit CLIPSQL_MODEL_CONFIGS.
    Drivers in processes of their own that join it need :data:`JOIN_ENV`."""
    (model_configs / "clipsql-ray-slow.json").write_text(json.dumps(SLOW_CONFIG))
    open_clip.add_model_config(model_configs)
    with loopback_only(ray):  # as the engine's own: never reachable from the network
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address=LOOPBACK,
                 log_to_driver=False, address="local")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def slow_model(ray_runtime, tmp_path_factory):
    spec = make_checkpoint("clipsql-ray-slow", tmp_path_factory.mktemp("slow") / "slow.pt", 0)
    # export it now (cached for the session): the fault tests below time the load itself,
    # and kill things while it runs
    ClipModel(spec, device="cpu").prepare()
    return spec


@pytest.fixture
def second_dsn(pg_admin_url):
    with fresh_database(pg_admin_url) as url:
        yield url


def rows(db):
    return db.conn.execute(f"SELECT {COLUMNS} FROM clipsql.images ORDER BY path, start_s"
                           ).fetchall()


def vectors(db):
    got = db.conn.execute("SELECT path, start_s, embedding::real[] FROM clipsql.images")
    return {(p, s): np.asarray(v, dtype=np.float32) for p, s, v in got}


def failures(db):
    return db.conn.execute(
        "SELECT path, reason, detail FROM clipsql.failures ORDER BY path").fetchall()


def many_photos(folder, n):
    for i in range(n):
        make_image(folder / f"p{i:03d}.png", color=(i * 7 % 256, i * 13 % 256, 90), pattern=i)
    return folder


def test_ray_load_matches_the_local_loader(ray_runtime, dsn, second_dsn, tiny_model,
                                           photo_folder):
    (photo_folder / "broken.jpg").write_text("this is not an image")
    make_image(photo_folder / "b" / "late.jpg", color=(1, 2, 3), pattern=4)
    make_video(photo_folder / "a" / "clip.mp4", THREE_SCENES)  # one file, three moments
    with clipsql.connect(dsn, model=tiny_model) as db, \
            clipsql.connect(second_dsn, model=tiny_model) as other:
        local = db.load(photo_folder)
        seen = []
        report = other.load(photo_folder, engine="ray", actors=2, batch_size=4,
                            progress=lambda done, total: seen.append((done, total)))
        assert (report.added, report.failed, report.unchanged) == (local.added, 1, 0) == (14, 1, 0)
        assert report.moments == local.moments == 3
        assert report.index_built and report.rate > 0
        assert seen[-1] == (15, 15)
        assert rows(other) == rows(db)
        assert failures(other) == failures(db)
        assert failures(other)[0][1] == "unsupported"
        a, b = vectors(db), vectors(other)
        assert a.keys() == b.keys()
        for path in a:
            cosine = float(a[path] @ b[path] / np.linalg.norm(a[path]) / np.linalg.norm(b[path]))
            assert cosine > 1 - 1e-3, path
        again = other.load(photo_folder, engine="ray", actors=2)
        assert (again.added, again.updated, again.unchanged) == (0, 0, 15)


def count(dsn, distinct=False):
    import psycopg

    what = "count(DISTINCT path), count(DISTINCT sha256), count(*)" if distinct else "count(*)"
    with psycopg.connect(dsn) as conn:
        got = conn.execute(f"SELECT {what} FROM clipsql.images").fetchone()
    return got if distinct else got[0]


def wait_for_rows(dsn, at_least, deadline, alive=lambda: True):
    while time.monotonic() < deadline and alive():
        with_rows = count(dsn)
        if with_rows >= at_least:
            return with_rows
        time.sleep(0.05)
    raise AssertionError("no rows were written in time")


def cpu_seconds(proc) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def embedding_actors():
    """The processes of the Ray Data embedding actors (their titles name the class)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if "_Embedder" in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_a_killed_embedding_actor_is_restarted_and_nothing_is_lost(
        ray_runtime, dsn, slow_model, tmp_path):
    folder = many_photos(tmp_path / "many", 32)
    killed = {}

    def kill_one_actor():
        # An actor that has worked a while (its CPU time), not the rows written: on a busy
        # machine the driver may write every row only once the actors are done.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [p for p in embedding_actors() if cpu_seconds(p) >= 1.0]
            if busy:
                killed["rows"], killed["pid"] = count(dsn), busy[0].pid
                os.kill(busy[0].pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    with clipsql.connect(dsn, model=slow_model) as db:
        db.conn.execute("SELECT 1")  # the schema exists before the killer polls the table
        killer = threading.Thread(target=kill_one_actor, daemon=True)
        killer.start()
        report = db.load(folder, engine="ray", actors=2, batch_size=2)
        killer.join(5)
    assert "pid" in killed and killed["rows"] < 32  # killed in the middle of the load
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == "zombie"
    assert (report.added, report.failed) == (32, 0)
    assert count(dsn, distinct=True) == (32, 32, 32)


DRIVER = textwrap.dedent("""
    import sys
    import clipsql
    dsn, model, folder, address = sys.argv[1:]
    with clipsql.connect(dsn, model=model) as db:
        db.load(folder, engine="ray", address=address, actors=1, batch_size=2)
""")


def test_a_killed_driver_resumes_without_duplicates(ray_runtime, dsn, slow_model, tmp_path):
    folder = many_photos(tmp_path / "many", 32)
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, dsn, slow_model, str(folder),
                               address], cwd=ROOT, env={**os.environ, **JOIN_ENV},
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        with clipsql.connect(dsn, model=slow_model) as db:
            db.conn.execute("SELECT 1")
        at_kill = wait_for_rows(dsn, 2, time.monotonic() + 150,
                                alive=lambda: driver.poll() is None)
    finally:
        driver.send_signal(signal.SIGKILL)
        _, err = driver.communicate(timeout=30)
    assert driver.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert at_kill < 32
    with clipsql.connect(dsn, model=slow_model) as db:
        before = count(dsn)
        report = db.load(folder, engine="ray", actors=1, batch_size=4)
    assert report.unchanged == before and report.added == 32 - before
    assert count(dsn, distinct=True) == (32, 32, 32)


def test_cli_load_with_ray(ray_runtime, dsn, tiny_model, photo_folder):
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    result = CliRunner().invoke(main, ["load", str(photo_folder), "--ray", "--actors", "1",
                                       "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 12  # Ray logs on stderr
    assert count(dsn) == 12
    result = CliRunner().invoke(main, ["load", str(photo_folder), "--actors", "1"], env=env)
    assert result.exit_code != 0 and "--actors needs --ray" in result.output


def listening_sockets(root: psutil.Process) -> dict:
    """{(process name, pid): {(ip, port), ...}}: the TCP sockets listening in ``root``'s
    process tree now."""
    found = {}
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in tree:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.setdefault((name, proc.pid), set()).add((conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1


def load_watching(args, env, sample) -> dict:
    """``clipsql load ARGS --json`` in a process of its own; ``sample(root)`` is called every
    0.2 s with its process while it runs. Its JSON report."""
    driver = subprocess.Popen([sys.executable, "-m", "clipsql", "load", *args, "--json"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    out, err = [], []
    readers = [threading.Thread(target=into.extend, args=(stream,), daemon=True)
               for stream, into in ((driver.stdout, out), (driver.stderr, err))]
    for reader in readers:
        reader.start()
    try:
        root, deadline = psutil.Process(driver.pid), time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                sample(root)
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(60)
        for reader in readers:
            reader.join(10)
    assert driver.returncode == 0, "".join(err)[-3000:]
    return json.loads("".join(out))


def test_a_local_ray_runtime_listens_on_loopback_only(ray_runtime, dsn, tiny_model,
                                                      photo_folder):
    """``clipsql load --ray`` in a process of its own, while another Ray runtime runs on this
    machine (the module's) and ``RAY_ADDRESS`` names it: the load starts a runtime of its
    own, and every socket any of its processes listens on during the load is on loopback."""
    env = {**os.environ, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model,
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    seen = {}

    def sample(root):
        for key, sockets in listening_sockets(root).items():
            seen.setdefault(key, set()).update(sockets)

    report = load_watching([str(photo_folder), "--ray", "--actors", "1"], env, sample)
    assert report["added"] == 12
    names = {name for name, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # a runtime of its own, seen listening
    assert any(name.startswith("ray::") for name in names), seen  # and its workers
    exposed = {key: sockets for key, sockets in seen.items()
               if not all(loopback(ip) for ip, _ in sockets)}
    assert not exposed, exposed


def test_auto_joins_the_running_cluster_and_starts_none(ray_runtime, dsn, tiny_model,
                                                       photo_folder):
    """``--ray auto`` (asked for by name) joins the cluster RAY_ADDRESS names: no GCS or
    raylet of its own in the driver's process tree."""
    env = {**os.environ, **JOIN_ENV, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model,
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    names = set()

    def sample(root):
        names.update(child.name() for child in root.children(recursive=True))

    report = load_watching([str(photo_folder), "--ray", "auto", "--actors", "1"], env, sample)
    assert report["added"] == 12
    assert not names & {"gcs_server", "raylet"}, names


def test_without_ray_engine_ray_is_one_clear_error(monkeypatch, db, photo_folder):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r'pip install "clipsql\[ray\]"'):
        db.load(photo_folder, engine="ray")
    assert db.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0] == 0
    with pytest.raises(ConfigError, match="engine must be"):
        db.load(photo_folder, engine="spark")
