"""The watcher's debounce and settle bookkeeping (clipsql.ingest.watch.Pending) on a fake
clock and a fake file system: no events, no database."""

from __future__ import annotations

import logging

import pytest

from clipsql.errors import ConfigError
from clipsql.ingest import watch
from clipsql.ingest.watch import Batch, Pending


class Files(dict):
    """path -> (size, mtime); a missing path stats as None."""

    def stat(self, path):
        return self.get(path)


@pytest.fixture
def files():
    return Files()


def pending(files, debounce=1.0, settle=2.0, max_delay=10.0):
    return Pending(debounce, settle, max_delay, stat=files.stat)


def test_nothing_pending_is_never_due(files):
    p = pending(files)
    assert p.due() is None and not p.take(100.0) and len(p) == 0


def test_a_written_file_is_taken_after_debounce_and_settle(files):
    p = pending(files, debounce=1.0, settle=2.0)
    files["/r/a.jpg"] = (10, 1)
    p.changed("/r/a.jpg", 0.0)
    assert p.due() == 2.0  # max(debounce, settle) after its last event
    assert not p.take(1.5)
    assert p.take(2.0) == Batch(files=["/r/a.jpg"])
    assert p.due() is None


def test_a_file_still_growing_waits_until_it_is_stable(files):
    p = pending(files, debounce=0.5, settle=1.0)
    files["/r/big.png"] = (100, 0)
    p.changed("/r/big.png", 0.0)
    for t in range(6):  # a chunk every second, no event seen after the first
        files["/r/big.png"] = (100 * (t + 1), t)
        assert not p.take(t + 0.9)
    # the stat at t=5.9 saw a change: stable only from then on
    assert not p.take(6.5)
    assert p.take(6.9) == Batch(files=["/r/big.png"])


def test_events_keep_postponing_until_quiet_or_the_max_delay(files):
    p = pending(files, debounce=1.0, settle=0.4, max_delay=5.0)
    files["/r/a.jpg"] = (1, 1)
    files["/r/log.txt"] = (1, 1)
    p.changed("/r/a.jpg", 0.0)
    for step in range(1, 17):  # another file written every 0.3 s: never quiet
        t = step * 0.3
        files["/r/log.txt"] = (step, t)
        p.changed("/r/log.txt", t)
        assert not p.take(t)
    assert p.due() == 5.0
    assert p.take(5.0).files == ["/r/a.jpg"]  # the log file was written just now: not settled


def test_a_burst_is_one_batch(files):
    p = pending(files, debounce=1.0, settle=1.0)
    for i in range(1000):
        files[f"/r/{i}.png"] = (5, 1)
        p.changed(f"/r/{i}.png", i / 1000)
    assert not p.take(1.5)
    batch = p.take(2.0)
    assert len(batch.files) == 1000 and len(p) == 0


def test_deleted_files_and_a_file_gone_before_its_load(files):
    p = pending(files, debounce=1.0, settle=1.0)
    files["/r/tmp.jpg"] = (1, 1)
    p.changed("/r/tmp.jpg", 0.0)
    del files["/r/tmp.jpg"]
    p.removed("/r/old.jpg", 0.5)
    p.removed("/r/sub", 0.5, folder=True)
    batch = p.take(1.5)
    assert batch.files == [] and sorted(batch.gone) == ["/r/old.jpg", "/r/tmp.jpg"]
    assert batch.gone_folders == ["/r/sub"]


def test_deleted_then_written_again_is_a_change(files):
    p = pending(files, debounce=0.5, settle=0.5)
    p.removed("/r/a.jpg", 0.0)
    files["/r/a.jpg"] = (2, 2)
    p.changed("/r/a.jpg", 0.1)
    assert p.take(1.0) == Batch(files=["/r/a.jpg"])


def test_a_move_loads_the_new_paths_before_the_old_ones_go(files):
    """Deletions wait while changes are pending: the moved folder's new files are loaded
    in the same batch as (a sync loads before it prunes) or before its old ones are
    removed, never after."""
    p = pending(files, debounce=0.5, settle=1.0, max_delay=10.0)
    p.removed("/r/a", 0.0, folder=True)
    for i in range(12):
        files[f"/r/b/{i}.png"] = (1, 1)
        p.moved(f"/r/a/{i}.png", f"/r/b/{i}.png", 0.0)
    assert p.due() == 1.0
    assert not p.take(0.6)  # quiet, but the new files have not settled: nothing goes yet
    batch = p.take(1.0)
    assert len(batch.files) == 12 and batch.gone_folders == ["/r/a"] and len(batch.gone) == 12


def test_deletions_wait_at_most_max_delay(files):
    p = pending(files, debounce=0.5, settle=1.0, max_delay=4.0)
    p.removed("/r/x.jpg", 0.0)
    files["/r/growing.png"] = (1, 1)
    p.changed("/r/growing.png", 0.0)
    for t in (1.5, 2.5, 3.5):  # it keeps growing
        files["/r/growing.png"] = (int(t * 10), t)
        p.changed("/r/growing.png", t)
    assert p.due() == 4.0
    assert p.take(4.0) == Batch(gone=["/r/x.jpg"])


def test_removing_a_folder_drops_the_pending_files_under_it(files):
    p = pending(files)
    files["/r/d/a.png"] = (1, 1)
    p.changed("/r/d/a.png", 0.0)
    p.removed("/r/d", 0.1, folder=True)
    assert p.take(5.0) == Batch(gone_folders=["/r/d"])


def test_rescan_and_put_back_with_a_hold(files):
    p = pending(files, debounce=1.0, settle=1.0)
    p.rescan("/r", 0.0)
    batch = p.take(1.0)
    assert batch == Batch(rescan=["/r"])
    p.put_back(batch, 1.0, hold_until=3.0)
    assert p.due() == 3.0 and not p.take(2.9)
    assert p.take(3.0) == Batch(rescan=["/r"])


def test_put_back_files_are_settled_already(files):
    p = pending(files, debounce=0.0, settle=5.0)
    files["/r/a.png"] = (1, 1)
    p.put_back(Batch(files=["/r/a.png"], gone=["/r/b.png"]), 10.0, hold_until=12.0)
    assert p.take(12.0) == Batch(files=["/r/a.png"], gone=["/r/b.png"])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        Pending(-1.0, 1.0, 10.0)
    with pytest.raises(ConfigError):
        Pending(5.0, 1.0, 2.0)


def test_the_walk_rules_of_event_paths():
    assert watch.visible("/r", "/r/a/b.jpg")
    assert watch.visible("/r", "/r/.DS_Store")  # a hidden file: looked at, ignored
    assert not watch.visible("/r", "/r/.git/x.jpg")
    assert not watch.visible("/r", "/r/.cache", folder=True)
    assert not watch.visible("/r", "/other/x.jpg")
    assert watch.walk_rule("/r/a.JPG") is None
    assert watch.walk_rule("/r/notes.txt") == "not_image"
    assert watch.walk_rule("/r/.a.jpg") == "hidden"


def test_an_overflowed_event_queue_means_a_reload_of_every_root(files):
    p = pending(files)
    watcher = watch._Watcher(["/r1", "/r2"], p, clock=lambda: 0.0, polling=True, notes=[])
    for name in watch._WATCHDOG_LOGGERS:
        logging.getLogger(name).addHandler(watcher.overflow)
    try:
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
    finally:
        for name in watch._WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(watcher.overflow)
    assert p.take(1.0) == Batch(rescan=["/r1", "/r2"])
    assert "overflowed" in watcher.notes[0]
