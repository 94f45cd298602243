"""What this machine can do fast: the CPU's model and the features that decide the backend.

The right precision depends on the CPU, not on taste: with native bf16 (AVX512-BF16, AMX)
bf16 runs about twice as fast as fp32, without it about seven times slower (emulated), and
int8 pays off only with fast integer dot products (AVX512-VNNI, AVX-VNNI). The chooser
(:mod:`clipsql.models.calibrate`) measures; these facts tell it which paths are worth
measuring, and key its cache (a measurement on one CPU says nothing about another).

>>> info = describe()
>>> sorted(info) == ["cpu", "features", "logical_cpus", "versions"]
True
>>> has_native_bf16({"avx512_bf16"}), has_native_bf16({"avx2"})
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: The /proc/cpuinfo flags that matter for CLIP inference on a CPU, in the order printed.
FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
            "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "bf16", "i8mm")
#: Packages whose version changes the speed of a path (a calibration is redone when one does).
PACKAGES = ("torch", "onnxruntime", "numpy", "open_clip_torch")


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


def has_native_bf16(features=None) -> bool:
    """Whether bf16 matrix products run in hardware (else torch emulates them, slowly)."""
    features = set(cpu_features() if features is None else features)
    return bool(features & {"avx512_bf16", "amx_bf16", "bf16"})


def versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (absent ones are left out)."""
    found = {}
    for name in PACKAGES:
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


def fingerprint() -> str:
    """A short key for "the same machine and software": measurements are cached under it."""
    return hashlib.sha256(json.dumps(describe(), sort_keys=True).encode()).hexdigest()[:16]
