"""Open a file of a loaded folder only if the file opened really lies inside the loaded places.

The walk (:mod:`clipsql.ingest.walk`) leaves out links that lead outside the loaded folders,
but it lists a folder before the files are read: whoever can write into the folder can
replace a listed file by a link to a private file in between, or later, before an OCR run or
a reembed reads the row's path again. So every decode opens the file once, here, and checks
where the **opened** file is (on Linux the kernel's own name of the open file,
``/proc/self/fd/N``; elsewhere the resolved path, which must be the same file as the one
opened): outside the places it is refused as ``link_outside`` and nothing of it is read. The
decoders then read that open file (:func:`source`), never the path again, so the file
cannot be swapped between the check and the read.

It is opened without blocking, so a FIFO put in the place of a file is refused
(``unreadable``), not waited on for ever.

``places``: resolved folders (and files) as :attr:`clipsql.ingest.walk.Found.inside`, the
links' targets a load followed included (:func:`places_of`), or the recorded
``clipsql.roots`` (:func:`clipsql.ingest.roots.places`); None: no confinement (a file named
by the caller, such as an upload).

>>> with opened("/etc/hostname", ["/photos"]) as f:        # doctest: +SKIP
...     pass
Traceback (most recent call last):
ImageError: link_outside: ...
"""

from __future__ import annotations

import contextlib
import os
import stat

from clipsql.errors import ImageError
from clipsql.ingest.reasons import Reason

__all__ = ["open_inside", "opened", "places_of", "source"]

_PROC_FD = "/proc/self/fd"


def places_of(found) -> tuple[str, ...]:
    """The places a walk may read from: its resolved roots and the targets of the links it
    followed (``follow_links``)."""
    return tuple(found.inside) + tuple(real for _link, real in found.followed)


def open_inside(path: str, places) -> int:
    """A read-only descriptor of the regular file ``path``, checked to lie inside ``places``
    (None: not checked). Raises :class:`ImageError`: ``link_outside``, ``unreadable`` (not a
    regular file, no permission), ``vanished``, ``empty``."""
    from clipsql.ingest.decode import read_error
    from clipsql.ingest.walk import inside, printable  # the walk's rule (walk imports video)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise read_error(exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(Reason.UNREADABLE, "not a regular file (replaced since the folder "
                             "was listed?)")
        if places is not None:
            real = _real_path(fd, path, st)
            if not inside(real, places):
                raise ImageError(Reason.LINK_OUTSIDE, f"it leads to {printable(real)}, outside "
                                 "the loaded folders: not read")
        if st.st_size == 0:
            raise ImageError(Reason.EMPTY, Reason.EMPTY.description)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _real_path(fd: int, path: str, st) -> str:
    """Where the open file ``fd`` really is: the kernel's name for it, or (without /proc)
    the resolved ``path`` if that is still the file opened."""
    with contextlib.suppress(OSError):
        return os.readlink(f"{_PROC_FD}/{fd}")
    real = os.path.realpath(path)
    try:
        now = os.stat(real)
    except OSError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        raise ImageError(Reason.VANISHED, "the file changed while it was opened")
    return real


def source(fd: int, path: str) -> str:
    """A path that opens the same file as ``fd`` whatever happens to ``path`` meanwhile (for
    decoders that open by name, FFmpeg's): ``/proc/self/fd/N`` where there is one, else
    ``path`` itself."""
    link = f"{_PROC_FD}/{fd}"
    return link if os.path.exists(link) else os.path.abspath(path)


@contextlib.contextmanager
def opened(path: str, places):
    """:func:`open_inside` as a binary file object, closed at the end."""
    with os.fdopen(open_inside(path, places), "rb") as f:
        yield f
