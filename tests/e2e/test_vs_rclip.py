"""benchmarks/vs_rclip.py runs end to end (4 photos, 1 round, the tiny model; nothing timed
is asserted; marked slow: it takes more than a minute). rclip is not a dependency: it lives in its own venv, CLIPSQL_RCLIP_VENV
(default .rclip-venv in the repository, which .ci/run makes); without one the test is skipped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_rclip.py"
MAKE_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "bench" / "make_photos.py"
RCLIP_VENV = Path(os.environ.get("CLIPSQL_RCLIP_VENV",
                                 Path(__file__).resolve().parents[2] / ".rclip-venv"))


def rclip_missing() -> str | None:
    python = RCLIP_VENV / "bin" / "python"
    if not python.exists():
        return f"no rclip venv at {RCLIP_VENV} (set CLIPSQL_RCLIP_VENV, or pip install rclip there)"
    proc = subprocess.run([str(python), "-c", "import rclip.main, onnxruntime"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"rclip is not importable in {RCLIP_VENV}: {tail}"
    return None


@pytest.mark.slow  # 90 s on 2 quiet cores (ONNX export, 3 embedded-server starts), 3 min busy
def test_vs_rclip_benchmark(tmp_path, request):
    if why := rclip_missing():
        pytest.skip(why)
    if not MAKE_PHOTOS.exists():
        pytest.skip(f"{MAKE_PHOTOS} is missing (it makes the benchmark photos)")
    tiny_model = request.getfixturevalue("tiny_model")  # after the skips: it imports open_clip
    scratch = tmp_path / "tmpdir"  # the benchmark's TMPDIR: it must leave nothing there
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--count", "4", "--repeats", "1", "--warmups", "0",
         "--model", tiny_model, "--rclip-venv", str(RCLIP_VENV)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
        # CLIPSQL_MODEL_CONFIGS: from tiny_model; no session CLIPSQL_CACHE: the benchmark
        # keeps its exports and calibrations in the homes it makes, as for a user
        env={**{k: v for k, v in os.environ.items() if k != "CLIPSQL_CACHE"},
             "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    out = proc.stdout
    for line in ("rclip_time / clipsql_time", "nothing new", "model only", "load rate / model-only",
                 "timed clipsql load: embedded with",
                 "max |onnxruntime - torch|", "check: `rclip"):
        assert line in out, out
    left = sum(f.stat().st_size for f in scratch.rglob("*") if f.is_file())
    assert left < 2**20, f"the benchmark left {left:,} bytes in {sorted(p.name for p in scratch.iterdir())}"
