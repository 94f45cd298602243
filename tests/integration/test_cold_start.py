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
