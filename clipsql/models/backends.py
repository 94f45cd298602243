"""The ways clipsql can run an image tower, and the encoder object each one gives.

A backend is a runtime and a precision: ``torch-fp32`` (the reference), ``torch-fp16``
(CUDA), ``torch-bf16`` (fast only with native bf16: AVX512-BF16 or AMX), ``torch-int8``
(dynamic quantisation of the Linear layers), ``onnx-fp32`` and ``onnx-int8`` (ONNX Runtime,
the ``onnx`` extra; see :mod:`clipsql.models.onnx_export`). ``--precision`` takes the short
names (``fp32``, ``bf16``...), the ONNX ones, or ``auto``: measure and pick
(:mod:`clipsql.models.calibrate`).

>>> backend_for("bf16"), backend_for("onnx-int8")
('torch-bf16', 'onnx-int8')
>>> cpu_candidates({"avx2"}, onnx=True)
['torch-fp32', 'torch-int8', 'onnx-fp32', 'onnx-int8']
"""

from __future__ import annotations

import copy

import numpy as np

from clipsql.errors import ConfigError
from clipsql.models.machine import has_native_bf16

BACKENDS = ("torch-fp32", "torch-fp16", "torch-bf16", "torch-int8", "onnx-fp32", "onnx-int8")
BASELINE = "torch-fp32"


def backend_for(precision: str) -> str:
    """The backend a ``--precision`` value other than ``auto`` names."""
    name = precision if precision.startswith("onnx-") else f"torch-{precision}"
    if name not in BACKENDS:
        raise ConfigError(f"no backend for precision {precision!r}")
    return name


def precision_of(backend: str) -> str:
    """The ``--precision`` value that forces ``backend`` (the inverse of :func:`backend_for`)."""
    return backend if is_onnx(backend) else backend.removeprefix("torch-")


def cpu_candidates(features=None, onnx: bool = False) -> list[str]:
    """The CPU backends worth measuring: bf16 only where it runs in hardware (emulated it is
    several times slower than fp32), ONNX Runtime only where it is installed."""
    names = [BASELINE]
    if has_native_bf16(features):
        names.append("torch-bf16")
    names.append("torch-int8")
    if onnx:
        names += ["onnx-fp32", "onnx-int8"]
    return names


def is_onnx(backend: str) -> bool:
    return backend.startswith("onnx-")


class TorchImageEncoder:
    """``encode(pixels)`` with a torch model in one dtype: L2-normalised float32 numpy rows."""

    def __init__(self, net, dtype, device: str):
        self.net, self.dtype, self.device = net, dtype, device

    def encode(self, pixels) -> np.ndarray:
        import torch

        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels)
        with torch.inference_mode():
            out = self.net.encode_image(pixels.to(self.device, dtype=self.dtype))
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()


def torch_encoder(net, backend: str, device: str, loaded_as: str = "fp32") -> TorchImageEncoder:
    """The encoder of a torch ``backend`` from ``net``, a model loaded in ``loaded_as``; the
    other precisions are made from a copy, so ``net`` stays what it was."""
    import torch

    from clipsql.models.device import quantize_int8

    precision = backend.removeprefix("torch-")
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == loaded_as:
        return TorchImageEncoder(net, dtypes.get(precision, torch.float32), device)
    visual = copy.deepcopy(net.visual)
    if precision == "int8":
        visual = quantize_int8(visual.float())
    elif precision in dtypes:
        visual = visual.to(dtypes[precision])
    return TorchImageEncoder(_VisualOnly(visual), dtypes.get(precision, torch.float32), device)


class _VisualOnly:
    """An image tower alone behind ``encode_image`` (a copy in another precision)."""

    def __init__(self, visual):
        self.visual = visual

    def encode_image(self, pixels):
        return self.visual(pixels)
