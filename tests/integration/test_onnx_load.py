"""A load on the ONNX Runtime path: no torch in the process once the export is cached, the
same rows as torch fp32, and the backend reported by the load and by status."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import clipsql
from clipsql.models import runner
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
    assert report.backend == choice.backend and report.backend_reason.startswith("auto: ")
    assert after["backend"] == choice.backend and after["precision"] == "auto"
    if before["backend"] is None:  # this session had not calibrated the tiny model yet
        assert "not calibrated" in before["reason"]
    assert "images/s" in report.backend_reason


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
