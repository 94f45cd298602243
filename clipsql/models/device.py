"""Where and in which precision the model runs: device choice and precision rules.

>>> resolve_precision("auto", "cuda"), resolve_precision("auto", "cpu")
('fp16', 'fp32')
"""

from __future__ import annotations

import sys
from pathlib import Path

from clipsql.config import PRECISIONS
from clipsql.errors import ConfigError

__all__ = ["PRECISIONS", "resolve_precision", "quantize_int8", "pick_device"]


def resolve_precision(requested: str, device: str) -> str:
    """The precision the torch weights load in on ``device`` for ``requested`` (int8 and the
    ONNX paths start from fp32 weights); ConfigError for combinations that do not work."""
    if requested == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    if requested in ("int8", "onnx-fp32", "onnx-int8"):
        if device != "cpu":
            raise ConfigError(f"precision {requested} is for CPU inference; on a GPU use fp16 "
                              "or bf16")
        return "fp32"
    if requested == "fp16" and device == "cpu":
        raise ConfigError("precision fp16 is for GPUs; on a CPU use fp32 or int8")
    return requested


def quantize_int8(model):
    """Dynamic int8 quantisation of every nn.Linear (weights int8, activations quantised on
    the fly); attention projections inside nn.MultiheadAttention stay fp32."""
    import warnings

    import torch

    with warnings.catch_warnings():  # the torch.ao API is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def pick_device(requested: str = "auto") -> str:
    """``auto``: cuda if available, then mps, then cpu; anything else is returned as given.

    On Linux without NVIDIA device nodes the answer is cpu without importing torch (seconds
    saved for loads that run in ONNX Runtime)."""
    if requested != "auto":
        return requested
    if sys.platform.startswith("linux") and "torch" not in sys.modules \
            and not any(Path("/dev").glob("nvidia*")):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
