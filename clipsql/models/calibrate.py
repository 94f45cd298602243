"""``--precision auto``: measure the backends on this machine, keep the fastest accurate one.

A short calibration embeds a fixed batch of synthetic photo-like images with every
candidate backend (:func:`clipsql.models.backends.cpu_candidates`), interleaved over a few
rounds (each backend's best round counts: other work on the machine only ever slows a
round down, so the fastest one is the closest to the backend's own speed), and keeps the fastest whose embeddings stay within cosine :data:`ACCURACY_BAR` of
torch fp32 and which beats fp32 by at least :data:`MARGIN` (so noise never trades the
reference for a path that is not really faster). The choice is cached per machine
(CPU, features, package versions: :func:`clipsql.models.machine.fingerprint`) and weights in
``$CLIPSQL_HOME/cache/calibration/``. On CUDA auto means fp16; on Apple's MPS, fp32.

The stored choice is the fastest path for a large load. A load that knows how many images
it will embed also weighs what each path costs before its first image (importing torch and
building the model, or opening an ONNX Runtime session; measured at calibration) and takes
the path that finishes first (:func:`for_workload`), among the same accurate, faster-than-fp32
ones: for a hundred photos that is usually ONNX Runtime, which imports no torch.

>>> decide({"torch-fp32": 10.0, "torch-int8": 10.5, "onnx-int8": 15.0},
...        {"torch-fp32": 1.0, "torch-int8": 0.9999, "onnx-int8": 0.9985})[0]
'torch-fp32'
>>> decide({"torch-fp32": 10.0, "torch-bf16": 21.0}, {"torch-bf16": 0.9999})[0]
'torch-bf16'
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from clipsql.models.backends import BASELINE
from clipsql.models.onnx_export import ACCURACY_BAR, cosines

FORMAT = 2  # 2: start-up costs measured
#: A candidate must be at least this much faster than fp32 to replace it.
MARGIN = 1.10
#: The loader's default batch: the ranking of the backends changes with the batch size
#: (measured: torch-bf16 ahead of onnx-int8 at 32 images, behind at 8, on the same CPU).
IMAGES = 32
ROUNDS = 3


@dataclass
class Choice:
    """What auto chose, why, and the measurements behind it (``clipsql status`` shows them)."""

    backend: str
    reason: str
    rates: dict = field(default_factory=dict)      # images/s per backend (best round)
    cosines: dict = field(default_factory=dict)    # worst cosine to torch fp32
    machine: str = ""
    measured: str = ""                             # when (UTC, ISO 8601)
    #: seconds before the first image, per part: torch_import, torch_build, onnx_import (a
    #: new process pays the parts it has not done yet), and prepare: {backend: seconds to make
    #: its encoder (open an ONNX session, convert a copy of the torch weights)}
    startup: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def admissible(rates: dict, cos: dict, bar: float = ACCURACY_BAR,
               margin: float = MARGIN) -> dict:
    """backend -> rate of the paths auto may use: fp32 and every path at least ``margin``
    faster than it with worst cosine >= ``bar``."""
    base = rates[BASELINE]
    return {BASELINE: base, **{n: r for n, r in rates.items() if n != BASELINE
                               and cos.get(n, 0.0) >= bar and r >= base * margin}}


def decide(rates: dict, cos: dict, bar: float = ACCURACY_BAR,
           margin: float = MARGIN) -> tuple[str, str]:
    """The backend to keep and why, from measured ``rates`` and worst-case cosines ``cos``."""
    base = rates[BASELINE]
    accurate = {n: r for n, r in rates.items() if n != BASELINE and cos.get(n, 0.0) >= bar}
    faster = {n: r for n, r in admissible(rates, cos, bar, margin).items() if n != BASELINE}
    if not faster:
        near = max(accurate, key=accurate.get, default=None)
        why = (f"no other path is {margin:.2f}x faster at cosine >= {bar}"
               + (f" (best: {near} at {accurate[near] / base:.2f}x)" if near else ""))
        return BASELINE, f"{why}; torch-fp32 {base:.1f} images/s"
    best = max(faster, key=faster.get)
    return best, (f"{faster[best]:.1f} images/s vs torch-fp32 {base:.1f} "
                  f"({faster[best] / base:.2f}x), worst cosine to fp32 {cos[best]:.5f}")


def startup_of(backend: str, startup: dict, done: set) -> float:
    """Seconds ``backend`` needs before its first image, skipping the parts in ``done``."""
    parts = ("onnx_import",) if backend.startswith("onnx-") else ("torch_import", "torch_build")
    own = float((startup.get("prepare") or {}).get(backend, 0.0))
    return own + sum(float(startup.get(p, 0.0)) for p in parts if p not in done)


def for_workload(choice: Choice, images: int | None, done: set = frozenset()) -> tuple[str, str]:
    """The admissible backend that embeds ``images`` soonest, counting the start-up parts
    not yet ``done`` in this process; the stored choice when the count is unknown.

    >>> c = Choice("torch-bf16", "", rates={"torch-fp32": 9.0, "torch-bf16": 26.0,
    ...            "onnx-int8": 20.0}, cosines={"torch-bf16": 1.0, "onnx-int8": 1.0},
    ...            startup={"torch_import": 4.0, "torch_build": 1.0, "prepare": {"onnx-int8": 0.5}})
    >>> for_workload(c, 100)[0], for_workload(c, 100_000)[0]
    ('onnx-int8', 'torch-bf16')
    >>> for_workload(c, 100, done={"torch_import", "torch_build"})[0]
    'torch-bf16'
    """
    if not images or not choice.startup or not choice.rates.get(BASELINE):
        return choice.backend, choice.reason
    paths = admissible(choice.rates, choice.cosines)
    if choice.backend not in paths:  # a rule changed since it was measured: keep the stored one
        return choice.backend, choice.reason
    cost = {n: startup_of(n, choice.startup, done) + images / r for n, r in paths.items()}
    best = min(cost, key=cost.get)
    if best == choice.backend:
        return best, choice.reason
    stored = choice.backend
    return best, (f"{images} images: {best} done in about {cost[best]:.1f} s "
                  f"({startup_of(best, choice.startup, done):.1f} s to start) vs "
                  f"{stored} {cost[stored]:.1f} s ({startup_of(stored, choice.startup, done):.1f}"
                  f" s to start); for large loads: {choice.reason}")


def cache_file(model, device: str) -> Path | None:
    """Where the choice for ``model`` on ``device`` is kept; None for random weights."""
    from clipsql import config
    from clipsql.models.machine import fingerprint

    if model.spec.pretrained is None:
        return None
    key = json.dumps([FORMAT, fingerprint(), device, model.identity()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return config.home() / "cache" / "calibration" / f"{digest}.json"


def cached(model, device: str = "cpu") -> Choice | None:
    """The stored choice for ``model`` on this machine, without measuring anything."""
    path = cache_file(model, device)
    try:
        return Choice(**json.loads(path.read_text(encoding="utf-8"))) if path else None
    except (OSError, ValueError, TypeError):
        return None


def sample_images(size: int, n: int = IMAGES):
    """``n`` deterministic photo-like PIL images (smooth colour fields, edges, texture)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(1234)
    images = []
    for _ in range(n):
        field_ = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(field_).resize((size * 3 // 2, size), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
        noise = rng.normal(0, 12, (size, size * 3 // 2, 3))
        pixels = np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    return images


def measure(encoders: dict, pixels, rounds: int = ROUNDS) -> tuple[dict, dict]:
    """Images/s (best of ``rounds``, interleaved) and worst cosine to fp32 per encoder."""
    outputs, times = {}, {name: [] for name in encoders}
    for encoder in encoders.values():
        encoder.encode(pixels[:4])  # warm-up: first-call set-up (packing, allocation)
    for _ in range(rounds):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            out = encoder.encode(pixels)
            times[name].append(time.perf_counter() - start)
            outputs.setdefault(name, out)  # the accuracy check
    rates = {n: round(len(pixels) / min(t), 2) for n, t in times.items()}
    ref = outputs[BASELINE]
    cos = {n: round(float(cosines(out, ref).min()), 6) for n, out in outputs.items()}
    return rates, cos


def store(model, device: str, choice: Choice) -> None:
    path = cache_file(model, device)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(choice.to_dict(), indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: calibrate again next time
