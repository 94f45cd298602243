"""Switching a collection to another model (reembed) on real PostgreSQL: the result equals a
fresh load with the new model, searches from other connections see no error across the
switch, a kill -9 mid-way resumes without loss or duplicates, and the old data goes on
request."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import clipsql
from tests.conftest import TINY_CONFIG, fresh_database, make_checkpoint, make_image

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["a red square", "green stripes", "a dark photo"]
LABELS = ["red", "green", "blue", "stripes"]
TEMPLATES = ["a photo of {}.", "something {}."]


@pytest.fixture(scope="session")
def wide_model(model_configs, tmp_path_factory):
    """The "new model": another tiny architecture, 48-d instead of 32-d, other weights."""
    import open_clip

    (model_configs / "clipsql-tiny48.json").write_text(json.dumps({**TINY_CONFIG, "embed_dim": 48}))
    open_clip.add_model_config(model_configs)
    return make_checkpoint("clipsql-tiny48", tmp_path_factory.mktemp("ckpt48") / "tiny48.pt", seed=2)


def by_path(conn) -> dict:
    rows = conn.execute("SELECT path, embedding FROM clipsql.images").fetchall()
    return {p: e.to_numpy().astype(np.float32) for p, e in rows}


def live_columns(conn) -> dict:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), NOT attnotnull FROM pg_attribute "
        "WHERE attrelid = 'clipsql.images'::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum").fetchall()
    return {name: (sql, nullable) for name, sql, nullable in rows}


def assert_clean_images_table(conn, dim):
    from clipsql.database import images

    expected = {c.name: (c.sql + (f"({dim})" if c.name == "embedding" else ""), c.nullable)
                for c in images.COLUMNS}
    assert live_columns(conn) == expected
    indexes = [r[0] for r in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'images' AND indexdef LIKE '%hnsw%'")]
    assert indexes == ["images_embedding_hnsw"]
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'clipsql.images'::regclass"
                        " AND tgname LIKE '%reembed%'").fetchone()[0] == 0


def test_reembed_equals_a_fresh_load_with_the_new_model(dsn, pg_admin_url, tiny_model, wide_model,
                                                       photo_folder):
    # an int8 tower embeds one image at a time, so a reembed in batches of 4 and a fresh load
    # in batches of 32 give the same vectors
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        db.add_labels(LABELS, templates=TEMPLATES)
        db.store_texts(QUERIES)
        old_ids = dict(db.conn.execute("SELECT path, id FROM clipsql.images").fetchall())
        changed = sorted(photo_folder.rglob("img03.*"))[0]
        touched = []

        def meanwhile(done, total):  # loads while the reembed runs: a new file, a changed one
            if not touched:
                touched.append(done)
                make_image(photo_folder / "late" / "new.png", color=(10, 120, 240), pattern=3)
                make_image(changed, color=(255, 128, 0), pattern=9, size=(80, 80))
                with clipsql.connect(dsn, model=tiny_model) as loader:
                    report = loader.load(photo_folder)
                assert report.added == 1 and report.updated == 1

        report = db.reembed(wide_model, batch_size=4, progress=meanwhile)
        assert report.switched and report.state == "done" and touched
        assert report.labels == len(LABELS) and report.texts == len(QUERIES)
        new = db.status()["model"]
        assert new["arch"] == "clipsql-tiny48" and new["dim"] == 48
        assert_clean_images_table(db.conn, 48)
        assert dict(db.conn.execute("SELECT path, id FROM clipsql.images "
                                    "WHERE path = ANY(%s)", (list(old_ids),)).fetchall()) == old_ids
        got = by_path(db.conn)
        hits = {q: [h.path for h in db.search(q, limit=5)] for q in QUERIES}
        classified = db.classify("default", top=None)
        sets = db.label_sets()
        texts = dict(db.conn.execute(
            "SELECT query, clipsql.text_embedding(query) FROM clipsql.text_embeddings").fetchall())
        new_model = db.model
        assert new_model.identity()["dim"] == 48

    with fresh_database(pg_admin_url) as fresh_dsn, \
            clipsql.connect(fresh_dsn, model=wide_model) as ref:
        ref.load(photo_folder)
        ref.add_labels(LABELS, templates=TEMPLATES)
        ref.store_texts(QUERIES)  # searched with the same (stored, fp32) query vectors
        expected = by_path(ref.conn)
        assert got.keys() == expected.keys()
        for path, vector in expected.items():
            assert np.abs(got[path] - vector).max() < 2e-3, path
        assert hits == {q: [h.path for h in ref.search(q, limit=5)] for q in QUERIES}
        ref_classified = ref.classify("default", top=None)
    assert classified.paths == ref_classified.paths
    assert np.abs(classified.top_probability - ref_classified.top_probability).max() < 2e-3
    assert [s["model"] for s in sets] == [f"clipsql-tiny48/{new_model.pretrained_id}"]
    assert sets[0]["stored_rows"] == 0
    for query in QUERIES:
        want = new_model.encode_text([query], fp32=True)[0]  # stored texts are fp32
        assert texts[query].to_numpy().shape == (48,)
        assert np.abs(texts[query].to_numpy() - want).max() < 2e-3


def test_searches_from_other_connections_never_fail_across_the_switch(dsn, tiny_model, wide_model,
                                                                      photo_folder):
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        db.store_texts(["stripes"])
    stop, errors, empties, dims = threading.Event(), [], [], set()

    def search_loop(model):
        with clipsql.connect(dsn, model=model) as other:
            while not stop.is_set():
                try:
                    if not other.search("a red square", limit=3):
                        empties.append("search")
                    if len(other.conn.execute(
                            "SELECT id FROM clipsql.images ORDER BY embedding <=> "
                            "clipsql.text_embedding('stripes') LIMIT 3").fetchall()) != 3:
                        empties.append("sql")
                    dims.add(other.embed_image(1).shape[0])  # SELECT embedding, type changes
                except Exception as exc:  # every error is a failure here
                    errors.append(repr(exc))

    threads = [threading.Thread(target=search_loop, args=(m,)) for m in (None, tiny_model)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    try:
        with clipsql.connect(dsn) as db:
            db.reembed(wide_model, batch_size=3)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == [] and empties == []
    assert dims == {32, 48}  # the loops ran before and after the switch


_KILLABLE = """
import sys, time
import clipsql
db = clipsql.connect(sys.argv[1])
db.reembed(sys.argv[2], batch_size=2, progress=lambda done, total: time.sleep(0.4))
"""


def test_a_killed_reembed_resumes_without_loss_or_duplicates(dsn, tiny_model, wide_model,
                                                             photo_folder):
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        ids = sorted(r[0] for r in db.conn.execute("SELECT id FROM clipsql.images"))
        proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, dsn, wide_model], cwd=ROOT,
                                env=os.environ.copy())
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None:
                row = db.conn.execute("SELECT embedded FROM clipsql.reembed").fetchone()
                if row and row[0] >= 4:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the reembed ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(0.5)  # let the server notice the dead session and release its lock
        state, embedded, finished = db.conn.execute(
            "SELECT state, embedded, finished_at FROM clipsql.reembed").fetchone()
        assert state == "embedding" and finished is None and 4 <= embedded < len(ids)
        assert db.status()["model"]["dim"] == 32  # searches still use the old model
        assert len(db.search("a red square", limit=3)) == 3
        report = db.reembed(wide_model, batch_size=4)
        assert report.resumed and report.switched
        assert report.embedded == len(ids) - embedded  # only what was missing
        rows = db.conn.execute("SELECT state, embedded, total FROM clipsql.reembed").fetchall()
        assert rows == [("done", len(ids), len(ids))]
        assert sorted(r[0] for r in db.conn.execute("SELECT id FROM clipsql.images")) == ids
        assert_clean_images_table(db.conn, 48)
        model = db.model
        for (path,) in db.conn.execute("SELECT path FROM clipsql.images").fetchall()[:3]:
            want = model.encode_images(_pixels(model, path))[0]
            assert np.abs(db.embed_image(path) - want).max() < 2e-3


def _pixels(model, path):
    from clipsql.ingest.decode import draft_size, read

    return read(path, model.preprocess, draft_size(model.image_size)).pixels[None]


def test_old_vectors_are_kept_until_dropped(dsn, tiny_model, wide_model, photo_folder):
    from click.testing import CliRunner

    from clipsql.cli import main

    # the vectors come back equal after two switches: one backend for a load and a reembed
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        old = dict(db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall())
        report = db.reembed(wide_model)
        assert report.old_kept
        kept = dict(db.conn.execute("SELECT id, embedding FROM clipsql.reembed_old").fetchall())
        assert {k: v.to_list() for k, v in kept.items()} == {k: v.to_list() for k, v in old.items()}
        result = CliRunner().invoke(main, ["reembed", "--drop-old", "--db", dsn, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["old_dropped"] == len(old)
        assert db.conn.execute("SELECT count(*) FROM clipsql.reembed_old").fetchone()[0] == 0
        # Back to the first model with the command, the old data dropped at once.
        result = CliRunner().invoke(main, ["reembed", "--model", tiny_model, "--drop-old",
                                           "--db", dsn, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["state"] == "done"
        assert db.conn.execute("SELECT count(*) FROM clipsql.reembed_old").fetchone()[0] == 0
        assert not db.conn.execute("SELECT old_kept FROM clipsql.reembed ORDER BY id DESC"
                                   ).fetchone()[0]
        assert_clean_images_table(db.conn, 32)
        back = dict(db.conn.execute("SELECT id, embedding FROM clipsql.images").fetchall())
        assert all(np.abs(back[k].to_numpy() - v.to_numpy()).max() < 2e-3 for k, v in old.items())


def test_a_running_web_server_follows_the_switch(dsn, tiny_model, wide_model, photo_folder,
                                                 tmp_path):
    import httpx

    from clipsql.web import create_app, serve_in_thread

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
    # The server is started without a model: it uses whichever the collection is bound to.
    app = create_app(dsn, thumbnails_dir=tmp_path / "thumbs")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        before = client.get("/api/search", params={"q": "a red square"})
        assert before.status_code == 200 and before.json()["results"]
        with clipsql.connect(dsn) as db:
            db.reembed(wide_model)
        after = client.get("/api/search", params={"q": "a red square", "limit": 5})
        assert after.status_code == 200, after.text
        with clipsql.connect(dsn) as db:
            expected = [h.id for h in db.search("a red square", limit=5)]
            assert db.status()["model"]["dim"] == 48
        assert [h["id"] for h in after.json()["results"]] == expected


def test_a_file_overwritten_with_another_photo_is_reported_never_half_updated(
        dsn, tiny_model, wide_model, photo_folder):
    """The file of a row now holds another photo: the reembed does not give the row that
    photo's vector under the old hash and metadata. It names the file and stays unfinished;
    a load re-reads the file (hash, size, vector), and the reembed run again embeds it."""
    from clipsql.errors import LoadError
    from clipsql.ingest.decode import draft_size, read

    columns = "sha256, bytes, width, height, embedding"
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        target = sorted(photo_folder.rglob("img03.*"))[0]
        before = db.conn.execute(f"SELECT {columns} FROM clipsql.images WHERE path = %s",
                                 (str(target),)).fetchone()
        make_image(target, color=(255, 128, 0), pattern=5, size=(50, 40))  # another photo
        with pytest.raises(LoadError, match=rf"^1 images could not be read for the new model, "
                                            rf"1 of them changed since they were loaded "
                                            rf"\({re.escape(str(target))}: changed: the file's sha256 is .*"
                                            rf"load their folders again"):
            db.reembed(wide_model, batch_size=4)
        row = db.conn.execute(f"SELECT {columns}, l2_norm(embedding_next) FROM clipsql.images "
                              "WHERE path = %s", (str(target),)).fetchone()
        assert row[:4] == before[:4] and row[4].to_list() == before[4].to_list()
        assert row[5] == 0  # still the placeholder: nothing of the other photo in the row
        others = db.conn.execute("SELECT count(*) FROM clipsql.images WHERE path <> %s AND "
                                 "l2_norm(embedding_next) > 0", (str(target),)).fetchone()[0]
        assert others == 11  # the rest was embedded, and is kept for the rerun
        assert db.status()["model"]["dim"] == 32
        assert db.load(photo_folder).updated == 1  # the current model re-reads it
        report = db.reembed(wide_model, batch_size=4)
        assert report.resumed and report.switched and report.embedded == 1
        sha, size, width, height, vector = db.conn.execute(
            f"SELECT {columns} FROM clipsql.images WHERE path = %s", (str(target),)).fetchone()
        model = db.model
        now = read(str(target), model.preprocess, draft_size(model.image_size))
        assert (sha, size, width, height) == (now.sha256, target.stat().st_size, 50, 40)
        want = model.encode_images(now.pixels[None])[0]
        assert np.abs(vector.to_numpy() - want).max() < 2e-3


def test_a_file_swapped_for_a_link_out_of_the_folder_is_not_read_again(
        dsn, tiny_model, wide_model, photo_folder, tmp_path):
    """A loaded photo later replaced by a link to a private file: the reembed reads the loaded
    folders only (clipsql.ingest.confine), so it names the file as ``link_outside``."""
    from clipsql.errors import LoadError

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        target = sorted(photo_folder.rglob("img03.*"))[0]
        make_image(tmp_path / "private" / target.name, color=(1, 2, 3), pattern=6)
        target.unlink()
        target.symlink_to(tmp_path / "private" / target.name)
        with pytest.raises(LoadError, match=rf"{re.escape(str(target))}: link_outside"):
            db.reembed(wide_model, batch_size=4)
