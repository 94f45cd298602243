"""ONNX Runtime, the runtime of both towers on the CPU: one session per file and thread count.

Opening a session parses the file and packs its weights (a few hundred MB for ViT-B-32), so
a process opens each one once and shares it: ``InferenceSession.run`` is thread-safe. Image
batches run on every core; a text query on :data:`TEXT_THREADS` (a few tokens are bound by
reading the weights: ``benchmarks/text.py`` prints both). Spinning is off, so the threads of a
session do not burn the cores the loader's decoders need between two batches.

>>> cores() >= 1
True
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

#: Intra-op threads for a text query (measured in benchmarks/text.py, see docs/performance.md).
TEXT_THREADS = 2
_SESSIONS: dict = {}
_lock = threading.Lock()
_limit: list[int] = []


def cores() -> int:
    """The cores this process may use (its affinity, or :func:`limit_threads`'s cap)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min([n, *_limit]))


def limit_threads(n: int) -> None:
    """Cap every session opened from now on at ``n`` threads (a Ray actor's share of a node)."""
    _limit[:] = [max(1, int(n))]


def session(path: Path, threads: int | None = None):
    """The process's session for ``path`` with ``threads`` intra-op threads (default: all)."""
    threads = min(threads or cores(), cores())
    key = (str(path), threads)
    with _lock:
        if key not in _SESSIONS:
            _SESSIONS[key] = open_session(path, threads)
        return _SESSIONS[key]


def open_session(path: Path, threads: int | None = None):
    """A new session (not shared): ``session`` for the shared ones."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no warnings about unused initialisers on stderr
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(session, array: np.ndarray, per_row: bool = False) -> np.ndarray:
    """The session's output for ``array``; ``per_row``: one row at a time (int8 towers, whose
    activation scale spans the whole input: each row then depends on itself alone)."""
    if not per_row or len(array) <= 1:
        return session.run(None, {"input": array})[0]
    return np.concatenate([session.run(None, {"input": array[i:i + 1]})[0]
                           for i in range(len(array))])


def run_once(path: Path, array: np.ndarray) -> np.ndarray:
    """One run on a session that is not kept (an export's check: the file is about to move)."""
    return open_session(path).run(None, {"input": array})[0]


def normalised(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
