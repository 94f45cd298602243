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
  are neither images nor videos (``not_image``), hidden files (``hidden``, such as ``.DS_Store``)
  and symbolic links, to files or folders, that lead outside the loaded folders
  (``link_outside``: not followed, unless asked for, see :func:`discover`).
  Hidden folders are not entered.

Paths that are not valid UTF-8 are given as text with the odd bytes shown as ``\\xNN``.
``skipped`` repeats every failure as ``(path, text)`` and adds what is not a file at all
(a symlink loop, a link never followed, a system tree), for printing.

>>> found = discover(["/nonexistent-folder"])        # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from clipsql.errors import ConfigError
from clipsql.ingest.formats import is_image, is_video
from clipsql.ingest.reasons import Ignored, Reason


@dataclass
class Found:
    files: dict = field(default_factory=dict)      # path -> os.stat_result
    failed: dict = field(default_factory=dict)     # path -> (reason code, detail)
    ignored: dict = field(default_factory=dict)    # path -> Ignored (not_image, hidden...)
    skipped: list = field(default_factory=list)    # (path, text): failures and symlink loops
    roots: list = field(default_factory=list)      # absolute roots, as given
    #: The resolved folders (and named files) the walk stays inside: the roots, or ``within``.
    inside: list = field(default_factory=list)
    #: ``(link, resolved target)`` of each link followed out of them (``follow_links``).
    followed: list = field(default_factory=list)
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


def discover(paths, *, follow_links: bool = False, within=None) -> Found:
    """Walk the given files and folders recursively; hidden files and folders are left out.

    Links stay inside the loaded folders: a symbolic link (to a file or a folder) whose
    target resolves outside every root (``within``, or else ``paths`` themselves) is not
    followed and is ignored as :attr:`~clipsql.ingest.reasons.Ignored.LINK_OUTSIDE`, unless
    ``follow_links``, which follows it and adds it to :attr:`Found.followed`. Some links
    are never followed: to a folder that holds a root (``/``, an ancestor: a cycle), to a
    folder already walked (a loop), or into a system tree (:data:`SYSTEM_TREES`).
    ``within`` is for paths named one by one under folders watched as a whole (a watch's
    new files): each must resolve inside one of them.
    """
    found = Found()
    roots = []
    for raw in paths:
        root = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if not os.path.exists(root):
            raise ConfigError(f"{printable(root)} does not exist")
        if _system(os.path.realpath(root)):
            raise ConfigError(f"{printable(root)} is in a system tree "
                              f"({', '.join(SYSTEM_TREES)}): not loaded")
        roots.append(root)
    bounds = roots if within is None else \
        [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in within]
    found.inside = sorted({os.path.realpath(r) for r in bounds})
    for root in roots:
        found.roots.append(root)
        if not os.path.isdir(root):
            if within is None or not _outside(found, root, follow_links):
                _add_file(found, root)  # named explicitly: tried whatever its extension
            continue
        _walk(found, root, follow_links)
    return found


#: Trees of the operating system that are never walked, whatever links lead there: their
#: files are not photos and some never end (``/proc/<pid>/cwd`` leads back to ``/``).
SYSTEM_TREES = ("/proc", "/sys", "/dev") if os.sep == "/" else ()
_system_devices: set | None = None


def _system(real: str, st=None) -> bool:
    """Whether the resolved path ``real`` lies in a system tree (or, given its stat, on the
    device of one: a ``/proc`` mounted elsewhere)."""
    global _system_devices
    if any(real == t or real.startswith(t + os.sep) for t in SYSTEM_TREES):
        return True
    if st is None:
        return False
    if _system_devices is None:
        devices = set()
        for tree in SYSTEM_TREES:
            try:
                devices.add(os.stat(tree).st_dev)
            except OSError:
                pass
        _system_devices = devices
    return st.st_dev in _system_devices


def _under(folder: str) -> str:
    return folder if folder.endswith(os.sep) else folder + os.sep


def inside(real: str, folders) -> bool:
    """Whether the resolved path ``real`` is one of the resolved ``folders`` or lies under one.

    >>> inside("/photos/a/b.jpg", ["/photos"]), inside("/photos2/b.jpg", ["/photos"])
    (True, False)
    """
    return any(real == f or real.startswith(_under(f)) for f in folders)


def _outside(found: Found, path: str, follow_links: bool) -> bool:
    """Whether the file ``path`` (a link) is left out: recorded as ignored, a link outside
    the roots, or one into a system tree even with ``follow_links``. A link to nothing is
    not left out here: the file's own check reports it as a broken link."""
    try:
        real = os.path.realpath(path)
        if not os.path.exists(real):
            return False
    except (OSError, ValueError):
        return False
    if inside(real, found.inside):
        return False
    if follow_links and not _system(real):
        found.followed.append((printable(path), printable(real)))
        return False
    found.ignored[printable(path)] = Ignored.LINK_OUTSIDE
    return True


def _walk(found: Found, root: str, follow_links: bool) -> None:
    """Walk one root folder depth first, in name order, never out of :attr:`Found.inside`
    through a link unless ``follow_links`` (see :func:`discover`)."""
    visited: set = set()
    allowed = list(found.inside)  # and the folders that followed links lead to
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            real = os.path.realpath(folder)
        except OSError as exc:
            _walk_error(found, exc)
            continue
        if (st.st_dev, st.st_ino) in visited:
            found.skipped.append((printable(folder), "symlink loop: folder already visited"))
            continue
        if _system(real, st):
            found.skipped.append((printable(folder), "not walked: a system tree"))
            continue
        if not inside(real, allowed):  # made a link since its folder was listed
            found.ignored[printable(folder)] = Ignored.LINK_OUTSIDE
            continue
        visited.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            _walk_error(found, exc)
            continue
        folders = []
        for entry in entries:
            try:
                is_link = entry.is_symlink()
            except OSError:
                is_link = True
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.name.startswith(".") and (
                        not is_link or _follow(found, entry.path, follow_links, allowed)):
                    folders.append(entry.path)
                continue
            reason = ignored_reason(entry.name)
            if reason is not None:
                found.ignored[printable(entry.path)] = reason
            elif not (is_link and _outside(found, entry.path, follow_links)):
                _add_file(found, entry.path)
        stack.extend(reversed(folders))


def _follow(found: Found, link: str, follow_links: bool, allowed: list) -> bool:
    """Whether the walk enters the folder that ``link`` leads to; if not, it is recorded."""
    try:
        real = os.path.realpath(link)
        st = os.stat(real)
    except OSError:
        return True  # gone meanwhile: the folder's own check reports it
    system = _system(real, st)
    if inside(real, allowed) and not system:
        return True  # a loop, if any, is found by the visited set
    cycle = any(inside(r, [real]) for r in found.inside)
    if follow_links and not cycle and not system:
        found.followed.append((printable(link), printable(real)))
        allowed.append(real)
        return True
    found.ignored[printable(link)] = Ignored.LINK_OUTSIDE
    if follow_links:
        found.skipped.append((printable(link), "not followed: a link into a system tree"
                              if system else "not followed: a link to a folder that holds "
                              "the loaded folder (a cycle)"))
    return False


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
