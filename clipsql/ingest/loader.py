"""Load image and video folders into ``clipsql.images``: incremental, batched, crash-safe.

Pipeline: a pool of threads or processes decodes files a bounded distance ahead,
the calling thread runs the model on full batches, and a writer thread stores each batch
with binary COPY plus one upsert, in one transaction per batch. A batch is either wholly in
the table or not at all, so a killed load simply resumes: unchanged files are skipped by
(path, size, mtime). A video is one file of many rows, its moments
(:mod:`clipsql.ingest.video`), always written in one batch: a changed video's rows are
replaced together.

Every file under a loaded folder is accounted for: a row, a failure in
``clipsql.failures`` (decoding failures and the walk's own, all of
:class:`~clipsql.ingest.reasons.Reason`), or ignored (not an image, or hidden), counted in
the report and kept in ``clipsql.ignored`` for ``status``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields

from clipsql import config
from clipsql.database import binding, hnsw, upsert
from clipsql.database.images import WRITTEN
from clipsql.database.queries import SQL
from clipsql.errors import DatabaseError, ImageError
from clipsql.ingest import accounting, confine, decode, roots
from clipsql.ingest.decode import mtime_of
from clipsql.ingest.reasons import Reason
from clipsql.ingest.walk import discover


@dataclass
class FileCounts:
    """Files a load (or one sync of a watch) added, updated, found unchanged, removed, failed
    or ignored; ``moments``: the rows it wrote for video moments (a video counts once)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    ignored: int = 0
    moments: int = 0

    def add_counts(self, other: FileCounts) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(FileCounts):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class LoadReport(FileCounts):
    """What a load did. ``failures`` and ``skipped`` are (path, reason) pairs of this run;
    ``skipped`` holds what is not a file (symlink loops). ``ignored`` counts files that are
    not images or are hidden, by reason in ``ignored_by_reason``."""

    seconds: float = 0.0
    index_built: bool = False
    failures: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    ignored_by_reason: dict = field(default_factory=dict)
    #: What embedded the images (``onnx-int8``, ``onnx-fp32``...) and why; "" if nothing was.
    backend: str = ""
    backend_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def rate(self) -> float:
        """Files written (rows and failures) per second over the whole load."""
        done = self.added + self.updated + self.failed
        return round(done / self.seconds, 1) if self.seconds else 0.0


def load(connect, model, paths, *, prune=False, force=False, batch_size=config.BATCH_SIZE,
         workers=None, draft=True, processes=False, progress=None, pipeline=None,
         steps=None, follow_links=False, within=None, conn=None) -> LoadReport:
    """Load ``paths`` (files or folders) with ``model``; ``connect()`` opens a DB connection.
    ``conn``: an open (autocommit) connection for the load's own queries, left open, instead
    of one more from ``connect()`` (the writer and the claims always open their own).

    The model is prepared (:meth:`~clipsql.models.openclip.ClipModel.prepare`: a new
    checkpoint is exported once, ``steps(what)`` told each step) before the collection is
    bound to it: a model that cannot be had (offline, a bad checkpoint) leaves it unbound.

    ``workers`` decoders (default: the number of cores, 2 to 8) run as threads, or as
    processes with ``processes=True`` (see :mod:`clipsql.ingest.decoder_pool`).
    ``pipeline(connect, model, todo, report, progress, places=...)``, if given, decodes and embeds the
    files to (re)load instead, writing through a :class:`Writer` (the Ray engine,
    :mod:`clipsql.ingest.ray_engine`); the walk, skip, prune and index steps stay these.

    ``prune`` removes rows of files gone from the folders, but not (unless ``force``) most
    of a folder's rows (:func:`~clipsql.ingest.accounting.check_prune`). Loads of the same
    files at once split them (:class:`~clipsql.ingest.accounting.Claims`; not ``pipeline``).

    A link that leads outside the folders is ignored (``link_outside``), unless
    ``follow_links``; ``within``: the folders that paths named one by one must lie in (see
    :func:`~clipsql.ingest.walk.discover`). The places walked are recorded
    (:mod:`clipsql.ingest.roots`): the web server sends files from nowhere else.
    """
    started = time.perf_counter()
    report = LoadReport()
    found = discover(paths, follow_links=follow_links, within=within)
    report.skipped = [(p, why) for p, why in found.skipped if p not in found.failed]
    for reason in found.ignored.values():
        report.ignored_by_reason[reason] = report.ignored_by_reason.get(reason, 0) + 1
    report.ignored = len(found.ignored)
    with contextlib.nullcontext(conn) if conn is not None else connect() as conn:
        identity = model.identity()
        binding.check_model(conn, identity)
        known = accounting.known_state(conn, found.roots)
        vanished = accounting.gone(found, known) if prune else []
        if vanished and not force:
            accounting.check_prune(found, known, vanished)
        walk_failures = accounting.record(conn, found)
        roots.record(conn, found)  # where the web server may send files from
        report.failed += len(walk_failures)
        report.failures.extend((p, f"{r}: {d}") for p, r, d in walk_failures)
        todo = [p for p, st in found.files.items() if known.get(p) != (st.st_size, mtime_of(st))]
        report.unchanged += len(found.files) - len(todo)
        if todo:
            if steps is not None:
                steps(f"{len(todo)} of {len(found.files)} files to embed; preparing {model.spec}")
            model.prepare(steps)
            if steps is not None:
                steps(f"embedding {len(todo)} files with {model.backend}")
            binding.bind_model(conn, identity, model.spec.resolved())
            places = confine.places_of(found)  # each file opened is checked to be inside
            if pipeline is not None:
                pipeline(connect, model, todo, report, progress, places=places)
            else:
                _run_pipeline(connect, model, todo, found.files, report, batch_size, workers,
                              draft, processes, progress, places)
            report.backend, report.backend_reason = model.backend, model.backend_reason
        if prune:
            report.removed = accounting.prune(conn, vanished)
        report.index_built = hnsw.ensure_index(conn)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _run_pipeline(connect, model, todo, stats, report, batch_size, workers, draft, processes,
                  progress, places=None):
    """Decode, embed and write ``todo`` in passes: each pass takes the files no other load
    holds; between passes, holding nothing, it waits for the first file another one held."""
    claims = accounting.Claims(connect)
    counted = [0, len(todo)]  # files done (here or by another load), of all

    def done_elsewhere(n: int) -> None:  # written by another load meanwhile: unchanged here
        report.unchanged += n
        counted[0] += n
        if progress:
            progress(*counted)
    try:
        while todo:
            held: list = []
            items = claims.mine(todo, stats, batch_size, held, done_elsewhere)
            _one_pass(connect, model, items, claims, report, batch_size, workers, draft,
                      processes, progress, counted, places)
            if held:
                claims.wait(held[0])
            todo = held
    except Exception as exc:  # the claims' connection: lost like the writer's
        raise _as_db_error(exc) from None
    finally:
        claims.close()


def _one_pass(connect, model, items, claims, report, batch_size, workers, draft, processes,
              progress, counted, places=None):
    # imported here: a load that finds nothing new decodes nothing (no video, no numpy)
    from clipsql.ingest.decoder_pool import Decoders

    preprocess = model.preprocess
    draft_size = decode.draft_size(model.image_size) if draft else None
    workers = workers or max(2, min(8, os.cpu_count() or 2))
    writer = Writer(connect, report, claims)
    writer.start()
    try:
        with Decoders(preprocess, draft_size, workers, processes, places=places) as pool:
            pending: deque = deque()
            batch, failed = [], []

            def submit_next() -> None:
                path = next(items, None)
                if path is not None:
                    pending.append((path, pool.submit(path)))

            for _ in range(max(batch_size * 2, workers * 4)):
                submit_next()
            files = 0  # in the batch: a video is one file of many rows
            while pending:
                path, future = pending.popleft()
                submit_next()
                try:
                    batch.extend(pool.result(future))
                    files += 1
                except ImageError as exc:
                    failed.append((path, exc.reason, exc.detail))
                if len(batch) >= batch_size or (not pending and (batch or failed)):
                    writer.put(_embed(model, batch), failed)
                    counted[0] += files + len(failed)
                    batch, failed, files = [], [], 0
                    if progress:
                        progress(*counted)
                writer.check()
    finally:
        writer.close()


def _embed(model, batch):
    from clipsql.models.image import stack

    if not batch:
        return []
    vectors = model.encode_images(stack([d.pixels for d in batch]))
    for d, v in zip(batch, vectors):
        d.embedding, d.pixels = v, None  # the tensor is no longer needed: free it early
    return batch


class Writer(threading.Thread):
    """Writes batches on its own connection so COPY overlaps with the next batch's inference.

    ``put(rows, failures)``: ``rows`` are :class:`~clipsql.ingest.decode.Decoded` with their
    ``embedding`` set, ``failures`` (path, reason, detail); one transaction per call, counted
    in the report once committed (and their ``claims`` let go then). ``start()`` first,
    ``close()`` at the end (re-raises).
    """

    def __init__(self, connect, report, claims=None):
        super().__init__(name="clipsql-writer", daemon=True)
        self._connect, self._report, self._claims = connect, report, claims
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None

    def put(self, rows, failures) -> None:
        self.check()
        self._queue.put((rows, failures))

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._queue.put(None)
        self.join()
        self.check()

    def run(self) -> None:
        try:
            with self._connect() as conn:
                while (item := self._queue.get()) is not None:
                    if self._error is None:
                        self._write(conn, *item)
        except BaseException as exc:  # surfaced to the loading thread by check()/close()
            self._error = _as_db_error(exc)
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def _write(self, conn, rows, failures) -> None:
        files = list(dict.fromkeys(d.path for d in rows))  # a video's moments: one file
        with conn.transaction():
            if rows:
                before = {p for (p,) in conn.execute(SQL["load_paths_stored"], (files,))}
                upsert.upsert(conn, WRITTEN, (_row(d) for d in rows))
                _drop_other_rows(conn, rows)
                conn.execute(SQL["paths_delete"].format(table=accounting.FAILURES), (files,))
            if failures:
                paths = [f[0] for f in failures]
                stats = [_stat_or_none(p) for p in paths]
                conn.execute(SQL["paths_delete"].format(table=accounting.IMAGES), (paths,))
                with conn.cursor() as cur:
                    cur.executemany(
                        SQL["load_failures_record"],
                        [(p, Reason.of(r).value, d[:1000], s[0] if s else None,
                          s[1] if s else None)
                         for (p, r, d), s in zip(failures, stats)])
        # Counted only once the transaction committed.
        if self._claims is not None:
            self._claims.release(files + [f[0] for f in failures])
        if rows:
            self._report.added += len(files) - len(before)
            self._report.updated += len(before)
            self._report.moments += sum(d.start_s is not None for d in rows)
        self._report.failed += len(failures)
        self._report.failures.extend((p, f"{r}: {d}") for p, r, d in failures)


def _drop_other_rows(conn, rows) -> None:
    """Delete the rows of this batch's videos that it did not write: the moments of an
    earlier version of the video (a changed file gives other cuts)."""
    moments = [(d.path, d.start_s) for d in rows if d.start_s is not None]
    if moments:
        conn.execute(
            SQL["load_video_moments_drop"],
            (list({p for p, _ in moments}), [p for p, _ in moments], [s for _, s in moments]))


def _row(decoded) -> tuple:
    """The values of one decoded file, in the order of ``images.WRITTEN``."""
    from pgvector import HalfVector
    from psycopg.types.json import Jsonb

    values = []
    for name in WRITTEN:
        if name == "embedding":
            values.append(HalfVector(decoded.embedding))
        elif name == "exif":
            values.append(Jsonb(decoded.meta["exif"]) if decoded.meta["exif"] else None)
        elif name in decoded.meta:
            values.append(decoded.meta[name])
        else:
            values.append(getattr(decoded, name))
    return tuple(values)


def _stat_or_none(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, mtime_of(st)


def _as_db_error(exc: BaseException) -> BaseException:
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return DatabaseError(
            f"lost the database during the load ({str(exc).strip().splitlines()[0]}); batches "
            "written so far are kept, nothing half-written; run the same load again to resume")
    if isinstance(exc, psycopg.Error):
        return DatabaseError(f"database error while writing a batch: {exc}")
    return exc
