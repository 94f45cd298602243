"""Switch a collection to another model without downtime: embed beside, then swap.

A reembed adds ``clipsql.images.embedding_next halfvec(new dim)``, NOT NULL with an all-zero
placeholder as its default (a catalog-only change: no rewrite), and fills it in the
background from the image files, a batch per transaction, each batch counted in the
``clipsql.reembed`` row of the run. Searches keep using ``embedding`` all along. A kill
loses at most the batch in flight: a rerun of the same target resumes, embedding only the
rows still holding the placeholder. Rows that loads add meanwhile get the placeholder (the
default), and rows a load rewrites get it back (trigger ``images_reembed_row_changed``),
so they are embedded too.

Once filled: the new column's HNSW index is built with ``CREATE INDEX CONCURRENTLY`` (loads
and searches go on), the label and stored-text embeddings are computed beside the live ones
(:mod:`clipsql.reembed.texts`), then :func:`_switch` runs one
transaction: with loads kept out (``SHARE ROW EXCLUSIVE``: searches go on) it embeds the
rows still missing, copies the old vectors to ``clipsql.reembed_old`` unless they are
dropped, and only then takes the exclusive lock for catalog-only steps: drop ``embedding``,
rename ``embedding_next`` to it and its index to ``images_embedding_hnsw``, rebind the model,
move the label and text rows in. A search waits for that moment, then sees the new model.
See docs/reembed.md.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from clipsql import config
from clipsql.database import binding, hnsw, migrations
from clipsql.database.queries import SQL
from clipsql.errors import DatabaseError, LoadError, ReembedUnfinishedError
from clipsql.ingest import decode, roots
from clipsql.ingest.decoder_pool import Decoders
from clipsql.reembed import rows, texts

#: The new column (named in the reembed's statements of ``queries.sql`` too), its HNSW index,
#: and the partial index of the rows still to embed; the trigger is named only there.
NEXT = rows.NEXT
NEXT_INDEX = "images_embedding_next_hnsw"
TODO_INDEX = "images_embedding_next_todo"
#: One reembed at a time (a session lock: a killed run releases it).
LOCK_KEY = migrations.LOCK_KEY + 2
#: How long the switch waits for a lock before it rolls back and tries again.
SWITCH_LOCK_TIMEOUT_MS = 3000
SWITCH_TRIES = 5
_COLUMNS = ("arch", "pretrained", "dim", "spec")


@dataclass
class ReembedReport:
    """What a reembed did. ``state``: ``done`` (switched now), ``unchanged`` (the collection
    already uses the model), ``cancelled``, or ``dropped`` (old vectors removed only)."""

    model: dict | None
    previous: dict | None
    state: str = "unchanged"
    embedded: int = 0
    total: int = 0
    resumed: bool = False
    index_built: bool = False
    switched: bool = False
    labels: int = 0
    texts: int = 0
    old_kept: bool = False
    old_dropped: int = 0
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def progress(conn) -> dict | None:
    """The latest ``clipsql.reembed`` row (unfinished first) as a dict, or None; an
    unfinished one's ``embedded`` and ``total`` are counted now (rows loaded or removed
    since it started count), not as its last batch left them."""
    cur = conn.execute(SQL["reembed_latest"])
    row = cur.fetchone()
    if row is None:
        return None
    row = dict(zip([d.name for d in cur.description], row))
    if row["finished_at"] is None:
        row["embedded"], row["total"] = _counts(conn, row["embedded"])
    return row


def _counts(conn, recorded: int) -> tuple[int, int]:
    """(rows embedded with the new model, rows) now; ``recorded`` where the new column is
    not there (yet)."""
    if not conn.execute(SQL["reembed_has_next"]).fetchone()[0]:
        total = conn.execute(SQL["image_count"]).fetchone()[0]
        return min(recorded, total), total
    done, total = conn.execute(SQL["reembed_counts"]).fetchone()
    return done, total


def run(conn, model, *, drop_old: bool = False, batch_size: int = config.BATCH_SIZE,
        workers: int | None = None, processes: bool = False, progress=None,
        steps=None) -> ReembedReport:
    """Reembed the collection on ``conn`` (autocommit) with ``model`` and switch to it.

    ``progress(done, total)`` is called after each batch; ``steps(what)`` is told each step
    (the model's one-time export, the index, the switch). ``drop_old`` does not keep the
    replaced vectors. The model is prepared before the run is recorded.
    """
    steps = steps or (lambda what: None)
    started = time.perf_counter()
    with _one_at_a_time(conn):
        bound = binding.require_model(conn)
        target = model.identity()
        report = ReembedReport(model=target, previous=bound)
        run_row = _unfinished(conn)
        if run_row is not None and _identity(run_row) != target:
            raise ReembedUnfinishedError(
                f"a reembed to {binding.describe(_identity(run_row))} is unfinished "
                f"({run_row['embedded']} of {run_row['total']} rows embedded)",
                run_row["spec"] or f"{run_row['arch']}/{run_row['pretrained']}",
                run_row["embedded"], run_row["total"])
        if run_row is None and target == bound:
            if drop_old:
                report.old_dropped = drop_old_data(conn)
            report.seconds = round(time.perf_counter() - started, 3)
            return report
        _check_files(conn)
        steps(f"preparing {model.spec}")
        model.prepare(steps)  # offline or a bad checkpoint: nothing recorded yet
        if run_row is None:
            run_id = _start(conn, model, bound)
        else:
            run_id, report.resumed = run_row["id"], True
        filler = rows.RowEmbedder(conn, model, run_id, report, batch_size, progress)
        places = roots.places(conn)  # files are read again only inside the loaded folders
        with Decoders(model.preprocess, decode.draft_size(model.image_size), workers or 2, processes,
                      places=places) as pool:
            filler.pool = pool
            steps(f"embedding the images with {model.spec}"
                  + (f" (resuming: {run_row['embedded']} of {run_row['total']} done)"
                     if run_row else ""))
            filler.fill()
            _set_state(conn, run_id, "indexing")
            steps("building the new column's HNSW index (searches go on)")
            _build_todo_index(conn)
            report.index_built = hnsw.build_concurrently(conn, NEXT_INDEX, NEXT, target["dim"])
            filler.fill()  # rows loaded or changed while the index was built
            filler.raise_failures()
            steps("embedding the labels and stored texts with the new model")
            texts.prepare(conn, model)
            steps("switching to the new model")
            _switch(conn, model, filler, keep_old=not drop_old)
        report.state, report.switched, report.old_kept = "done", True, not drop_old
        report.seconds = round(time.perf_counter() - started, 3)
        return report


def cancel(conn) -> ReembedReport:
    """Give up an unfinished reembed: its column, indexes and side rows are dropped."""
    with _one_at_a_time(conn):
        run_row = _unfinished(conn)
        report = ReembedReport(model=None, previous=binding.bound_model(conn))
        if run_row is None:
            return report
        with conn.transaction():
            conn.execute(SQL["reembed_cancel_trigger"])
            conn.execute(SQL["reembed_cancel_column"])
            conn.execute(SQL["reembed_cancelled"], (run_row["id"],))
            texts.discard(conn)
        report.model, report.state = _identity(run_row), "cancelled"
        return report


def drop_old_data(conn) -> int:
    """Remove the vectors a finished reembed kept of the replaced model; how many rows."""
    with conn.transaction():
        n = conn.execute(SQL["reembed_old_count"]).fetchone()[0]
        conn.execute(SQL["reembed_old_truncate"])
        conn.execute(SQL["reembed_old_not_kept"])
    return n


class _one_at_a_time:
    """Hold the reembed lock for a ``with`` block, or refuse if another run holds it."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        if not self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            raise DatabaseError("another reembed of this collection is running; wait for it "
                                "to finish (a rerun resumes where it stopped)")

    def __exit__(self, *exc):
        if not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _identity(row: dict) -> dict:
    return {k: row[k] for k in ("arch", "pretrained", "dim")}


def _unfinished(conn) -> dict | None:
    row = progress(conn)
    return row if row is not None and row["finished_at"] is None else None


def _check_files(conn) -> None:
    n, example = conn.execute(SQL["reembed_imported"]).fetchone()
    if n:
        raise LoadError(
            f"{n} rows were imported from precomputed embeddings (e.g. {example!r}): a "
            "reembed reads the image files, which they have none of; remove those rows or "
            "import the new model's embeddings into a new collection instead")


def _start(conn, model, bound: dict) -> int:
    ident, spec = model.identity(), model.spec.resolved()
    zero = "[" + ",".join(["0"] * int(ident["dim"])) + "]"
    old_spec = binding.bound_spec(conn)
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '10s'")
        run_id = conn.execute(
            SQL["reembed_start"],
            (ident["arch"], ident["pretrained"], ident["dim"], spec, bound["arch"],
             bound["pretrained"], bound["dim"], old_spec)).fetchone()[0]
        conn.execute(SQL["reembed_add_column"].format(dim=int(ident["dim"]), zero=zero))
        conn.execute(SQL["reembed_add_trigger"])
        texts.discard(conn)
    return run_id


def _set_state(conn, run_id: int, state: str) -> None:
    conn.execute(SQL["reembed_set_state"], (state, run_id))


def _build_todo_index(conn) -> None:
    """A partial index of the rows still to embed: the switch finds them without a scan."""
    state = hnsw.index_valid(conn, TODO_INDEX)
    if state:
        return
    if state is False:
        conn.execute(SQL["index_drop_concurrently"].format(name=TODO_INDEX))
    conn.execute(SQL["reembed_todo_index"].format(name=TODO_INDEX))


def _switch(conn, model, filler, *, keep_old: bool) -> None:
    """The one switching transaction (see the module docs); retried on lock timeouts."""
    import psycopg

    ident, spec = model.identity(), model.spec.resolved()
    for _ in range(SWITCH_TRIES):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {SWITCH_LOCK_TIMEOUT_MS}")
                conn.execute(SQL["switch_lock_loads"])
                filler.fill()  # loaded since the last pass: loads wait from here on
                filler.raise_failures()
                conn.execute(SQL["switch_lock_texts"])
                texts.prepare(conn, model)
                conn.execute(SQL["reembed_old_truncate"])
                if keep_old:
                    conn.execute(SQL["switch_keep_old"])
                conn.execute(SQL["switch_lock_all"])
                conn.execute(SQL["switch_drop_trigger"])
                conn.execute(SQL["switch_drop_index"].format(name=TODO_INDEX))
                conn.execute(SQL["switch_drop_embedding"])
                conn.execute(SQL["switch_rename_next"])
                conn.execute(SQL["switch_drop_default"])
                conn.execute(SQL["switch_rename_index"].format(next=NEXT_INDEX,
                                                               name=hnsw.INDEX_NAME))
                binding.rebind(conn, ident, spec)
                moved = texts.switch(conn, model)
                conn.execute(SQL["switch_done"], (keep_old,))
            filler.report.labels, filler.report.texts = moved["labels"], moved["texts"]
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            continue
    raise DatabaseError(
        f"the switch could not get its locks in {SWITCH_TRIES} tries (long-running queries "
        "or loads on clipsql.images); everything is embedded: run the reembed again to switch")

