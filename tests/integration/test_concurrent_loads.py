"""Two loads of the same folder at once, on real PostgreSQL with the real tiny model: they
split the files (each is embedded once, counted by the model's own calls), no row is
duplicated, and each report says what its own load did."""

from __future__ import annotations

import threading

import psycopg
import pytest

import clipsql
from clipsql.models.openclip import ClipModel
from tests.conftest import make_image

FILES = 40


@pytest.fixture
def folder(tmp_path):
    for i in range(FILES):
        make_image(tmp_path / "photos" / f"s{i % 3}" / f"p{i:03d}.png",
                   color=(i * 7 % 256, i * 13 % 256, i * 29 % 256), pattern=i % 11)
    return tmp_path / "photos"


@pytest.fixture
def embedded(monkeypatch):
    """Images the model embedded, per thread; the first batch of each of the two loads
    waits for the other's, so both are provably loading at the same time."""
    seen: dict = {}
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=60)
    original = ClipModel.encode_images

    def counting(self, batch):
        name = threading.current_thread().name
        with lock:
            first = name not in seen
            seen[name] = seen.get(name, 0) + len(batch)
        if first and name.startswith("load-"):
            both.wait()
        return original(self, batch)

    monkeypatch.setattr(ClipModel, "encode_images", counting)
    return seen


def run_loads(dsn, tiny_model, paths, **kwargs):
    reports, errors = {}, []

    def run(name, path):
        try:
            with clipsql.connect(dsn, model=tiny_model) as db:
                reports[name] = db.load(path, batch_size=4, **kwargs)
        except Exception as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"load-{i}", p), name=f"load-{i}")
               for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    return reports


def test_two_loads_of_one_folder_split_the_files(dsn, tiny_model, folder, embedded):
    clipsql.connect(dsn, model=tiny_model).close()
    reports = run_loads(dsn, tiny_model, [folder, folder])
    a, b = reports["load-0"], reports["load-1"]
    assert sum(embedded.values()) == FILES  # every file embedded once, by one load or the other
    assert embedded["load-0"] == a.added and embedded["load-1"] == b.added
    assert a.added > 0 and b.added > 0  # both did part of the work
    assert a.added + b.added == FILES and a.updated == b.updated == 0
    for r in (a, b):  # each report accounts for every file once: done here or found done
        assert r.added + r.unchanged == FILES and r.failed == 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT path) FROM clipsql.images"
                            ).fetchone() == (FILES, FILES)


def test_a_load_after_another_embeds_nothing_and_says_so(dsn, tiny_model, folder, embedded):
    with clipsql.connect(dsn, model=tiny_model) as db:
        first = db.load(folder, batch_size=4)
        second = db.load(folder, batch_size=4)
    assert (first.added, second.added, second.updated, second.unchanged) == (FILES, 0, 0, FILES)
    assert sum(embedded.values()) == FILES
