"""Opt-in faster CPU inference (int8, bf16): embeddings stay close to fp32 on real photos."""

import numpy as np
import pytest

import clipsql
from clipsql.errors import ConfigError
from clipsql.models.device import resolve_precision
from clipsql.models.openclip import ClipModel


def test_precision_choices():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(ConfigError, match="CPU"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ConfigError, match="GPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        ClipModel("ViT-B-32", precision="int4")


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_low_precision_load_matches_fp32_on_real_photos(dsn, tiny_model, exif_samples, pg_admin_url,
                                                        precision):
    from tests.conftest import fresh_database

    folder = exif_samples / "jpg" / "gps"
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(folder)
        fp32 = dict(db.conn.execute("SELECT path, embedding FROM clipsql.images").fetchall())
    with fresh_database(pg_admin_url) as other:
        with clipsql.connect(other, model=tiny_model, precision=precision) as db:
            assert db.load(folder).added == 9 and db.model.backend == f"torch-{precision}"
            low = dict(db.conn.execute("SELECT path, embedding FROM clipsql.images").fetchall())
    cos = [float(np.dot(fp32[p].to_numpy(), low[p].to_numpy())
                 / np.linalg.norm(fp32[p].to_numpy()) / np.linalg.norm(low[p].to_numpy())) for p in fp32]
    assert len(cos) == 9 and min(cos) >= 0.99, cos
