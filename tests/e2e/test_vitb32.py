"""The real ViT-B-32 architecture (random weights, saved and loaded back as a local checkpoint)
through the whole path: CLI load of real camera photos, text and image search."""

import json

import numpy as np
from click.testing import CliRunner

from clipsql.cli import main


def test_vitb32_checkpoint_end_to_end(dsn, vitb32_model, exif_samples):
    runner = CliRunner()
    env = {"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": vitb32_model}
    loaded = runner.invoke(main, ["load", str(exif_samples / "jpg" / "gps"), "--json"], env=env)
    assert loaded.exit_code == 0, loaded.output
    assert json.loads(loaded.stdout)["added"] == 9
    status = json.loads(runner.invoke(main, ["status", "--json"], env=env).stdout)
    assert status["model"]["arch"] == "ViT-B-32" and status["model"]["dim"] == 512
    assert status["model"]["pretrained"].startswith("file:vit-b-32.pt#")
    hits = json.loads(runner.invoke(main, ["search", "a church in Tuscany", "--json"], env=env).stdout)
    assert len(hits) == 9 and all(-1 <= h["score"] <= 1 for h in hits)

    import clipsql

    with clipsql.connect(dsn, model=vitb32_model) as db:
        assert db.model.image_size == 224
        vec = db.embed_text("a red bicycle")
        assert vec.shape == (512,) and abs(np.linalg.norm(vec) - 1) < 1e-5
        first = db.similar(hits[0]["id"], limit=3)
        assert hits[0]["id"] not in [h.id for h in first]
