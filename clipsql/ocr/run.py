"""The OCR run: read the words of every image that lacks a current OCR row, in batches.

Incremental and resumable, like the caption run (:mod:`clipsql.captions.generate`). An image
needs OCR when ``clipsql.ocr`` has no row for it, or one written by another engine or with
other languages, or for other content (its ``image_sha256`` is not the image's ``sha256``:
the file changed and was loaded again); ``redo`` reads every matching image again. Each batch
is read (a pool of threads, at most one batch in flight) and written in one transaction, so
a run that is killed keeps every batch it finished and the next run starts where it stopped.

Still images are read through :func:`clipsql.ingest.decode.read` (its size and pixel limits,
EXIF orientation); the row's ``image_sha256`` is the hash of the bytes read now, so a file
changed since its load stays stale until it is loaded again. A video moment (``start_s`` set)
is its keyframe, :func:`clipsql.ingest.video.frame_at` (budgeted, seeking to the keyframe
before it, within its deadline, and shrunk to :data:`MAX_FRAME_SIDE`), recorded with the
sha256 its load stored (the video is not hashed again); without that module moments are skipped. Tesseract's own memory
(:meth:`~clipsql.ocr.engine.OcrEngine.work_bytes`) is taken from the same decode budget
as each image is read, and each of its readings stops at the decode deadline (``too_slow``):
the threads read at once only what the budget holds. Rows imported
without a file (no ``sha256``) are never read. A file that cannot be read is counted in
``failed`` (tried again next run), never fatal.

The optional SQL filter (``where``/``params``) picks among the images, read-only
(:mod:`clipsql.database.user_sql`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from clipsql.database import images, user_sql
from clipsql.errors import ImageError, QueryError

TABLE = "clipsql.ocr"
#: Images read and written together (one transaction).
BATCH = 16
#: A video frame is read at most this wide or high (8K is read whole; word boxes of larger
#: frames are in the frame shrunk to this).
MAX_FRAME_SIDE = 8192
#: Longest text stored per image, in characters: a tsvector holds at most 1 MB, which 50,000
#: characters of CJK pairs stay under (a page of dense print is about 5,000 characters).
MAX_TEXT_CHARS = 50_000


@dataclass
class OcrReport:
    """What an OCR run did: ``computed`` rows written, ``skipped`` images that had a current
    one, ``moments_skipped`` video moments left (no video reader), ``failed`` images whose
    file could not be read (path -> reason; tried again next run)."""

    engine: str
    languages: str
    computed: int = 0
    skipped: int = 0
    moments_skipped: int = 0
    failed: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Images read per second."""
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {"engine": self.engine, "languages": self.languages, "computed": self.computed,
                "skipped": self.skipped, "moments_skipped": self.moments_skipped,
                "failed": len(self.failed), "failures": dict(self.failed),
                "seconds": round(self.seconds, 3), "images_per_s": round(self.rate, 3)}


_PENDING = (
    "SELECT i.id, i.path, i.sha256, i.start_s, "
    "o.image_id IS NULL OR o.engine <> %s OR o.languages <> %s "
    "OR o.image_sha256 IS DISTINCT FROM i.sha256 OR %s "
    f"FROM {images.TABLE} i LEFT JOIN {TABLE} o ON o.image_id = i.id "
    "WHERE i.sha256 IS NOT NULL {where} ORDER BY i.id")

_WRITE = (
    f"INSERT INTO {TABLE} (image_id, engine, languages, text, confidence, words, image_sha256) "
    "SELECT v.id, %s, %s, v.text, v.confidence, v.words::jsonb, v.sha256 "
    "FROM unnest(%s::bigint[], %s::text[], %s::real[], %s::text[], %s::text[]) "
    "AS v(id, text, confidence, words, sha256) "
    f"WHERE EXISTS (SELECT 1 FROM {images.TABLE} i WHERE i.id = v.id) "
    "ON CONFLICT (image_id) DO UPDATE SET engine = EXCLUDED.engine, "
    "languages = EXCLUDED.languages, text = EXCLUDED.text, confidence = EXCLUDED.confidence, "
    "words = EXCLUDED.words, image_sha256 = EXCLUDED.image_sha256, created_at = now()")


def pending(conn, engine: str, languages: str, *, where=None, params=(),
            redo: bool = False) -> tuple[list, int]:
    """``([(id, path, sha256, start_s), ...], current)``: the images to read, by id, and
    how many of the matching images already have a current OCR row."""
    wrapped = user_sql.wrap(where)
    sql = _PENDING.format(where=f"AND {wrapped}" if wrapped else "")
    with user_sql.read_only(conn, where, what="ocr") as ro:
        rows = ro.execute(sql, [engine, languages, bool(redo), *(params or ())]).fetchall()
    todo = [(r[0], r[1], r[2], r[3]) for r in rows if r[4]]
    return todo, len(rows) - len(todo)


def write(conn, engine: str, languages: str, rows: Sequence[tuple]) -> int:
    """Store ``(id, text, confidence, words, sha256)`` rows in one transaction; returns how
    many were given (a row whose image was deleted meanwhile is dropped)."""
    if not rows:
        return 0
    ids, texts, confidences, words, shas = zip(*rows)
    # NUL cannot be stored in text or jsonb: Tesseract never writes one, but be sure
    texts = [t.replace("\x00", "")[:MAX_TEXT_CHARS] for t in texts]
    words = [json.dumps(w, ensure_ascii=False).replace("\\u0000", "") for w in words]
    with conn.transaction():
        conn.execute(_WRITE, [engine, languages, list(ids), texts, list(confidences), words,
                              list(shas)])
    return len(rows)


def _video_reader():
    """:func:`clipsql.ingest.video.frame_at`, or None where that module cannot be imported."""
    try:
        from clipsql.ingest.video import frame_at
    except Exception:
        return None
    return frame_at


def _read_one(engine, item, frame_at, places=None):
    """``(id, result, sha256)`` of one pending row, or ``(id, why, path)``: a file
    that cannot be read, a video frame that cannot be decoded, or Tesseract failing on one
    image stops only that image. Only files inside ``places`` (the loaded folders,
    :func:`clipsql.ingest.roots.places`) are read: a row's file replaced since by a link
    out of them is ``link_outside``."""
    from clipsql.ingest import decode

    image_id, path, sha, start_s = item
    try:
        if start_s is None:  # decoded within the budget and the pixel limit
            decoded = decode.read(path, engine.prepare, places=places)
            (prepared, factor), sha = decoded.pixels, decoded.sha256
            size = (decoded.width, decoded.height)
        else:  # budgeted, seeking and within its deadline; 8K and smaller frames whole
            frame = frame_at(path, start_s, max_side=MAX_FRAME_SIDE, places=places)
            size = frame.size
            prepared, factor = engine.prepare(frame)
            del frame
        with decode.BUDGET.reservation() as ticket:  # the engine's memory, in the same budget
            decode.BUDGET.take(ticket, engine.work_bytes(prepared.size))
            return image_id, engine.recognise_prepared(prepared, factor, size), sha
    except ImageError as exc:
        return image_id, f"{exc.reason}: {exc.detail}", path
    except RuntimeError as exc:  # tesserocr's and ONNX Runtime's errors
        return image_id, f"{engine.engine} failed on it: {exc}", path


def ocr(connect, *, engine=None, batch_size: int = BATCH, where=None, params=(),
        progress: Callable[[int, int], None] | None = None, redo: bool = False,
        threads: int | None = None) -> OcrReport:
    """Read the words of every image without a current OCR row (see module docs).

    ``connect``: a psycopg connection, or a callable that opens one (closed at the end).
    ``engine``: an :class:`~clipsql.ocr.engine.OcrEngine` (default: PP-OCR with the default
    languages), or a language string such as ``"eng+jpn"`` (its engine:
    :func:`~clipsql.ocr.engine.engine_for`). ``progress(done,
    total)`` is called before the first batch and after each (``total``: images to read).
    ``threads``: images read at once (default: the CPUs, at most 8).
    """
    from clipsql.ocr.engine import OcrEngine

    for name, value in (("batch_size", batch_size), ("threads", threads)):
        if value is None and name == "threads":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f"{name} must be a positive integer, not {value!r}")
    own_engine = not isinstance(engine, OcrEngine)
    if own_engine:
        engine = OcrEngine(engine)
    own_conn = callable(connect) and not hasattr(connect, "execute")
    conn = connect() if own_conn else connect
    try:
        return _run(conn, engine, batch_size, where, params, progress, redo,
                    threads or max(1, min(8, os.cpu_count() or 1)))
    finally:
        if own_conn:
            conn.close()
        if own_engine:
            engine.close()


def _run(conn, engine, batch_size, where, params, progress, redo, threads) -> OcrReport:
    report = OcrReport(engine.engine, engine.languages)
    todo, report.skipped = pending(conn, engine.engine, engine.languages, where=where,
                                   params=params, redo=redo)
    from clipsql.ingest import roots

    frame_at = _video_reader() if any(item[3] is not None for item in todo) else None
    places = roots.places(conn)
    if frame_at is None:
        report.moments_skipped = sum(1 for item in todo if item[3] is not None)
        todo = [item for item in todo if item[3] is None]
    start = time.perf_counter()
    if progress:
        progress(0, len(todo))
    done = 0
    with ThreadPoolExecutor(min(threads, batch_size), thread_name_prefix="clipsql-ocr") as pool:
        for first in range(0, len(todo), batch_size):
            batch = todo[first:first + batch_size]
            rows = []
            for image_id, result, sha in pool.map(
                    lambda item: _read_one(engine, item, frame_at, places), batch):
                if isinstance(result, str):  # why it could not be read
                    report.failed[sha] = result
                    continue
                rows.append((image_id, *result.to_row(), sha))
            report.computed += write(conn, engine.engine, engine.languages, rows)
            done += len(batch)
            if progress:
                progress(done, len(todo))
    report.seconds = time.perf_counter() - start
    return report
