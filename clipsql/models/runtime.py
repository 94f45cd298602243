"""ONNX Runtime, the runtime of both towers on the CPU: one session per file and thread count.

Opening a session parses the file and packs its weights (a few hundred MB for ViT-B-32), so
a process opens each one once and shares it: ``InferenceSession.run`` is thread-safe. Image
batches run on every core, and their threads do not spin, so they do not burn the cores the
loader's decoders need between two batches. A text query (a few milliseconds, about fifty
matrix products in a row) runs where :func:`text_session` says: on :data:`TEXT_THREADS`
threads that spin :data:`TEXT_SPIN_US` between two products when a core is idle at that
moment, else on one thread (on a busy machine a second thread waits for a core, and the
query with it: ``benchmarks/text.py`` prints each setting).

>>> cores() >= 1
True
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

#: Intra-op threads for a text query when a core is idle (measured in benchmarks/text.py,
#: see docs/performance.md), and for a batch of texts.
TEXT_THREADS = 2
#: How long (microseconds) the idle threads of a text query's session spin for the next
#: product before they sleep: long enough to span the gaps inside a query, over soon after it.
TEXT_SPIN_US = 100
_SESSIONS: dict = {}
_lock = threading.Lock()
_limit: list[int] = []
_opening: set = set()  # spinning text sessions opened (or being opened) in the background
_background_lock = threading.Lock()
_loadavg: list[int] = []


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


def session(path: Path, threads: int | None = None, spin_us: int = 0):
    """The process's session for ``path`` with ``threads`` intra-op threads (default: all),
    spinning ``spin_us`` when idle (0: never)."""
    key = _key(path, threads, spin_us)
    with _lock:
        if key not in _SESSIONS:
            _SESSIONS[key] = open_session(path, key[1], key[2])
        return _SESSIONS[key]


def _key(path: Path, threads: int | None, spin_us: int) -> tuple:
    """A shared session's key: the file, its threads (at most :func:`cores`), its spin (none
    with one thread)."""
    threads = min(threads or cores(), cores())
    return str(path), threads, spin_us if threads > 1 else 0


def open_session(path: Path, threads: int | None = None, spin_us: int = 0):
    """A new session (not shared): ``session`` for the shared ones."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # no warnings about unused initialisers on stderr
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_us else "0")
    if spin_us:
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runnable() -> int | None:
    """Threads runnable on this machine at this moment, the caller's included (the kernel's
    count in ``/proc/loadavg``, a microsecond or two to read); None where it is unknown."""
    try:
        if not _loadavg:
            _loadavg.append(os.open("/proc/loadavg", os.O_RDONLY))
        return int(os.pread(_loadavg[0], 128, 0).split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def text_session(path: Path):
    """The session a text query on ``path`` runs on now: :data:`TEXT_THREADS` threads that
    spin :data:`TEXT_SPIN_US` when a core is idle at this moment (fewer runnable threads
    than cores), else one thread; where the count is unknown, :data:`TEXT_THREADS` threads
    that do not spin. The spinning session is opened in the background the first time a
    core is idle (queries take the one-thread session until it is there), so a query never
    waits for a session to open after the first."""
    if cores() < 2:
        return session(path, 1)
    now = runnable()
    if now is None:
        return session(path, TEXT_THREADS)
    if now >= cores():
        return session(path, 1)
    key = _key(path, TEXT_THREADS, TEXT_SPIN_US)
    ready = _SESSIONS.get(key)
    if ready is None:
        with _background_lock:
            if key not in _opening:  # once (a failed open is not tried again)
                _opening.add(key)
                threading.Thread(target=_open_in_background, args=(path, key), daemon=True,
                                 name="clipsql-text-session").start()
    return ready or session(path, 1)


def _open_in_background(path: Path, key: tuple) -> None:
    """Open a session for ``key`` without holding the sessions' lock (the queries that
    meanwhile take another session do not wait for it)."""
    try:
        opened = open_session(path, key[1], key[2])
    except Exception:  # the one-thread session answers instead
        return
    with _lock:
        _SESSIONS.setdefault(key, opened)


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
