"""Where settings come from: explicit arguments first, then environment variables, then defaults.

>>> from clipsql import config
>>> config.model_spec("ViT-B-16/openai")
'ViT-B-16/openai'
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "ViT-B-32/laion2b_s34b_b79k"
DEFAULT_DEVICE = "auto"
DEFAULT_PRECISION = "auto"
#: auto: fp16 on CUDA; on a CPU the fastest path that keeps cosine >= 0.999 to fp32, measured
#: once per machine and model (clipsql.models.calibrate). bf16: fast only with AVX512-BF16 or
#: AMX. int8: dynamic quantisation of the Linear layers (CPU). onnx-fp32, onnx-int8: ONNX
#: Runtime (the onnx extra).
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8", "onnx-fp32", "onnx-int8")

ENV_DATABASE_URL = "CLIPSQL_DATABASE_URL"
#: How SQL filters log in as clipsql_filter where that needs a password (see the security docs).
ENV_FILTER_DATABASE_URL = "CLIPSQL_FILTER_DATABASE_URL"
ENV_MODEL = "CLIPSQL_MODEL"
ENV_HOME = "CLIPSQL_HOME"
ENV_DEVICE = "CLIPSQL_DEVICE"
ENV_PRECISION = "CLIPSQL_PRECISION"
#: A folder of extra open_clip model configs (``NAME.json``), for custom architectures.
ENV_MODEL_CONFIGS = "CLIPSQL_MODEL_CONFIGS"


def home() -> Path:
    """The folder for clipsql's own state (embedded database, thumbnails)."""
    explicit = os.environ.get(ENV_HOME)
    if explicit:
        return Path(explicit).expanduser().resolve()
    import platformdirs

    return platformdirs.user_data_path("clipsql")


def database_url(explicit: str | None = None) -> str | None:
    """The DSN to use, or None for the embedded server."""
    return explicit or os.environ.get(ENV_DATABASE_URL) or None


def filter_database_url() -> str | None:
    """A URL that logs in as ``clipsql_filter``, for servers with password authentication."""
    return os.environ.get(ENV_FILTER_DATABASE_URL) or None


def model_spec(explicit: str | None = None) -> str | None:
    """The model spec the user asked for, or None when they did not ask."""
    return explicit or os.environ.get(ENV_MODEL) or None


def device(explicit: str | None = None) -> str:
    """The torch device the user asked for; ``auto`` picks cuda, mps or cpu."""
    return explicit or os.environ.get(ENV_DEVICE) or DEFAULT_DEVICE


def precision(explicit: str | None = None) -> str:
    """Inference precision: one of PRECISIONS (default auto: measured per machine)."""
    return explicit or os.environ.get(ENV_PRECISION) or DEFAULT_PRECISION
