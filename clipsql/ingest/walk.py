"""Find image and video files under folders, safely, and account for every other file.

Each file under a folder ends in exactly one of three lists:

* ``files``: images and videos to load (decided by name, see :mod:`clipsql.ingest.formats`
  and :mod:`clipsql.ingest.video`);
* ``failed``: images that cannot even be opened, ``path -> (reason, detail)`` with the
  reasons (:class:`~clipsql.ingest.reasons.Reason`) ``bad_name`` (not valid UTF-8),
  ``broken_link``, ``vanished`` and ``unreadable`` (no permission, not a regular file such
  as a FIFO, or a folder that cannot be listed, which is also a blind spot that pruning
  never touches);
* ``ignored``: ``path -> reason`` (:class:`~clipsql.ingest.reasons.Ignored`) for files that
  are neither images nor videos (``not_image``) and hidden files (``hidden``, such as ``.DS_Store``).
  Hidden folders are not entered.

Paths that are not valid UTF-8 are given as text with the odd bytes shown as ``\\xNN``.
``skipped`` repeats every failure as ``(path, text)`` and adds what is not a file at all
(a symlink loop), for printing.

>>> found = discover(["/nonexistent-folder"])        # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from clipsql.errors import ConfigError
from clipsql.ingest.formats import is_image
from clipsql.ingest.reasons import Ignored, Reason
from clipsql.ingest.video import is_video


@dataclass
class Found:
    files: dict = field(default_factory=dict)      # path -> os.stat_result
    failed: dict = field(default_factory=dict)     # path -> (reason code, detail)
    ignored: dict = field(default_factory=dict)    # path -> "not_image" | "hidden"
    skipped: list = field(default_factory=list)    # (path, text): failures and symlink loops
    roots: list = field(default_factory=list)      # absolute roots, as given
    blind_spots: list = field(default_factory=list)  # folders we could not list: never prune there

    def fail(self, path: str, reason: Reason, detail: str) -> None:
        reason = Reason.of(reason)
        if path not in self.failed:
            self.failed[path] = (reason, detail)
            self.skipped.append((path, detail))


def printable(path: str) -> str:
    """The path as text, with bytes that are not UTF-8 shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _valid_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def discover(paths) -> Found:
    """Walk the given files and folders recursively; hidden files and folders are left out."""
    found = Found()
    for raw in paths:
        root = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if not os.path.exists(root):
            raise ConfigError(f"{printable(root)} does not exist")
        found.roots.append(root)
        if not os.path.isdir(root):
            _add_file(found, root)  # named explicitly: tried whatever its extension
            continue
        visited: set = set()
        for folder, dirs, files in os.walk(root, followlinks=True, onerror=lambda e: _walk_error(found, e)):
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in visited:
                found.skipped.append((printable(folder), "symlink loop: folder already visited"))
                dirs[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = os.path.join(folder, name)
                reason = ignored_reason(name)
                if reason is None:
                    _add_file(found, path)
                else:
                    found.ignored[printable(path)] = reason
    return found


def ignored_reason(name: str) -> Ignored | None:
    """Why the walk leaves a file of this name out (hidden; neither an image nor a video),
    or None for a file it loads. The one rule, for the walk and the watch alike."""
    if name.startswith("."):
        return Ignored.HIDDEN
    if not (is_image(name) or is_video(name)):
        return Ignored.NOT_IMAGE
    return None


def _walk_error(found: Found, exc: OSError) -> None:
    where = exc.filename or "?"
    found.fail(printable(where), Reason.UNREADABLE, f"cannot list folder: {exc.strerror or exc}")
    found.blind_spots.append(printable(where))


def _add_file(found: Found, path: str) -> None:
    if not _valid_utf8(path):
        found.fail(printable(path), Reason.BAD_NAME, Reason.BAD_NAME.description)
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            found.fail(path, Reason.BROKEN_LINK, f"broken symbolic link to {printable(os.readlink(path))}")
        else:
            found.fail(path, Reason.VANISHED, "the file vanished while the folder was walked")
        return
    except OSError as exc:
        found.fail(path, Reason.UNREADABLE, f"cannot stat: {exc.strerror or exc}")
        return
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(
            st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(
            st.st_mode) else "not a regular file"
        found.fail(path, Reason.UNREADABLE, f"not a regular file: {kind}")
        return
    found.files[path] = st
