"""A model switch seen from the query side: :func:`reembed` (``Collection.reembed``), the
label and stored-text embeddings of the new model, and collections following a switch.

:mod:`clipsql.ingest.reembed` embeds the images; the labels and stored texts are computed
beside the live ones (``clipsql.reembed_labels``, ``clipsql.reembed_texts``) and moved in by
its switch, which calls :func:`prepare`, :func:`switch` and :func:`discard` of this module.

:func:`prepare` embeds what is not there yet (labels added or templates changed since, new
stored texts), so the switch's own call, under its locks, only has a few left to do;
:func:`switch` then replaces rows in place: every label's embedding, each set's model and
logit scale, every stored text's embedding. The labels' triggers bump each set's version
and drop its stored ``classify`` results, which were the old model's.
"""

from __future__ import annotations

import functools

from clipsql.database import binding
from clipsql.errors import ClipsqlError, QueryError
from clipsql.ingest import reembed as reembedding
from clipsql.ingest.reembed import ReembedReport
from clipsql.query import algebra, labels, text_cache

#: Stored texts embedded per model call.
TEXT_BATCH = 256


def prepare(conn, model) -> dict:
    """Embed the labels and stored texts that have no new-model embedding yet."""
    from pgvector import HalfVector

    todo: dict[tuple, list[str]] = {}
    for set_name, label, templates in conn.execute(
            "SELECT l.set_name, l.label, s.templates FROM clipsql.labels l "
            "JOIN clipsql.label_sets s ON s.name = l.set_name "
            "LEFT JOIN clipsql.reembed_labels r ON (r.set_name, r.label) = (l.set_name, l.label)"
            " WHERE r.templates IS DISTINCT FROM s.templates ORDER BY l.set_name, l.position"
    ).fetchall():
        todo.setdefault((set_name, tuple(templates)), []).append(label)
    n_labels = 0
    for (set_name, templates), names in todo.items():
        vectors = labels.embed_labels(model, names, list(templates))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO clipsql.reembed_labels (set_name, label, templates, embedding) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (set_name, label) DO UPDATE SET "
                "templates = EXCLUDED.templates, embedding = EXCLUDED.embedding",
                [(set_name, n, list(templates), HalfVector(v)) for n, v in zip(names, vectors)])
        n_labels += len(names)
    queries = [r[0] for r in conn.execute(
        "SELECT t.query FROM clipsql.text_embeddings t WHERE NOT EXISTS "
        "(SELECT 1 FROM clipsql.reembed_texts r WHERE r.query = t.query) ORDER BY 1")]
    for i in range(0, len(queries), TEXT_BATCH):
        chunk = queries[i:i + TEXT_BATCH]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO clipsql.reembed_texts (query, embedding) VALUES (%s, %s) "
                "ON CONFLICT (query) DO NOTHING",
                [(q, HalfVector(v)) for q, v in zip(chunk, model.encode_text(chunk, exact=True))])
    return {"labels": n_labels, "texts": len(queries)}


def switch(conn, model) -> dict:
    """Move the new embeddings in (inside the switch's transaction, after :func:`prepare`)."""
    n_labels = conn.execute(
        "UPDATE clipsql.labels l SET embedding = r.embedding FROM clipsql.reembed_labels r "
        "WHERE (r.set_name, r.label) = (l.set_name, l.label)").rowcount
    conn.execute("UPDATE clipsql.label_sets SET model = %s, logit_scale = %s, logit_bias = %s",
                 (labels.model_id(model), float(model.logit_scale), model.logit_bias))
    n_texts = conn.execute(
        "UPDATE clipsql.text_embeddings t SET embedding = r.embedding "
        "FROM clipsql.reembed_texts r WHERE r.query = t.query").rowcount
    discard(conn)
    text_cache.clear()
    return {"labels": n_labels, "texts": n_texts}


def discard(conn) -> None:
    """Empty the side tables (a new or cancelled reembed)."""
    conn.execute("TRUNCATE clipsql.reembed_labels, clipsql.reembed_texts")


# --- Collection.reembed ------------------------------------------------------------------
def reembed(db, model_spec: str | None = None, *, drop_old: bool = False, batch_size: int = 32,
            workers: int | None = None, processes: bool = False, progress=None,
            cancel: bool = False) -> ReembedReport:
    """Switch the collection to the model ``model_spec`` without downtime
    (``Collection.reembed``; ``db`` is the collection).

    The new embeddings are built beside the current ones (searches keep the current model
    meanwhile), then one short transaction switches images, labels and stored texts. A
    killed run resumes when run again with the same model. The replaced vectors are kept
    in ``clipsql.reembed_old`` unless ``drop_old``; with no ``model_spec``,
    ``drop_old=True`` removes those kept before. ``cancel=True`` gives up an unfinished
    reembed (its new column is dropped). ``progress(done, total)`` follows the rows.

    >>> db.reembed("ViT-L-14/openai")                                # doctest: +SKIP
    """
    if cancel:
        return reembedding.cancel(db.conn, _TextsHook)
    if model_spec is None:
        if not drop_old:
            raise QueryError("name the model to reembed with (or drop the old vectors)")
        report = ReembedReport(model=binding.bound_model(db.conn), previous=None,
                               state="dropped")
        report.old_dropped = reembedding.drop_old_data(db.conn)
        return report
    model = db.open_model(model_spec)
    report = reembedding.run(db.conn, model, _TextsHook, drop_old=drop_old,
                             batch_size=batch_size, workers=workers, processes=processes,
                             progress=progress)
    db.use_model(model)
    return report


class _TextsHook:
    """This module's functions, as the ``texts`` argument of :mod:`clipsql.ingest.reembed`."""

    prepare = staticmethod(prepare)
    switch = staticmethod(switch)
    discard = staticmethod(discard)


# --- collections following a switch ------------------------------------------------------
def follows_switch(method):
    """Make a ``Collection`` method see a model switch, maybe by another process.

    A collection whose model was replaced since it was loaded takes the new one first; a
    call that a switch overlapped (it embedded with one model and ranked the other's
    vectors, or failed on their dimensions) is done again, once, with the new model.
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        before = binding.generation(self.conn)
        follow(self, before)
        try:
            result = method(self, *args, **kwargs)
        except ClipsqlError:
            if not follow(self, binding.generation(self.conn), before, args, kwargs):
                raise
            return method(self, *args, **kwargs)
        if follow(self, binding.generation(self.conn), before, args, kwargs):
            return method(self, *args, **kwargs)
        return result
    return wrapper


def follow(db, now, before=None, args=(), kwargs=None) -> bool:
    """Drop the model of ``db`` if the binding ``now`` is another model's; True if the
    binding changed since ``before``. Then the call's own texts are removed from
    ``clipsql.text_embeddings`` (the old model may have stored them after the switch), so
    that the call done again stores the new model's."""
    if now is None:
        return False
    bound = dict(zip(("arch", "pretrained", "dim"), now[:3]))
    loaded = db.loaded_model
    stale = (loaded.identity() != bound) if loaded is not None else (before not in (None, now))
    if stale:
        db.use_model(None)
    if before is None or before == now:
        return False
    query = args[0] if args else (kwargs or {}).get("query")
    texts = [] if query is None else [p.text for p in algebra.as_parts(query)
                                      if isinstance(p, algebra.Text)]
    if texts:
        db.conn.execute("DELETE FROM clipsql.text_embeddings WHERE query = ANY(%s)", (texts,))
    return True
