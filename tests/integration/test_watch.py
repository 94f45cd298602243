"""The watcher (clipsql.ingest.watch) on real PostgreSQL with real file events: each test
runs ``Collection.watch`` in a background thread and polls the database until what it
expects is there (generous timeouts; no timing is asserted)."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import shutil
import threading
import time

import pytest

from clipsql.errors import DatabaseError
from clipsql.ingest import loader
from tests.conftest import make_image

TIMEOUT = 60.0


def wait_until(condition, timeout=TIMEOUT, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def paths(db) -> set:
    return {r[0] for r in db.conn.execute("SELECT path FROM clipsql.images")}


def sha(db, path) -> str | None:
    row = db.conn.execute("SELECT sha256 FROM clipsql.images WHERE path = %s",
                          (str(path),)).fetchone()
    return row[0] if row else None


class Running:
    def __init__(self, db, roots, kwargs):
        self.stop = threading.Event()
        self.reports: list = []
        self.errors: list = []
        self.result = None

        def run():
            try:
                self.result = db.watch(*roots, stop=self.stop, on_report=self.reports.append,
                                       **kwargs)
            except BaseException as exc:  # surfaced by finish()
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, name="watcher", daemon=True)
        self.thread.start()
        wait_until(lambda: self.errors or any(r.kind == "catch-up" for r in self.reports),
                   what="the catch-up load")
        assert not self.errors, self.errors

    def refused(self) -> list:
        return [p for r in self.reports for p in r.refused]

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the watcher did not stop"
        assert not self.errors, self.errors
        return self.result


@pytest.fixture
def watching(db):
    """``watching(*roots, **kwargs)``: a watcher running in a thread (short debounce)."""
    started: list[Running] = []

    def start(*roots, **kwargs):
        kwargs.setdefault("debounce_s", 0.3)
        kwargs.setdefault("settle_s", 0.5)
        running = Running(db, roots, kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        running.thread.join(30)


@pytest.fixture
def loads(monkeypatch):
    """The paths of every loader.load call (the watcher's loads go through it)."""
    calls: list[list[str]] = []
    original = loader.load

    def counting(connect, model, given, **kwargs):
        calls.append([os.fspath(p) for p in given])
        return original(connect, model, given, **kwargs)

    monkeypatch.setattr(loader, "load", counting)
    return calls


def test_new_changed_and_deleted_files_are_synced(db, watching, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        make_image(root / f"old{i}.png", color=(i * 60, 10, 10), pattern=i)
    running = watching(root)
    assert paths(db) == {str(root / f"old{i}.png") for i in range(3)}

    new = make_image(root / "sub" / "new.jpg", color=(10, 200, 10), pattern=3)
    wait_until(lambda: str(new) in paths(db), what="the new file's row")

    before = sha(db, root / "old1.png")
    make_image(root / "old1.png", color=(1, 2, 250), pattern=7)
    expected = hashlib.sha256((root / "old1.png").read_bytes()).hexdigest()
    wait_until(lambda: sha(db, root / "old1.png") == expected, what="the re-embedded file")
    assert expected != before

    (root / "old2.png").unlink()
    wait_until(lambda: str(root / "old2.png") not in paths(db), what="the deleted file's row")
    assert paths(db) == {str(root / "old0.png"), str(root / "old1.png"), str(new)}
    total = running.finish()
    assert total.added >= 4 and total.removed == 1 and total.refused == 0


def test_a_file_written_slowly_is_loaded_once_complete(db, watching, loads, tmp_path):
    root = tmp_path / "photos"
    make_image(root / "keep.png")
    watching(root, debounce_s=0.3, settle_s=1.5)
    buffer = io.BytesIO()
    from PIL import Image

    Image.effect_noise((160, 120), 60).convert("RGB").save(buffer, "PNG")
    data = buffer.getvalue()
    target = root / "slow.png"
    chunk = len(data) // 6 + 1
    with open(target, "wb") as f:  # ~3 s, a chunk every 0.5 s (well under settle_s)
        for i in range(0, len(data), chunk):
            f.write(data[i:i + chunk])
            f.flush()
            time.sleep(0.5)
    wait_until(lambda: sha(db, target), what="the slow file's row")
    assert sha(db, target) == hashlib.sha256(data).hexdigest()
    time.sleep(2.0)  # not an assertion on time: lets a second (wrong) load show up
    assert sum(str(target) in call for call in loads) == 1, loads
    assert db.conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 0


def test_a_burst_of_a_thousand_files_arrives_once_in_a_few_loads(db, watching, loads,
                                                                tmp_path):
    from PIL import Image

    root = tmp_path / "burst"
    root.mkdir()
    watching(root)
    catch_up = len(loads)
    written = []
    for i in range(1000):
        path = root / f"{i:04d}.png"
        Image.new("RGB", (8, 8), (i % 256, i // 256 * 40, 99)).save(path)
        written.append(str(path))
    wait_until(lambda: db.conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0]
               >= 1000, timeout=300, what="a thousand rows")
    assert paths(db) == set(written)
    syncs = loads[catch_up:]
    times = collections.Counter(p for call in syncs for p in call)
    assert set(times) == set(written) and set(times.values()) == {1}
    assert len(syncs) <= 10, [len(c) for c in syncs]


def test_a_folder_moved_within_the_root_keeps_its_rows_count(db, watching, tmp_path):
    root = tmp_path / "photos"
    for i in range(12):  # over PRUNE_MIN_ROWS: pruning before loading would be refused
        make_image(root / "a" / f"{i:02d}.png", color=(i * 20, 90, 9), pattern=i % 5)
    running = watching(root)
    assert len(paths(db)) == 12
    (root / "a").rename(root / "b")
    moved = {str(root / "b" / f"{i:02d}.png") for i in range(12)}
    wait_until(lambda: paths(db) == moved, what="the moved folder's rows")
    assert running.refused() == []
    running.finish()


def test_moving_the_whole_folder_away_is_refused_and_the_watch_goes_on(db, watching,
                                                                     tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        make_image(root / f"{i}.png", color=(i * 70, 9, 9))
    before = paths(db) | {str(root / f"{i}.png") for i in range(3)}
    running = watching(root)
    shutil.move(root, tmp_path / "aside")
    refusals = wait_until(running.refused, what="a refused prune")
    assert "is missing" in refusals[0] and "3 of the 3 rows" in refusals[0]
    assert paths(db) == before
    assert running.thread.is_alive()
    shutil.move(tmp_path / "aside", root)  # back (a drive mounted again)
    new = make_image(root / "after.png", color=(9, 9, 200))
    wait_until(lambda: str(new) in paths(db), what="a file added once the folder is back")
    assert paths(db) == before | {str(new)}
    running.finish()


def test_restart_catches_up(db, watching, tmp_path):
    root = tmp_path / "photos"
    for i in range(4):
        make_image(root / f"{i}.png", color=(i * 50, 9, 9))
    watching(root).finish()
    (root / "0.png").unlink()
    make_image(root / "late.png", color=(9, 99, 9))
    again = watching(root)
    expected = {str(root / n) for n in ("1.png", "2.png", "3.png", "late.png")}
    assert paths(db) == expected  # the catch-up ran before watching
    catch_up = again.reports[0]
    assert (catch_up.kind, catch_up.added, catch_up.removed) == ("catch-up", 1, 1)
    again.finish()


def test_a_failed_load_is_reported_and_retried(db, watching, monkeypatch, tmp_path):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    running = watching(root)
    original = loader.load
    failures = []

    def flaky(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise DatabaseError("lost the database during the load (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(loader, "load", flaky)
    new = make_image(root / "b.png", color=(0, 0, 250))
    wait_until(lambda: str(new) in paths(db), what="the row after the retry")
    errors = [r for r in running.reports if r.error]
    assert errors and "simulated" in errors[0].error and errors[0].retry_in > 0
    assert running.thread.is_alive()
    running.finish()


def test_hidden_and_non_image_files_follow_the_walk_rules(db, watching, tmp_path):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    make_image(root / "b.png", color=(0, 0, 250))
    watching(root)
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")
    make_image(root / ".hidden" / "inside.png")
    make_image(root / "c.png", color=(0, 250, 0))
    wait_until(lambda: str(root / "c.png") in paths(db), what="the new image")
    wait_until(lambda: len(dict(db.conn.execute("SELECT path, reason FROM clipsql.ignored")))
               == 2, what="both ignored files")
    ignored = dict(db.conn.execute("SELECT path, reason FROM clipsql.ignored"))
    assert ignored == {str(root / "notes.txt"): "not_image", str(root / ".DS_Store"): "hidden"}
    assert paths(db) == {str(root / n) for n in ("a.png", "b.png", "c.png")}
    assert db.conn.execute("SELECT count(*) FROM clipsql.failures").fetchone()[0] == 0
    (root / "notes.txt").unlink()
    wait_until(lambda: str(root / "notes.txt") not in dict(db.conn.execute(
        "SELECT path, reason FROM clipsql.ignored")), what="the deleted ignored file to go")


def test_polling_instead_of_events(db, watching, tmp_path):
    root = tmp_path / "share"
    make_image(root / "a.png")
    make_image(root / "b.png", color=(0, 0, 250))
    running = watching(root, polling=True)
    new = make_image(root / "c.png", color=(0, 250, 0))
    wait_until(lambda: str(new) in paths(db), what="the polled file's row")
    (root / "a.png").unlink()
    wait_until(lambda: str(root / "a.png") not in paths(db), what="the polled deletion")
    running.finish()


def test_a_new_video_arrives_as_its_moments_and_leaves_whole(db, watching, tmp_path):
    from tests.videos import THREE_SCENES, make_video

    root = tmp_path / "media"
    make_image(root / "still.png")
    watching(root)
    staged = make_video(tmp_path / "staging" / "clip.mp4", THREE_SCENES)
    os.replace(staged, root / "clip.mp4")  # appears whole, as a copy tool's rename does

    def moments():
        return db.conn.execute("SELECT count(*) FROM clipsql.images WHERE path = %s",
                               (str(root / "clip.mp4"),)).fetchone()[0]
    assert wait_until(lambda: moments() == 3, what="the video's three moments")
    (root / "clip.mp4").unlink()
    wait_until(lambda: moments() == 0, what="the video's rows to go")
    assert paths(db) == {str(root / "still.png")}
