"""The caption run: write a caption for every image that lacks a current one, in batches.

Incremental and resumable. An image needs a caption from a model when ``clipsql.captions``
has none for it and that model, or has one written for other content (its
``image_sha256`` is not the image's ``sha256``: the file changed and was loaded again). Each
batch is decoded, captioned and written in one transaction, so a run that is killed keeps
every batch it finished and the next run starts where it stopped. Rows imported without a
file (no ``sha256``) are never captioned.

The optional SQL filter (``where``/``params``) picks among the images, read-only
(:mod:`clipsql.database.user_sql`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clipsql.database import user_sql
from clipsql.database.queries import SQL
from clipsql.errors import ImageError, ModelError, QueryError
from clipsql.models.captioner import DEFAULT_CAPTION_MODEL, MAX_LENGTH, Captioner

TABLE = "clipsql.captions"
#: Images decoded and captioned together.
BATCH = 8


@dataclass
class CaptionReport:
    """What a caption run did: ``computed`` captions written, ``skipped`` images that had a
    current one, ``failed`` images whose file could not be read (path -> reason; tried again
    next run)."""

    model: str
    computed: int = 0
    skipped: int = 0
    failed: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Captions written per second."""
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {"model": self.model, "computed": self.computed, "skipped": self.skipped,
                "failed": len(self.failed), "failures": dict(self.failed),
                "seconds": round(self.seconds, 3), "images_per_s": round(self.rate, 3)}


_PENDING, _WRITE = SQL["captions_pending"], SQL["captions_write"]


def pending(conn, caption_model: str, *, where=None, params=()) -> tuple[list, int]:
    """``([(id, path, sha256), ...], current)``: the images to caption, by id, and how many
    of the matching images already have a current caption."""
    wrapped = user_sql.wrap(where)
    sql = _PENDING.format(where=f"AND {wrapped}" if wrapped else "")
    with user_sql.read_only(conn, where, what="caption") as ro:
        rows = ro.execute(sql, [caption_model, *(params or ())]).fetchall()
    todo = [(r[0], r[1], r[2]) for r in rows if r[3]]
    return todo, len(rows) - len(todo)


def write(conn, caption_model: str, rows: Sequence[tuple[int, str, str]]) -> int:
    """Store ``(id, caption, sha256)`` rows in one transaction; returns how many were given."""
    if not rows:
        return 0
    ids, texts, shas = zip(*rows)
    with conn.transaction():
        conn.execute(_WRITE, [caption_model, list(ids), list(texts), list(shas)])
    return len(rows)


def remembered_model(conn) -> str | None:
    """The model that wrote the collection's most recent caption, or None when no model
    wrote one (captions written by hand, with a model name that is not ``ARCH/...``, do not
    count). ModelError when it was a checkpoint file: only its name and fingerprint are
    recorded, not where it is."""
    row = conn.execute(SQL["captions_latest_model"]).fetchone()
    if row is None:
        return None
    if row[0].partition("/")[2].startswith("file:"):
        raise ModelError(f"the collection's captions were written by {row[0]}, a checkpoint "
                         "file whose path is not recorded: name the caption model again "
                         "(ARCH/PATH-TO-CHECKPOINT)")
    return row[0]


def model_for(conn, spec: str | None = None) -> str:
    """The caption model to use: ``spec``; else the one that wrote the collection's captions
    (:func:`remembered_model`), so a second run goes on with the same model; else
    :data:`DEFAULT_CAPTION_MODEL`."""
    return spec or remembered_model(conn) or DEFAULT_CAPTION_MODEL


def captioner_for(spec: str | None = None, device: str | None = None,
                  cached: Captioner | None = None, conn=None) -> Captioner:
    """The :class:`Captioner` for ``spec`` (default: :func:`model_for` on ``conn`` when
    given, else :data:`DEFAULT_CAPTION_MODEL`): ``cached`` when it is that model already
    (its weights stay loaded)."""
    spec = model_for(conn, spec) if conn is not None else spec or DEFAULT_CAPTION_MODEL
    if cached is not None and str(cached.spec) == spec:
        return cached
    return Captioner(spec, device=device)


def caption(conn, captioner, *, where=None, params=(), batch_size: int = BATCH,
            max_length: int = MAX_LENGTH,
            progress: Callable[[int, int], None] | None = None,
            steps: Callable[[str], None] | None = None) -> CaptionReport:
    """Caption every image without a current caption from ``captioner`` (see module docs).

    ``progress(done, total)`` is called before the first batch and after each one
    (``total``: images to caption); ``steps(what)`` is told each step before them (finding
    the images, loading the model's weights).
    """
    steps = steps or (lambda what: None)
    from clipsql.ingest import roots
    from clipsql.ingest.decode import read

    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f"{name} must be a positive integer, not {value!r}")
    captioner.check_captioning()
    report = CaptionReport(captioner.caption_model)
    steps(f"finding the images without a current caption from {report.model}")
    todo, report.skipped = pending(conn, report.model, where=where, params=params)
    if todo:
        steps(f"{len(todo)} images to caption ({report.skipped} already current); loading "
              f"{captioner.spec} on torch")
        captioner.preprocess  # the weights load before the clock starts: the rate is captioning
        steps(f"captioning on {captioner.device}, {min(batch_size, len(todo))} images at a "
              "time (greedy decoding, token by token)")
    places = roots.places(conn)  # only files inside the loaded folders are read again
    start = time.perf_counter()
    if progress:
        progress(0, len(todo))
    done = 0
    for first in range(0, len(todo), batch_size):
        batch = todo[first:first + batch_size]
        decoded, shas = [], []
        for image_id, path, _sha in batch:
            try:
                item = read(path, captioner.preprocess, places=places)
            except ImageError as exc:
                report.failed[path] = exc.reason
                continue
            # the bytes read now are what the caption describes: a file changed since its
            # load stays stale until it is loaded again
            decoded.append((image_id, item.pixels))
            shas.append(item.sha256)
        if decoded:
            import torch

            texts = captioner.generate(torch.stack([p for _, p in decoded]), max_length)
            report.computed += write(conn, report.model, [
                (image_id, text, sha) for (image_id, _), text, sha in zip(decoded, texts, shas)])
        done += len(batch)
        if progress:
            progress(done, len(todo))
    report.seconds = time.perf_counter() - start
    return report
