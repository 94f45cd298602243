"""Find image files under folders, safely: symlink loops, unreadable folders and file names
that are not valid UTF-8 are reported as skipped, never fatal.

>>> found = discover(["/nonexistent-folder"])        # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from clipsql.errors import ConfigError
from clipsql.ingest.decode import EXTENSIONS


@dataclass
class Found:
    files: dict = field(default_factory=dict)      # path -> os.stat_result
    skipped: list = field(default_factory=list)    # (path, reason)
    roots: list = field(default_factory=list)      # absolute roots, as given
    blind_spots: list = field(default_factory=list)  # folders we could not list: never prune there


def _printable(path: str) -> str:
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
            raise ConfigError(f"{_printable(root)} does not exist")
        found.roots.append(root)
        if os.path.isfile(root):
            _add_file(found, root)
            continue
        visited: set = set()
        for folder, dirs, files in os.walk(root, followlinks=True, onerror=lambda e: _walk_error(found, e)):
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in visited:
                found.skipped.append((_printable(folder), "symlink loop: folder already visited"))
                dirs[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in EXTENSIONS:
                    continue
                _add_file(found, os.path.join(folder, name))
    return found


def _walk_error(found: Found, exc: OSError) -> None:
    where = exc.filename or "?"
    found.skipped.append((_printable(where), f"cannot list folder: {exc.strerror or exc}"))
    found.blind_spots.append(where)


def _add_file(found: Found, path: str) -> None:
    if not _valid_utf8(path):
        found.skipped.append((_printable(path), "file name is not valid UTF-8"))
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        found.skipped.append((path, "broken symbolic link or file vanished"))
        return
    except OSError as exc:
        found.skipped.append((path, f"cannot stat: {exc.strerror or exc}"))
        return
    found.files[path] = st
