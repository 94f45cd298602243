"""A load on the ONNX Runtime path: no torch in the process once the export is cached, the
same rows as torch fp32, and the backend reported by the load and by status."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import clipsql
from clipsql.models import calibrate, runner
from clipsql.models.openclip import ClipModel

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'clipsql[onnx]')")

PROBE = """
import json, sys
import clipsql
with clipsql.connect({dsn!r}, model={spec!r}, precision={precision!r}) as db:
    report = db.load({folder!r})
    status = db.status()
print(json.dumps({{"added": report.added, "backend": report.backend,
                  "status": status["backend"],
                  "heavy": sorted(m for m in ("torch", "open_clip", "torchvision")
                                  if m in sys.modules)}}))
"""


QUERY_IMAGE = """
import json, sys
import clipsql
with clipsql.connect({dsn!r}, model={spec!r}) as db:
    vector = db.embed_image({photo!r})
    backend = db.model.backend
print(json.dumps({{"backend": backend, "norm": round(float((vector ** 2).sum()) ** 0.5, 3),
                  "heavy": sorted(m for m in ("torch", "open_clip") if m in sys.modules)}}))
"""


def probe(**kw):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(**kw)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def embeddings(dsn):
    with clipsql.connect(dsn) as db:
        rows = db.conn.execute("SELECT path, embedding FROM clipsql.images").fetchall()
    return {p: e.to_numpy().astype(np.float64) for p, e in rows}


def test_a_cached_onnx_export_loads_without_torch(dsn, pg_admin_url, tiny_model, photo_folder):
    from tests.conftest import fresh_database

    runner.ensure_export(ClipModel(tiny_model, device="cpu", precision="onnx-fp32"))
    out = probe(dsn=dsn, spec=tiny_model, precision="onnx-fp32", folder=str(photo_folder))
    assert out["added"] == 12 and out["backend"] == "onnx-fp32"
    assert out["heavy"] == []  # neither torch nor open_clip was imported
    assert out["status"]["backend"] == "onnx-fp32"
    with fresh_database(pg_admin_url) as other:
        with clipsql.connect(other, model=tiny_model, precision="fp32") as db:
            assert db.load(photo_folder).backend == "torch-fp32"
        reference = embeddings(other)
    got = embeddings(dsn)
    assert got.keys() == reference.keys()
    for path, vector in got.items():  # halfvec storage: equal to its rounding
        cos = vector @ reference[path] / np.linalg.norm(vector) / np.linalg.norm(reference[path])
        assert cos >= 0.9999, path


def test_auto_reports_what_it_chose_and_why(dsn, tiny_model, photo_folder):
    with clipsql.connect(dsn, model=tiny_model) as db:
        before = db.status()["backend"]
        report = db.load(photo_folder)
        after = db.status()["backend"]
    choice = ClipModel(tiny_model, device="cpu").calibration
    # the stored choice (large loads), or the path that finishes 12 images first
    assert report.backend in calibrate.admissible(choice.rates, choice.cosines)
    assert report.backend == choice.backend or "12 images: " in report.backend_reason
    assert report.backend_reason.startswith("auto: ")
    assert after["backend"] == report.backend and after["precision"] == "auto"
    if before["backend"] is None:  # this session had not calibrated the tiny model yet
        assert "not calibrated" in before["reason"]
    assert "images/s" in report.backend_reason
    assert {"torch_import", "torch_build"} <= set(choice.startup)


def rig(model, **startup):
    """Store a calibration for ``model`` whose stored (large-load) choice is torch-bf16."""
    choice = calibrate.Choice(
        "torch-bf16", "rigged: torch-bf16 3.0x", machine="test",
        rates={"torch-fp32": 10.0, "torch-bf16": 30.0, "onnx-fp32": 20.0},
        cosines={"torch-fp32": 1.0, "torch-bf16": 1.0, "onnx-fp32": 1.0}, startup=startup)
    calibrate.store(model, "cpu", choice)
    return choice


def test_a_small_auto_load_takes_the_path_that_starts_faster(dsn, tiny_model, photo_folder,
                                                            tmp_path, monkeypatch):
    # a home of its own: the rigged calibration must not reach the other tests
    monkeypatch.setenv("CLIPSQL_HOME", str(tmp_path / "home"))
    model = ClipModel(tiny_model, device="cpu", precision="onnx-fp32")
    runner.ensure_export(model)
    rig(model, torch_import=50.0, torch_build=50.0, onnx_import=0.5,
        prepare={"onnx-fp32": 0.5, "torch-bf16": 0.1})
    out = probe(dsn=dsn, spec=tiny_model, precision="auto", folder=str(photo_folder))
    # 12 images: onnx-fp32 needs 1 s + 0.6 s, torch-bf16 100 s + 0.4 s
    assert out["added"] == 12 and out["backend"] == "onnx-fp32"
    assert out["heavy"] == []
    # one query image ("more like this file") is a workload of one: no torch either
    first = next(p for p in sorted(photo_folder.rglob("*")) if p.is_file())
    photo = str(tmp_path / f"query{first.suffix}")  # not in the table: it must be embedded
    shutil.copyfile(first, photo)
    proc = subprocess.run([sys.executable, "-c", QUERY_IMAGE.format(dsn=dsn, spec=tiny_model,
                                                                   photo=photo)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"backend": "onnx-fp32",
                                                                "heavy": [], "norm": 1.0}
    # once torch is built in this process, the stored (faster per image) choice wins
    loaded = ClipModel(tiny_model, device="cpu")
    loaded.torch_model
    loaded.plan(12)
    assert loaded.backend == "torch-bf16"
    # and so it does for a large load, started from nothing
    fresh = ClipModel(tiny_model, device="cpu")
    fresh.plan(1_000_000)
    assert runner.auto_backend(fresh, calibrate.cached(fresh))[0] == "torch-bf16"


def test_the_cli_prints_the_backend(dsn, tiny_model, photo_folder):
    from click.testing import CliRunner

    from clipsql.cli import main

    load = CliRunner().invoke(main, ["load", str(photo_folder), "--db", dsn, "--model",
                                     tiny_model, "--precision", "onnx-int8"])
    assert load.exit_code == 0, load.output
    assert "embedded with onnx-int8 (asked for (onnx-int8))" in load.output or \
        "embedded with torch-fp32 (onnx-int8 unavailable" in load.output
    status = CliRunner().invoke(main, ["status", "--db", dsn])
    assert status.exit_code == 0 and "backend:" in status.output
