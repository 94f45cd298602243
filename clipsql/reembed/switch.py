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
from clipsql.errors import DatabaseError, LoadError, ReembedUnfinishedError
from clipsql.ingest.decoder_pool import Decoders
from clipsql.reembed import rows, texts

NEXT = rows.NEXT
NEXT_INDEX = "images_embedding_next_hnsw"
TODO_INDEX = "images_embedding_next_todo"
TRIGGER = "images_reembed_row_changed"
#: One reembed at a time (a session lock: a killed run releases it).
LOCK_KEY = migrations.LOCK_KEY + 2
#: How long the switch waits for a lock before it rolls back and tries again.
SWITCH_LOCK_TIMEOUT_MS = 3000
SWITCH_TRIES = 5
_MISSING = rows.MISSING
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
    cur = conn.execute("SELECT * FROM clipsql.reembed ORDER BY finished_at IS NULL DESC, id DESC "
                       "LIMIT 1")
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
    has_next = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'clipsql.images'::regclass "
        "AND attname = %s AND NOT attisdropped)", (NEXT,)).fetchone()[0]
    if not has_next:
        total = conn.execute("SELECT count(*) FROM clipsql.images").fetchone()[0]
        return min(recorded, total), total
    done, total = conn.execute(f"SELECT count(*) FILTER (WHERE NOT {_MISSING}), count(*) "
                               "FROM clipsql.images").fetchone()
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
        with Decoders(model.preprocess, 2 * model.image_size, workers or 2, processes) as pool:
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
            conn.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON clipsql.images")
            conn.execute(f"ALTER TABLE clipsql.images DROP COLUMN IF EXISTS {NEXT}")
            conn.execute("UPDATE clipsql.reembed SET state = 'cancelled', finished_at = now(), "
                         "updated_at = now() WHERE id = %s", (run_row["id"],))
            texts.discard(conn)
        report.model, report.state = _identity(run_row), "cancelled"
        return report


def drop_old_data(conn) -> int:
    """Remove the vectors a finished reembed kept of the replaced model; how many rows."""
    with conn.transaction():
        n = conn.execute("SELECT count(*) FROM clipsql.reembed_old").fetchone()[0]
        conn.execute("TRUNCATE clipsql.reembed_old")
        conn.execute("UPDATE clipsql.reembed SET old_kept = false WHERE old_kept")
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
    n, example = conn.execute("SELECT count(*), min(path) FROM clipsql.images "
                              "WHERE sha256 IS NULL").fetchone()
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
            "INSERT INTO clipsql.reembed (arch, pretrained, dim, spec, old_arch, old_pretrained,"
            " old_dim, old_spec, total) SELECT %s, %s, %s, %s, %s, %s, %s, %s, count(*) "
            "FROM clipsql.images RETURNING id",
            (ident["arch"], ident["pretrained"], ident["dim"], spec, bound["arch"],
             bound["pretrained"], bound["dim"], old_spec)).fetchone()[0]
        conn.execute(f"ALTER TABLE clipsql.images ADD COLUMN {NEXT} "
                     f"halfvec({int(ident['dim'])}) NOT NULL DEFAULT '{zero}'")
        conn.execute(f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OF embedding ON clipsql.images "
                     "FOR EACH ROW EXECUTE FUNCTION clipsql.reembed_row_changed()")
        texts.discard(conn)
    return run_id


def _set_state(conn, run_id: int, state: str) -> None:
    conn.execute("UPDATE clipsql.reembed SET state = %s, updated_at = now() WHERE id = %s",
                 (state, run_id))


def _build_todo_index(conn) -> None:
    """A partial index of the rows still to embed: the switch finds them without a scan."""
    state = hnsw.index_valid(conn, TODO_INDEX)
    if state:
        return
    if state is False:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS clipsql.{TODO_INDEX}")
    conn.execute(f"CREATE INDEX CONCURRENTLY {TODO_INDEX} ON clipsql.images (id) "
                 f"WHERE {_MISSING}")


def _switch(conn, model, filler, *, keep_old: bool) -> None:
    """The one switching transaction (see the module docs); retried on lock timeouts."""
    import psycopg

    ident, spec = model.identity(), model.spec.resolved()
    for _ in range(SWITCH_TRIES):
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = {SWITCH_LOCK_TIMEOUT_MS}")
                conn.execute("LOCK TABLE clipsql.images IN SHARE ROW EXCLUSIVE MODE")
                filler.fill()  # loaded since the last pass: loads wait from here on
                filler.raise_failures()
                conn.execute("LOCK TABLE clipsql.label_sets, clipsql.labels, "
                             "clipsql.text_embeddings IN SHARE ROW EXCLUSIVE MODE")
                texts.prepare(conn, model)
                conn.execute("TRUNCATE clipsql.reembed_old")
                if keep_old:
                    conn.execute("INSERT INTO clipsql.reembed_old (id, embedding) "
                                 "SELECT id, embedding FROM clipsql.images")
                conn.execute("LOCK TABLE clipsql.images IN ACCESS EXCLUSIVE MODE")
                conn.execute(f"DROP TRIGGER {TRIGGER} ON clipsql.images")
                conn.execute(f"DROP INDEX clipsql.{TODO_INDEX}")
                conn.execute("ALTER TABLE clipsql.images DROP COLUMN embedding")
                conn.execute(f"ALTER TABLE clipsql.images RENAME COLUMN {NEXT} TO embedding")
                conn.execute("ALTER TABLE clipsql.images ALTER COLUMN embedding DROP DEFAULT")
                conn.execute(f"ALTER INDEX clipsql.{NEXT_INDEX} RENAME TO {hnsw.INDEX_NAME}")
                binding.rebind(conn, ident, spec)
                moved = texts.switch(conn, model)
                conn.execute(
                    "UPDATE clipsql.reembed SET state = 'done', finished_at = now(), "
                    "updated_at = now(), old_kept = %s, "
                    "total = (SELECT count(*) FROM clipsql.images) WHERE finished_at IS NULL",
                    (keep_old,))
            filler.report.labels, filler.report.texts = moved["labels"], moved["texts"]
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            continue
    raise DatabaseError(
        f"the switch could not get its locks in {SWITCH_TRIES} tries (long-running queries "
        "or loads on clipsql.images); everything is embedded: run the reembed again to switch")

