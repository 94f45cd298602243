"""What a backend costs before its first image: imports, building the model, opening a session.

For a load of a hundred photos these fixed costs weigh as much as the embedding itself
(measured here: importing torch and open_clip about 4 s, building ViT-B-32 from its
checkpoint about 1 s, opening an ONNX Runtime session well under a second), so
``--precision auto`` counts them when it knows how many images a load will embed
(:func:`clipsql.models.calibrate.for_workload`). They are measured once per machine, at
calibration; an import that already happened in this process is timed in a fresh one.

>>> sorted(done_parts(None)) in ([], ["onnx_import"], ["torch_import"], ["onnx_import", "torch_import"])
True
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

TORCH = ("torch", "open_clip")
ONNX = ("onnxruntime",)
_PROBE = ("import time; t = time.perf_counter(); import {mods}; "
          "print(time.perf_counter() - t)")


def done_parts(model) -> set:
    """The start-up parts this process has already paid for ``model`` (None: imports only)."""
    done = set()
    if all(m in sys.modules for m in TORCH):
        done.add("torch_import")
    if model is not None and model.loaded:
        done.add("torch_build")
    if all(m in sys.modules for m in ONNX):
        done.add("onnx_import")
    return done


def import_seconds(modules: tuple[str, ...]) -> float | None:
    """Seconds a new process spends importing ``modules`` (None: they cannot be imported).

    Timed in this process when none of them is imported yet (the import then happens here),
    else read from this machine's cache, else timed in a subprocess and cached.
    """
    key = "+".join(modules)
    if not any(m in sys.modules for m in modules):
        start = time.perf_counter()
        try:
            for m in modules:
                __import__(m)
        except ImportError:
            return None
        seconds = round(time.perf_counter() - start, 3)
        _remember(key, seconds)
        return seconds
    known = _cached().get(key)
    if known is not None:
        return float(known)
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE.format(mods=", ".join(modules))],
                             capture_output=True, text=True, timeout=300, check=True)
        seconds = round(float(out.stdout.strip().splitlines()[-1]), 3)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
    _remember(key, seconds)
    return seconds


def _cache_file():
    from clipsql import config
    from clipsql.models.machine import fingerprint

    return config.home() / "cache" / "calibration" / f"imports-{fingerprint()}.json"


def _cached() -> dict:
    try:
        return json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remember(key: str, seconds: float) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{key}.tmp")
        tmp.write_text(json.dumps({**_cached(), key: seconds}), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: measured again next time
