"""Keep a collection in sync with folders: ``clipsql load --watch`` and
:meth:`clipsql.Collection.watch`.

A watcher first runs a normal load of its folders with ``prune`` (the catch-up: what
changed while nothing watched), then follows file-system events (``watchdog``: inotify on
Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows; ``polling=True`` polls instead,
for network shares that deliver no events) and syncs what they name:

* a new or changed file is loaded with :func:`clipsql.ingest.loader.load` given the
  changed files' paths (never one load per file: every file ready at a sync goes in one
  call), after the walk's rules (:mod:`clipsql.ingest.walk`): images and videos are loaded,
  other files and hidden files are recorded as ignored, nothing inside hidden folders is
  looked at, and a link (to a file or a folder) whose target lies outside the watched
  folders is recorded as ignored (``link_outside``) and not followed, unless the watch was
  given ``follow_links``;
* a deleted file's row (or failure) is removed, a deleted or moved-away folder's rows too,
  under the rule of every prune (:func:`clipsql.ingest.accounting.prune_refusal`): never
  where a watched folder is missing or empty (an unmounted drive), never more than
  :data:`~clipsql.ingest.accounting.PRUNE_MAX_SHARE` of a watched folder's rows at once
  unless ``force``. A refused prune is reported (``refused`` of a :class:`SyncReport`), the
  rows are kept and the watcher goes on;
* a moved file or folder is a deletion of the old paths and a new file at each new path;
  the new paths are loaded before the old ones are removed (deletions wait until no change
  is pending, at most ``max_delay_s``, and a sync loads before it prunes), so a folder moved
  within a watched folder is not a prune of most of its rows.

The latency model. A file is loaded at the first sync at which

1. the watched folders have been quiet for ``debounce_s`` (no event at all), or the oldest
   unsynced event is ``max_delay_s`` old (so a folder that is never quiet, such as one with
   a log file being written, still syncs);
2. the file itself has had no event for ``settle_s`` and its size and mtime, stat-ed at its
   last event and again now, have not changed: a file still being copied is waited for.

So a file closed at time *t* is committed at about *t* + max(``debounce_s``, ``settle_s``)
+ the load's own time (decode, embed, one transaction per batch), plus up to
:data:`TICK_S` of polling. A burst of files written at once is synced when it ends, in one
load call (or a few, where a load is still running when the rest settle).

A load that fails (the database restarted, a decoder process died) is reported
(``error``) and its files retried after a backoff (:data:`RETRY_S`, doubling up to
:data:`RETRY_MAX_S`); nothing is lost. If the kernel's event queue overflows
(inotify's ``fs.inotify.max_queued_events``), or a watched tree has more folders than
``fs.inotify.max_user_watches`` allows (or adding a watch fails for that limit), events
may be missing: the watcher falls back to a full re-load of the roots (with ``prune``), at
once after an overflow and every :data:`RESCAN_S` seconds where watches are missing. A
watched folder that disappears (unmounted, moved away) is reported, its rows kept; when
it is back, it is watched again and re-loaded.

>>> watch(connect, model, ["/photos"], stop=stop, on_report=print)   # doctest: +SKIP
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field

from clipsql.database.queries import SQL
from clipsql.errors import ConfigError, DatabaseError, LoadError, PruneRefusedError
from clipsql.ingest import accounting, loader
from clipsql.ingest.walk import Found, ignored_reason, printable

_log = logging.getLogger(__name__)

#: Defaults: seconds of quiet before a sync, of stability before a file is taken, and the
#: longest a pending event waits for quiet.
DEBOUNCE_S = 1.0
SETTLE_S = 1.0
MAX_DELAY_S = 10.0
#: How often the loop looks at its pending events (and at most how late it sees them).
TICK_S = 0.1
#: How often the watched folders themselves are checked (missing, replaced, remounted).
ROOT_CHECK_S = 1.0
#: Retry after a failed sync: first wait, and the longest.
RETRY_S = 1.0
RETRY_MAX_S = 60.0
#: A full re-load of a root whose events may be incomplete (watch limit), this often.
RESCAN_S = 60.0


def file_stat(path: str):
    """(size, mtime in ns) of a file, or None if it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class _Entry:
    first: float  # first event since it became pending
    since: float  # its last event, or the last time a stat saw it change
    stat: tuple | None


@dataclass
class Batch:
    """What one sync does: ``files`` to load (changed, settled), ``gone`` files and
    ``gone_folders`` whose rows to remove, ``rescan``: roots to re-load whole."""

    files: list = field(default_factory=list)
    gone: list = field(default_factory=list)
    gone_folders: list = field(default_factory=list)
    rescan: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files or self.gone or self.gone_folders or self.rescan)


class Pending:
    """The debounce and settle bookkeeping of a watcher, apart from any file-system event
    source or database: times are given (``now``), files are looked at through ``stat``
    (``path -> (size, mtime) or None``), so it runs on a fake clock in tests. Thread-safe
    (events come from the observer's thread, :meth:`take` from the watcher's).

    :meth:`changed`, :meth:`removed`, :meth:`moved`, :meth:`rescan` record events;
    :meth:`due` says when a :meth:`take` can next give something; :meth:`take` gives the
    :class:`Batch` ready now (see the module's latency model) and keeps the rest;
    :meth:`put_back` returns a batch whose sync failed, held until a given time.
    """

    def __init__(self, debounce_s: float = DEBOUNCE_S, settle_s: float = SETTLE_S,
                 max_delay_s: float = MAX_DELAY_S, *, stat=file_stat):
        if min(debounce_s, settle_s) < 0 or max_delay_s < debounce_s:
            raise ConfigError("debounce_s and settle_s must be >= 0, max_delay_s >= debounce_s")
        self.debounce_s, self.settle_s, self.max_delay_s = debounce_s, settle_s, max_delay_s
        self._stat = stat
        self._files: dict[str, _Entry] = {}
        self._gone: dict[str, tuple[float, bool]] = {}  # path -> (event time, is a folder)
        self._rescan: set[str] = set()
        self._first: float | None = None  # the oldest event not taken yet
        self._last: float | None = None   # the latest event
        self._hold = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._files) + len(self._gone) + len(self._rescan)

    def _touch(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now if self._last is None else max(self._last, now)

    def changed(self, path: str, now: float) -> None:
        """A file was created, written, closed, touched, or moved here."""
        st = self._stat(path)
        with self._lock:
            self._gone.pop(path, None)
            entry = self._files.get(path)
            if entry is None:
                self._files[path] = _Entry(now, now, st)
            else:
                entry.since, entry.stat = now, st
            self._touch(now)

    def removed(self, path: str, now: float, folder: bool = False) -> None:
        """A file (or, with ``folder``, a folder and all under it) was deleted or moved away."""
        with self._lock:
            self._files.pop(path, None)
            if folder:
                under = path.rstrip(os.sep) + os.sep
                for p in [p for p in self._files if p.startswith(under)]:
                    del self._files[p]
            self._gone[path] = (now, folder)
            self._touch(now)

    def moved(self, src: str, dest: str, now: float, folder: bool = False) -> None:
        """A file moved: the old path is gone, the new one changed. A folder's files are
        given one by one (as ``watchdog`` does): here only its old path goes."""
        self.removed(src, now, folder)
        if not folder:
            self.changed(dest, now)

    def rescan(self, root: str, now: float) -> None:
        """Events under ``root`` may be missing: re-load it whole at the next sync."""
        with self._lock:
            self._rescan.add(root)
            self._touch(now)

    def _quiet_at(self) -> float:
        return min(self._last + self.debounce_s, self._first + self.max_delay_s)

    def due(self) -> float | None:
        """The earliest time a :meth:`take` can give something if no other event comes
        (a file's stat may still push it later); None when nothing is pending."""
        with self._lock:
            if not (self._files or self._gone or self._rescan):
                return None
            ready = [e.since + self.settle_s for e in self._files.values()]
            if self._rescan or (self._gone and not self._files):
                ready.append(float("-inf"))
            elif self._gone:  # deletions wait for the changes, at most max_delay_s
                ready.append(min(t for t, _ in self._gone.values()) + self.max_delay_s)
            return max(self._hold, self._quiet_at(), min(ready))

    def take(self, now: float) -> Batch:
        """The batch ready at ``now`` (empty if none): settled files; the deletions, once
        no change is left pending (or ``max_delay_s`` after them: the new paths of a move
        are loaded before its old ones go); the roots to re-load."""
        batch = Batch()
        with self._lock:
            if self._first is None or now < self._hold or now < self._quiet_at():
                return batch
            for path, entry in list(self._files.items()):
                st = self._stat(path)
                if st is None:  # gone before it was loaded: a deletion (it may have a row)
                    del self._files[path]
                    self._gone[path] = (entry.first, False)
                elif st != entry.stat:
                    entry.stat, entry.since = st, now
                elif now - entry.since >= self.settle_s:
                    batch.files.append(path)
                    del self._files[path]
            for path, (t, folder) in list(self._gone.items()):
                if not self._files or now - t >= self.max_delay_s:
                    (batch.gone_folders if folder else batch.gone).append(path)
                    del self._gone[path]
            batch.rescan = sorted(self._rescan)
            self._rescan.clear()
            left = [e.first for e in self._files.values()] + [t for t, _ in self._gone.values()]
            self._first = min(left) if left else None
        return batch

    def put_back(self, batch: Batch, now: float, hold_until: float) -> None:
        """Pend ``batch`` again (its sync failed), none of it taken before ``hold_until``."""
        with self._lock:
            for path in batch.files:
                if path not in self._files:
                    self._files[path] = _Entry(now, now - self.settle_s, self._stat(path))
            for path in batch.gone:
                self._gone.setdefault(path, (now, False))
            for path in batch.gone_folders:
                self._gone.setdefault(path, (now, True))
            self._rescan.update(batch.rescan)
            if batch:
                self._touch(now)
            self._hold = hold_until


@dataclass
class SyncReport(loader.FileCounts):
    """What one sync did. ``kind``: ``"catch-up"`` (the load at the start), ``"rescan"``
    (a root re-loaded whole) or ``"sync"`` (files named by events). ``refused``: the
    problems of prunes refused (their rows kept); ``error``: a sync that failed, retried
    after ``retry_in`` seconds; ``kind`` ``"note"``: only ``notes`` to tell."""

    kind: str = "sync"
    seconds: float = 0.0
    refused: list = field(default_factory=list)
    error: str = ""
    retry_in: float = 0.0
    #: what the watcher noticed meanwhile: an overflowed event queue, the watch limit
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    #: the load's own report, for the catch-up and rescans
    load: loader.LoadReport | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, report: loader.LoadReport) -> None:
        self.add_counts(report)
        self.failures.extend(report.failures)
        self.skipped.extend(report.skipped)

    @property
    def quiet(self) -> bool:
        """Nothing to say: no row written or removed, no failure, refusal or error."""
        return not (self.added or self.updated or self.removed or self.failed or self.refused
                    or self.error or self.notes or self.kind != "sync")


@dataclass
class WatchReport(loader.FileCounts):
    """What a watcher did until it stopped: its syncs (the catch-up included) added up, with
    the prunes refused and the syncs that failed."""

    syncs: int = 0
    refused: int = 0
    errors: int = 0

    def count(self, report: SyncReport) -> None:
        self.syncs += 1
        self.add_counts(report)
        self.refused += len(report.refused)
        self.errors += bool(report.error)


def _under(path: str) -> str:
    return path if path.endswith(os.sep) else path + os.sep


def visible(root: str, path: str, folder: bool = False) -> bool:
    """Whether the walk would look at ``path`` under ``root``: not inside a hidden folder
    (nor, for a folder, hidden itself). Hidden files are looked at: they are ignored files."""
    if path != root and not path.startswith(_under(root)):
        return False
    parts = os.path.relpath(path, root).split(os.sep)
    dirs = parts if folder else parts[:-1]
    return not any(p.startswith(".") for p in dirs if p not in (".", ""))


def walk_rule(path: str):
    """What the walk makes of a file by its name: None (an image or video to load) or its
    :class:`~clipsql.ingest.reasons.Ignored` reason (:func:`~clipsql.ingest.walk.ignored_reason`)."""
    return ignored_reason(os.path.basename(path))


_EVENTS = None


def _event_filter():
    global _EVENTS
    if _EVENTS is None:
        from watchdog import events as ev

        # not opened / closed-without-writing: the loader's own reads would be events
        _EVENTS = [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileClosedEvent,
                   ev.FileMovedEvent, ev.FileDeletedEvent, ev.DirCreatedEvent,
                   ev.DirMovedEvent, ev.DirDeletedEvent]
    return _EVENTS


def _handler(root: str, pending: Pending, clock):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def dispatch(self, event) -> None:
            try:
                self._record(event)
            except Exception:  # never let the observer's thread die: a re-load catches up
                _log.exception("could not record the file event %r", event)
                pending.rescan(root, clock())

        def _record(self, event) -> None:
            now = clock()
            src = os.fsdecode(event.src_path)
            dest = os.fsdecode(event.dest_path) if event.dest_path else ""
            kind, folder = event.event_type, event.is_directory
            if kind in ("created", "modified", "closed"):
                if not folder and visible(root, src):
                    pending.changed(src, now)
            elif kind == "deleted":
                if visible(root, src, folder):
                    pending.removed(src, now, folder)
            elif kind == "moved":
                if src and visible(root, src, folder):
                    pending.removed(src, now, folder)
                if dest and not folder and visible(root, dest):
                    pending.changed(dest, now)

    return Handler()


class _Overflow(logging.Handler):
    """Sees watchdog's warning that the kernel's event queue overflowed."""

    def __init__(self, on_overflow):
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()


_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


def _identity(root: str):
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(root) else None


def _max_user_watches() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _count_folders(root: str, limit: int) -> int:
    n = 0
    for _folder, dirs, _files in os.walk(root):
        n += 1
        if n > limit:
            break
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(_folder, d))]
    return n


class _Watcher:
    """The observer: one recursive watch per root, the roots' own state (missing, back,
    remounted), the fallbacks to re-loads (overflow, watch limit)."""

    def __init__(self, roots, pending: Pending, clock, polling: bool, notes):
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self.roots, self.pending, self.clock, self.notes = roots, pending, clock, notes
        self.observer = PollingObserver() if polling else Observer()
        self.polling = polling
        self.watches: dict = {}
        self.ids: dict = {}
        self.rescan_at: dict = {}  # root -> next periodic re-load (watches incomplete)
        self.checked = float("-inf")
        self.overflow = _Overflow(self._overflowed)

    def _overflowed(self) -> None:
        now = self.clock()
        note = ("the kernel's file-event queue overflowed: events were lost; re-loading the "
                "watched folders")
        if note not in self.notes:  # watchdog says it twice
            self.notes.append(note)
        for root in self.roots:
            self.pending.rescan(root, now)

    def start(self) -> None:
        self.levels = {}
        for name in _WATCHDOG_LOGGERS:
            log = logging.getLogger(name)
            log.addHandler(self.overflow)
            if not log.isEnabledFor(logging.WARNING):  # its warning is how an overflow shows
                self.levels[name] = log.level
                log.setLevel(logging.WARNING)
        self.observer.start()
        for root in self.roots:
            self.ids[root] = _identity(root)
            if self.ids[root] is not None:
                self._schedule(root)
        self.checked = self.clock()

    def _schedule(self, root: str) -> None:
        limit = None if self.polling else _max_user_watches()
        if limit is not None and _count_folders(root, limit) > limit:
            self._fallback(root, f"{printable(root)} has more folders than "
                                 f"fs.inotify.max_user_watches ({limit})")
        try:
            self.watches[root] = self.observer.schedule(
                _handler(root, self.pending, self.clock), root, recursive=True,
                event_filter=_event_filter())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                self._fallback(root, f"cannot watch {printable(root)}: {exc.strerror or exc} "
                                     "(fs.inotify.max_user_watches / max_user_instances)")
            elif _identity(root) is not None:
                raise

    def _fallback(self, root: str, why: str) -> None:
        self.notes.append(f"{why}: events may be missing; re-loading it every {RESCAN_S:.0f} s")
        self.rescan_at[root] = self.clock() + RESCAN_S

    def check(self, now: float) -> None:
        """The roots: a missing one's rows are a deletion (refused by the prune rules unless
        forced), one that is back or replaced is watched again and re-loaded."""
        for root, at in self.rescan_at.items():
            if now >= at:
                self.pending.rescan(root, now)
                self.rescan_at[root] = now + RESCAN_S
        if now - self.checked < ROOT_CHECK_S:
            return
        self.checked = now
        for root in self.roots:
            ident = _identity(root)
            if ident == self.ids[root]:
                continue
            watch = self.watches.pop(root, None)
            if watch is not None:
                try:
                    self.observer.unschedule(watch)
                except Exception:  # its emitter may have stopped itself (root deleted)
                    pass
            self.ids[root] = ident
            if ident is None:
                self.pending.removed(root, now, folder=True)
            else:
                self._schedule(root)
                self.pending.rescan(root, now)

    def stop(self) -> None:
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self.overflow)
        for name, level in getattr(self, "levels", {}).items():
            logging.getLogger(name).setLevel(level)
        try:
            self.observer.stop()
            self.observer.join(timeout=10)
        except RuntimeError:  # never started
            pass


def watch(connect, model, roots, *, stop: threading.Event | None = None,
          debounce_s: float = DEBOUNCE_S, settle_s: float = SETTLE_S,
          max_delay_s: float = MAX_DELAY_S, prune: bool = True, force: bool = False,
          on_report=None, polling: bool = False, progress=None, steps=None,
          clock=time.monotonic, **load_kwargs) -> WatchReport:
    """Load ``roots`` (folders), then keep the collection in sync with them until ``stop``
    is set (or Ctrl-C: a KeyboardInterrupt ends the watch as ``stop`` does); return what it
    did. ``connect()`` opens a connection, ``model`` embeds, as for
    :func:`~clipsql.ingest.loader.load`; ``load_kwargs`` (``batch_size``, ``workers``,
    ``processes``...) are given to every load, ``progress`` and ``steps`` to the catch-up's
    only.

    ``on_report(report)`` is told every :class:`SyncReport`: the catch-up's, then each sync
    that wrote, removed, failed or refused something, or failed itself. ``prune`` (the
    default) removes the rows of deleted files, with ``force`` as for ``load``; a refused
    prune is reported and the watch goes on. See the module for the latency model and the
    fallbacks. Errors of the catch-up (a folder that does not exist, no database) are
    raised; a sync's database or load error is reported and retried.
    """
    roots = [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in roots]
    if not roots:
        raise ConfigError("give at least one folder to watch")
    for root in roots:
        if not os.path.isdir(root):
            raise ConfigError(f"{printable(root)} is not a folder: only folders are watched"
                              if os.path.exists(root) else f"{printable(root)} does not exist")
    if force and not prune:
        raise ConfigError("force=True only changes a prune: give prune=True too")
    stop = stop if stop is not None else threading.Event()
    pending = Pending(debounce_s, settle_s, max_delay_s)
    notes: list[str] = []
    watcher = _Watcher(roots, pending, clock, polling, notes)
    total = WatchReport()
    sync = _Sync(connect, model, roots, prune, force, load_kwargs)

    def tell(report: SyncReport) -> None:
        while notes:
            report.notes.append(notes.pop(0))
        total.count(report)
        if on_report is not None:
            on_report(report)

    try:
        watcher.start()  # before the catch-up: nothing written meanwhile is missed
        tell(sync.catch_up(roots, "catch-up", progress=progress, steps=steps))
        retry = RETRY_S
        while not stop.is_set():
            now = clock()
            watcher.check(now)
            due = pending.due()
            if due is not None and due <= now:
                batch = pending.take(now)
                if batch:
                    report = sync.run(batch)
                    if report.error:
                        report.retry_in = retry
                        pending.put_back(batch, clock(), clock() + retry)
                        retry = min(retry * 2, RETRY_MAX_S)
                    else:
                        retry = RETRY_S
                    if not report.quiet or notes:
                        tell(report)
                    continue
            elif notes:
                tell(SyncReport(kind="note"))
            wait = TICK_S if due is None else min(TICK_S, max(0.0, due - now))
            stop.wait(max(wait, 0.005))
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
    return total


class _Sync:
    """The database side of a watcher: loads, ignored files, guarded prunes."""

    def __init__(self, connect, model, roots, prune, force, load_kwargs):
        self.connect, self.model, self.roots = connect, model, roots
        self.prune, self.force, self.load_kwargs = prune, force, load_kwargs

    def _load(self, paths, **kwargs) -> loader.LoadReport:
        return loader.load(self.connect, self.model, paths, **{**self.load_kwargs, **kwargs})

    def catch_up(self, roots, kind: str, **kwargs) -> SyncReport:
        """A normal load of ``roots`` with prune; a refused prune is reported and the
        roots loaded without it."""
        report = SyncReport(kind=kind)
        started = time.perf_counter()
        try:
            done = self._load(roots, prune=self.prune, force=self.force, **kwargs)
        except PruneRefusedError as exc:
            report.refused.append(exc.problem)
            done = self._load(roots, prune=False, **kwargs)
        report.add(done)
        report.load = done
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def run(self, batch: Batch) -> SyncReport:
        """One sync; a failure is the report's ``error`` (the caller retries the batch)."""
        import psycopg

        report = SyncReport(kind="rescan" if batch.rescan else "sync")
        started = time.perf_counter()
        try:
            roots = [r for r in batch.rescan if os.path.isdir(r)]
            if roots:
                rescanned = self.catch_up(roots, "rescan")
                report.add(rescanned)
                report.refused.extend(rescanned.refused)
                report.load = rescanned.load
            files = [p for p in batch.files if not any(p.startswith(_under(r)) for r in roots)]
            self._load_files(files, report)
            if self.prune and (batch.gone or batch.gone_folders):
                self._remove(batch.gone, batch.gone_folders, report)
        except (DatabaseError, LoadError, OSError, psycopg.Error) as exc:
            report.error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _load_files(self, files, report: SyncReport) -> None:
        images, ignored = [], {}
        for path in files:
            if not os.path.isfile(path):
                if os.path.islink(path) and os.path.isdir(path):
                    images.append(path)  # a new link to a folder: the walk's link rule
                continue
            why = walk_rule(path)
            if why is None:
                images.append(path)
            else:
                ignored[printable(path)] = why
        for _ in range(3):  # a file may vanish between the check and the walk
            if not images:
                break
            try:
                # links stay inside the watched folders (or follow_links, in load_kwargs)
                report.add(self._load(images, prune=False, within=self.roots))
                break
            except ConfigError as exc:
                if "does not exist" not in str(exc):
                    raise
                images = [p for p in images if os.path.lexists(p)]
        if ignored:
            with self.connect() as conn:
                accounting.record(conn, Found(ignored=ignored))
            report.ignored += len(ignored)

    def _remove(self, gone, gone_folders, report: SyncReport) -> None:
        gone = [printable(p) for p in gone]
        folders = [_under(printable(p)) for p in gone_folders]
        with self.connect() as conn:
            known = {}
            for table in (accounting.IMAGES, accounting.FAILURES, accounting.IGNORED):
                for (path,) in conn.execute(SQL["watch_known"].format(table=table),
                                            (gone, folders)):
                    known.setdefault(path, set()).add(table)
            vanished = [p for p in known if not os.path.lexists(p)]
            rows = [p for p in vanished if known[p] - {accounting.IGNORED}]
            allowed = set(rows)
            if not self.force:
                for root in self.roots:
                    going = [p for p in rows if p.startswith(_under(root))]
                    if going:
                        problem = _refusal(conn, root, len(going))
                        if problem:
                            report.refused.append(problem)
                            allowed -= set(going)
            report.removed += accounting.prune(conn, sorted(allowed))
            stale = [p for p in vanished if accounting.IGNORED in known[p]]
            if stale:
                conn.execute(SQL["paths_delete"].format(table=accounting.IGNORED), (stale,))


def _refusal(conn, root: str, going: int) -> str:
    """The problem of removing the rows of ``going`` files under the watched ``root`` at
    once (:func:`~clipsql.ingest.accounting.prune_refusal`, the rule of every prune), or ""
    where it may go on."""
    under = _under(root)
    rows = sum(conn.execute(SQL["watch_files_under"].format(table=t), (under,)).fetchone()[0]
               for t in (accounting.IMAGES, accounting.FAILURES))
    missing = not os.path.isdir(root)
    why = accounting.prune_refusal(root, rows, going, missing or _looks_empty(root), missing)
    if why is None:
        return ""
    return (f"refusing to prune: {printable(why)}; it would remove {going} of the {rows} "
            "rows under it. Those rows are kept")


def _looks_empty(root: str) -> bool:
    """Whether the walk would find nothing at all under ``root`` (hidden folders are not
    entered; a folder that cannot be listed counts as something)."""
    class Unreadable(Exception):
        pass

    def unreadable(_exc):
        raise Unreadable

    try:
        for _folder, dirs, files in os.walk(root, onerror=unreadable):
            if files:
                return False
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    except Unreadable:
        return False
    return True
