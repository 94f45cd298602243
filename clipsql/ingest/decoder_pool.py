"""Where files are decoded during a load: a pool of threads (default) or of processes.

Threads suit a CPU-bound load: the model keeps every core busy, and Pillow's decoders,
resizing and SHA-256 release the GIL. When the model runs on a GPU the cores are free for
decoding, and the parts of decoding that hold the GIL (EXIF parsing, open_clip's transform
glue) would cap a thread pool; ``processes=True`` decodes in separate processes (started
with ``spawn``: forking a process that has started PyTorch's threads is unsafe), each with
one PyTorch thread. Tensors come back pickled (about 0.6 MB per image at 224 px).

:func:`decode_isolated` decodes one file in a new process of its own whose memory is limited
(the web server's uploads): nothing of the decode stays in the caller, and a decoder cannot
pass the limit.

>>> with Decoders(preprocess, draft_size=448, workers=4) as pool:     # doctest: +SKIP
...     [decoded] = pool.submit("/photos/a.jpg").result()
...     moments = pool.submit("/videos/b.mp4").result()
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from clipsql.errors import ImageError, LoadError
from clipsql.ingest import decode
from clipsql.ingest.decode import read
from clipsql.ingest.formats import is_video
from clipsql.ingest.reasons import Reason
from clipsql.ingest.video import read_moment, read_video

_state: dict = {}


def _start_process(preprocess, draft_size, workers, places) -> None:
    if "torch" in sys.modules:  # a torchvision transform (a numpy one needs no torch)
        sys.modules["torch"].set_num_threads(1)
    decode.BUDGET = decode.MemoryBudget(decode.DECODE_MEMORY // workers)  # a share each
    _state.update(preprocess=preprocess, draft_size=draft_size, places=places)


def _read_in_process(path: str):
    return read_file(path, _state["preprocess"], _state["draft_size"], places=_state["places"])


def _read_row_in_process(path: str, start_s):
    return read_row(path, start_s, _state["preprocess"], _state["draft_size"],
                    places=_state["places"])


def read_file(path: str, preprocess, draft_size: int | None = None, *, places=None) -> list:
    """The rows of one file: an image's one :class:`~clipsql.ingest.decode.Decoded`, or a
    video's moments (:func:`clipsql.ingest.video.read_video`), all with the file's facts.
    ``places``: the file opened must lie inside them (:mod:`clipsql.ingest.confine`)."""
    if is_video(path):
        return read_video(path, preprocess, draft_size, places=places)
    return [read(path, preprocess, draft_size, places=places)]


def read_row(path: str, start_s: float | None, preprocess, draft_size: int | None = None, *,
             places=None):
    """One stored row's file again (a reembed): a still image, or a video moment's keyframe
    with the video's facts, as the load read them (:func:`clipsql.ingest.video.read_moment`)."""
    if start_s is None:
        return read(path, preprocess, draft_size, places=places)
    return read_moment(path, start_s, preprocess, draft_size, places=places)


def _light(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, its :class:`ImageError` raised again without the frames it
    came through. A failed decode's exception waits in its Future until the loader takes it,
    and its traceback (and the context of the decoder's own exception) holds the decoder's
    locals: for a hostile file, hundreds of MB per file still queued."""
    try:
        return fn(*args, **kwargs)
    except ImageError as exc:
        light = ImageError(exc.reason, exc.detail)
    raise light  # outside the handler: no context, a traceback of this frame only


class Decoders:
    """``submit(path)`` gives a future of the file's rows (:func:`read_file`, or ImageError);
    every file opened must lie inside ``places`` (None: anywhere)."""

    def __init__(self, preprocess, draft_size: int | None, workers: int, processes: bool = False,
                 *, places=None):
        self.processes = processes
        self._preprocess, self._draft = preprocess, draft_size
        self._places = tuple(places) if places is not None else None
        if processes:
            self._pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process,
                initargs=(preprocess, draft_size, workers, self._places))
        else:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="clipsql-decode")

    def submit(self, path: str) -> Future:
        if self.processes:
            return self._pool.submit(_read_in_process, path)
        return self._pool.submit(_light, read_file, path, self._preprocess, self._draft,
                                 places=self._places)

    def submit_row(self, path: str, start_s: float | None) -> Future:
        """A future of one stored row's :class:`~clipsql.ingest.decode.Decoded` (:func:`read_row`)."""
        if self.processes:
            return self._pool.submit(_read_row_in_process, path, start_s)
        return self._pool.submit(_light, read_row, path, start_s, self._preprocess,
                                 self._draft, places=self._places)

    @staticmethod
    def result(future: Future):
        """The decoded file's rows; a decoder process that died becomes one clear :class:`LoadError`."""
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise LoadError(f"a decoder process died ({exc}); batches written so far are kept, "
                            "run the same load again to resume") from None

    def __enter__(self) -> Decoders:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- one file in a process of its own, with a memory limit (uploads) -----------------------
#: Seconds an isolated decode may take before its process is stopped.
ISOLATED_TIMEOUT_S = 60.0
_ISOLATED = "from clipsql.ingest.decoder_pool import isolated_main; isolated_main()"


def decode_isolated(path: str, memory: int, timeout: float = ISOLATED_TIMEOUT_S,
                   shrink_to: int | None = None):
    """Decode ``path`` as :func:`~clipsql.ingest.decode.read` does (every check, the pixels,
    the orientation, RGB; no model) in a new process whose address space may grow by at most
    ``memory`` bytes past its start-up; the (width, height) it decoded to, and with
    ``shrink_to`` also the picture itself, upright RGB, shrunk so that its shorter side is at
    most ``shrink_to`` pixels: ``((width, height), image)``. The caller then never decodes
    the file (the web server's uploads: it runs the model's transform on that image).

    Nothing of the decode stays in this process, and a decoder cannot pass the limit: its
    allocations fail there, an :class:`ImageError` (``decompression_bomb``) here. Other
    failures are the file's :class:`ImageError`; a process that dies, or runs past
    ``timeout`` seconds, is ``corrupt``.
    """
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="clipsql-decode-") as folder:
        out = os.path.join(folder, "pixels.rgb")
        args = [path, str(int(memory))] + ([str(int(shrink_to)), out] if shrink_to else [])
        try:
            done = subprocess.run([sys.executable, "-c", _ISOLATED, *args], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ImageError(Reason.CORRUPT, f"decoding it took longer than {timeout:g} s") from None
        lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (IndexError, ValueError):
            how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
            raise ImageError(Reason.CORRUPT, f"the decoder stopped on it ({how})") from None
        if "size" not in answer:
            raise ImageError(Reason.of(answer["reason"]), answer["detail"])
        size = tuple(answer["size"])
        if not shrink_to:
            return size
        from PIL import Image

        with open(out, "rb") as f:
            return size, Image.frombytes("RGB", tuple(answer["shrunk"]), f.read())


def isolated_main() -> None:
    """The process of :func:`decode_isolated` (arguments: path, bytes[, shrink_to, out]); one
    JSON line out, the shrunk picture's RGB bytes in ``out``. The limit is on the address
    space (RLIMIT_AS) past what the process holds once started; where there is no /proc (not
    Linux) the decode is still isolated, not limited."""
    path, memory = sys.argv[1], int(sys.argv[2])
    shrink_to, out = (int(sys.argv[3]), sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    decode.bound_heap()
    start = _address_space()
    if start is not None:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        limit = start + memory if hard == resource.RLIM_INFINITY else min(hard, start + memory)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        decoded = read(path, lambda img: img, shrink_to)
        answer = {"size": [decoded.width, decoded.height]}
        if out is not None:
            image = _shrunk(decoded.pixels, shrink_to)
            with open(out, "wb") as f:
                f.write(image.tobytes())
            answer["shrunk"] = list(image.size)
    except (ImageError, MemoryError) as exc:
        reason, detail = (exc.reason, exc.detail) if isinstance(exc, ImageError) else \
            (Reason.DECOMPRESSION_BOMB, decode.OUT_OF_MEMORY)
        if detail == decode.OUT_OF_MEMORY:
            detail = f"decoding it needs more than {memory >> 20} MB of memory"
        answer = {"reason": str(reason), "detail": detail}
    print(json.dumps(answer), flush=True)


def _shrunk(image, shorter: int):
    """``image`` (upright RGB) with its shorter side at most ``shorter`` pixels."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = shorter / min(w, h)
    if scale >= 1:
        return image
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                        Image.Resampling.BICUBIC)


def _address_space() -> int | None:
    """This process's virtual memory size (VmSize) in bytes; None without /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return None
