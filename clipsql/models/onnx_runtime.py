"""Run the ONNX exports (:mod:`clipsql.models.onnx_export`) with ONNX Runtime on the CPU.

Sessions are opened once per process and file (opening one parses a few hundred MB).
Images run on every core; a text query runs on one thread: a few tokens are bound by
reading the weights, and a second thread only adds synchronisation (benchmarks/text.py).

>>> encoder = ImageEncoder(folder / "image-int8.onnx")        # doctest: +SKIP
>>> encoder.encode(pixels).shape                              # doctest: +SKIP
(32, 512)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

_SESSIONS: dict = {}
_lock = threading.Lock()


def session(path: Path, threads: int | None = None):
    """The process's ONNX Runtime session for ``path`` with ``threads`` intra-op threads."""
    key = (str(path), threads)
    with _lock:
        if key not in _SESSIONS:
            _SESSIONS[key] = _open(path, threads)
        return _SESSIONS[key]


def _open(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no warnings about unused initialisers on stderr
    # no busy-waiting between calls: the loader's decoder threads need those cycles
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(path: Path, array: np.ndarray) -> np.ndarray:
    """One uncached run (the export check: the file is about to move)."""
    return _open(path, None).run(None, {"input": array})[0]


def _normalised(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class ImageEncoder:
    """``encode(pixels)``: L2-normalised image embeddings from preprocessed pixels."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self._session = session(self.path, threads)

    def encode(self, pixels) -> np.ndarray:
        array = pixels.numpy() if hasattr(pixels, "numpy") else np.asarray(pixels)
        return _normalised(self._session.run(None, {"input": array.astype(np.float32)})[0])


class TextEncoder:
    """``encode_ids(ids)``: L2-normalised text embeddings from token ids cut after the last
    end-of-text token (no padding to the context length)."""

    def __init__(self, path: Path, threads: int = 1):
        self.path = Path(path)
        self.int8 = "int8" in self.path.name
        self._session = session(self.path, threads)

    def encode_ids(self, ids: np.ndarray) -> np.ndarray:
        return _normalised(self._session.run(None, {"input": ids.astype(np.int64)})[0])
