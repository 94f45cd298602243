"""Cold start: a new process answers a repeated text query or an image-id query without
importing torch or open_clip (the seconds a fresh `clipsql search` would otherwise spend)."""

import json
import os
import subprocess
import sys

import numpy as np

PROBE = """
import json, sys
import clipsql
db = clipsql.connect()
out = {{"text": [h.id for h in db.search({text!r}, limit=3)],
        "image": [h.id for h in db.search(image=2, limit=3)]}}
out["heavy"] = sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules)
print(json.dumps(out))
"""


def run(code, **env):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cached_text_and_image_id_queries_load_no_model(db, dsn):
    db.add_embeddings([f"k{i}" for i in range(30)], np.random.default_rng(0).normal(size=(30, 32)))
    from clipsql.query import text_cache as textcache

    db.embed_text("two dogs in snow")  # embeds and stores it
    textcache.clear()  # the expected ranking uses the stored (half precision) vector too
    expected = [h.id for h in db.search("two dogs in snow", limit=3)]
    out = run(PROBE.format(text="two dogs in snow"), CLIPSQL_DATABASE_URL=dsn)
    assert out["heavy"] == []
    assert out["text"] == expected and len(out["image"]) == 3 and 2 not in out["image"]


def test_model_identity_needs_no_open_clip_import():
    out = run("import json, sys\nfrom clipsql.models.openclip import ClipModel\n"
              "m = ClipModel('ViT-B-32/laion2b_s34b_b79k')\n"
              "print(json.dumps({'id': m.identity(), 'heavy': 'open_clip' in sys.modules}))")
    assert out == {"id": {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "dim": 512},
                   "heavy": False}


def test_new_text_query_after_a_load_loads_no_model(dsn, tiny_model, photo_folder):
    """A text never seen before, in a new process after a load: ONNX Runtime's text tower
    answers (the load left the export), neither torch nor open_clip is imported."""
    import clipsql

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        expected = [h.id for h in db.search("a text never seen before", limit=3)]
        db.conn.execute("DELETE FROM clipsql.text_embeddings")
    out = run(PROBE.format(text="a text never seen before"), CLIPSQL_DATABASE_URL=dsn)
    assert out["heavy"] == []
    assert out["text"] == expected


def test_the_web_backend_prepares_the_model_at_start_not_in_a_request(dsn, tiny_model,
                                                                      photo_folder, tmp_path,
                                                                      monkeypatch):
    """A new machine (an empty export cache): the one-time export runs when the server
    starts; the first upload and the first search run no set-up at all."""
    import clipsql
    from clipsql.models import export
    from clipsql.web.backend import Backend

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
    monkeypatch.setenv("CLIPSQL_CACHE", str(tmp_path / "new-machine"))
    steps = []
    backend = Backend(dsn, model=tiny_model, steps=steps.append)
    try:
        assert steps[-len(export.STEPS):] == list(export.STEPS)  # at start
        assert backend.service.loaded.prepared

        def no_setup(*args, **kwargs):
            raise AssertionError("a one-time set-up ran inside a request")

        monkeypatch.setattr(export, "in_subprocess", no_setup)
        monkeypatch.setattr(type(backend.service.loaded), "_make_engine", no_setup)
        upload = backend.embed_upload(str(next(photo_folder.rglob("img01.*"))))
        page, _, _ = backend.search("a red square", limit=3)
        assert upload.shape == (32,) and len(page) == 3
    finally:
        backend.close()


def test_a_cached_text_never_waits_for_the_model(dsn, tiny_model, photo_folder, tmp_path,
                                                 monkeypatch):
    """While one thread prepares the model (held in the middle of its export), searches of
    a text stored in the table and of one in memory answer: they never take the model."""
    import threading

    import clipsql
    from clipsql.database import connection
    from clipsql.query import text_cache
    from clipsql.service import QueryService

    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        db.embed_text("a stored text")
        expected = [h.id for h in db.search("a stored text", limit=3)]
    text_cache.clear()
    monkeypatch.setenv("CLIPSQL_CACHE", str(tmp_path / "new-machine"))
    service = QueryService(tiny_model)
    exporting, answered, finished = threading.Event(), threading.Event(), threading.Event()
    waited = []

    def step(what):
        exporting.set()
        waited.append(answered.wait(120))  # the export is held here until the searches end

    def prepare():
        with connection.connect(dsn) as conn:
            service.model(conn).prepare(step)
        finished.set()

    preparing = threading.Thread(target=prepare)
    preparing.start()
    try:
        assert exporting.wait(120)
        with connection.connect(dsn) as conn:
            stored = [h.id for h in service.search(conn, "a stored text", limit=3)]
            again = [h.id for h in service.search(conn, "a stored text", store=False, limit=3)]
            assert not finished.is_set()  # both answered while the export was held
    finally:
        answered.set()
        preparing.join(300)
    assert stored == expected and again == expected
    assert waited and all(waited) and finished.is_set()
