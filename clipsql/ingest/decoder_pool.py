"""Where files are decoded during a load: a pool of threads (default) or of processes.

Threads suit a CPU-bound load: the model keeps every core busy, and Pillow's decoders,
resizing and SHA-256 release the GIL. When the model runs on a GPU the cores are free for
decoding, and the parts of decoding that hold the GIL (EXIF parsing, open_clip's transform
glue) would cap a thread pool; ``processes=True`` decodes in separate processes (started
with ``spawn``: forking a process that has started PyTorch's threads is unsafe), each with
one PyTorch thread. Tensors come back pickled (about 0.6 MB per image at 224 px).

>>> with Decoders(preprocess, draft_size=448, workers=4) as pool:     # doctest: +SKIP
...     decoded = pool.submit("/photos/a.jpg").result()
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from clipsql.errors import LoadError
from clipsql.ingest import decode
from clipsql.ingest.decode import read

_state: dict = {}


def _start_process(preprocess, draft_size, workers) -> None:
    if "torch" in sys.modules:  # a torchvision transform (a numpy one needs no torch)
        sys.modules["torch"].set_num_threads(1)
    decode.BUDGET = decode.MemoryBudget(decode.DECODE_MEMORY // workers)  # a share each
    _state.update(preprocess=preprocess, draft_size=draft_size)


def _read_in_process(path: str):
    return read(path, _state["preprocess"], _state["draft_size"])


class Decoders:
    """``submit(path)`` gives a future of :class:`~clipsql.ingest.decode.Decoded` (or ImageError)."""

    def __init__(self, preprocess, draft_size: int | None, workers: int, processes: bool = False):
        self.processes = processes
        self._preprocess, self._draft = preprocess, draft_size
        if processes:
            self._pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process, initargs=(preprocess, draft_size, workers))
        else:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="clipsql-decode")

    def submit(self, path: str) -> Future:
        if self.processes:
            return self._pool.submit(_read_in_process, path)
        return self._pool.submit(read, path, self._preprocess, self._draft)

    @staticmethod
    def result(future: Future):
        """The decoded file; a decoder process that died becomes one clear :class:`LoadError`."""
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise LoadError(f"a decoder process died ({exc}); batches written so far are kept, "
                            "run the same load again to resume") from None

    def __enter__(self) -> Decoders:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
