"""The machine a figure was measured on: CPU model, the features that set ONNX Runtime's
kernels (AVX2, AVX-512, VNNI for int8, AMX), and package versions.

Every benchmark prints :func:`one_line` first: a timing means little without the CPU it
came from.

>>> info = describe()
>>> sorted(info) == ["cpu", "features", "logical_cpus", "versions"]
True
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: The /proc/cpuinfo flags that matter for CLIP inference on a CPU, in the order printed.
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "bf16", "i8mm")
#: Packages whose version changes a figure.
PACKAGES = ("onnxruntime", "torch", "numpy", "open_clip_torch")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset]:
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not name:
                name = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), frozenset(flags)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    return _cpuinfo()[0]


def cpu_features() -> list[str]:
    """The features of :data:`FEATURES` this CPU has (macOS/Windows: none are read)."""
    flags = _cpuinfo()[1]
    return [f for f in FEATURES if f in flags]


def versions(packages=PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (absent ones are left out)."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def describe() -> dict:
    """CPU model, logical CPUs, relevant features and package versions."""
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count() or 1,
            "features": cpu_features(), "versions": versions()}


def one_line() -> str:
    """:func:`describe` as the one line every benchmark prints first."""
    d = describe()
    return (f"CPU: {d['cpu']} ({d['logical_cpus']} logical CPUs; "
            f"{' '.join(d['features']) or 'no listed features'}); "
            + ", ".join(f"{k} {v}" for k, v in d["versions"].items()))
