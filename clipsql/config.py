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
#: auto: on a CPU, ONNX Runtime int8 where the export's check on the checkpoint keeps cosine
#: >= 0.999 to fp32, else fp32 (a rule, never a measurement: clipsql.models.openclip); on CUDA,
#: torch fp16. fp32 and int8 force ONNX Runtime's fp32 or int8 export on the CPU; fp16 is
#: for GPUs.
PRECISIONS = ("auto", "fp32", "int8", "fp16")
#: Images embedded per model call by a load or a reembed (``--batch-size``).
BATCH_SIZE = 32
#: Seconds ``clipsql serve`` waits at start-up for a database that is not accepting
#: connections yet (a container started beside its database's), trying again after 0.5, 1,
#: 2, 4, 8, 8... s.
CONNECT_WAIT_S = 60.0

ENV_DATABASE_URL = "CLIPSQL_DATABASE_URL"
#: How SQL filters log in as clipsql_filter where that needs a password (see the security docs).
ENV_FILTER_DATABASE_URL = "CLIPSQL_FILTER_DATABASE_URL"
ENV_MODEL = "CLIPSQL_MODEL"
ENV_HOME = "CLIPSQL_HOME"
#: Where model exports are kept (default ``$CLIPSQL_HOME/cache``): see clipsql.models.cache.
ENV_CACHE = "CLIPSQL_CACHE"
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


def cache_home() -> Path:
    """The folder of clipsql's caches (``$CLIPSQL_CACHE``, else ``home() / "cache"``)."""
    explicit = os.environ.get(ENV_CACHE)
    return Path(explicit).expanduser().resolve() if explicit else home() / "cache"


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
    """Inference precision: one of PRECISIONS (default auto: a fixed rule per checkpoint)."""
    return explicit or os.environ.get(ENV_PRECISION) or DEFAULT_PRECISION


#: CPU seconds the decode of one file may take (one more second per MB of it, 1/60 of this
#: per MB when set): past it the file is a failure, ``too_slow`` (clipsql.ingest.video).
DECODE_DEADLINE_S = 60.0
ENV_DECODE_DEADLINE = "CLIPSQL_DECODE_DEADLINE"


def decode_deadline(explicit: float | None = None) -> float:
    """CPU seconds a file's decode may take before its size is counted: ``explicit``, else
    ``$CLIPSQL_DECODE_DEADLINE``, else :data:`DECODE_DEADLINE_S` (a value that is not a
    positive number counts as the default)."""
    value = explicit if explicit is not None else os.environ.get(ENV_DECODE_DEADLINE)
    try:
        seconds = float(value) if value not in (None, "") else DECODE_DEADLINE_S
    except ValueError:
        return DECODE_DEADLINE_S
    return seconds if seconds > 0 and seconds == seconds else DECODE_DEADLINE_S
