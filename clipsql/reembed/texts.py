"""The texts' half of a reembed: the label and stored-text embeddings of the new model.

They are computed beside the live ones (``clipsql.reembed_labels``,
``clipsql.reembed_texts``) and moved in by the switch (:mod:`clipsql.reembed.switch`),
which calls :func:`prepare`, :func:`switch` and :func:`discard`.

:func:`prepare` embeds what is not there yet (labels added or templates changed since, new
stored texts), so the switch's own call, under its locks, only has a few left to do;
:func:`switch` then replaces rows in place: every label's embedding, each set's model and
logit scale, every stored text's embedding. The labels' triggers bump each set's version
and drop its stored ``classify`` results, which were the old model's.
"""

from __future__ import annotations

from clipsql.database.queries import SQL
from clipsql.query import label_sets, text_cache

#: Stored texts embedded per model call.
TEXT_BATCH = 256


def prepare(conn, model) -> dict:
    """Embed the labels and stored texts that have no new-model embedding yet."""
    from pgvector import HalfVector

    todo: dict[tuple, list[str]] = {}
    for set_name, label, templates in conn.execute(SQL["reembed_labels_todo"]).fetchall():
        todo.setdefault((set_name, tuple(templates)), []).append(label)
    n_labels = 0
    for (set_name, templates), names in todo.items():
        vectors = label_sets.embed_labels(model, names, list(templates))
        with conn.cursor() as cur:
            cur.executemany(
                SQL["reembed_labels_insert"],
                [(set_name, n, list(templates), HalfVector(v)) for n, v in zip(names, vectors)])
        n_labels += len(names)
    queries = [r[0] for r in conn.execute(SQL["reembed_texts_todo"])]
    for i in range(0, len(queries), TEXT_BATCH):
        chunk = queries[i:i + TEXT_BATCH]
        with conn.cursor() as cur:
            cur.executemany(
                SQL["reembed_texts_insert"],
                [(q, HalfVector(v)) for q, v in zip(chunk, model.encode_text(chunk, fp32=True))])
    return {"labels": n_labels, "texts": len(queries)}


def switch(conn, model) -> dict:
    """Move the new embeddings in (inside the switch's transaction, after :func:`prepare`)."""
    n_labels = conn.execute(SQL["reembed_labels_move"]).rowcount
    conn.execute(SQL["reembed_label_sets_model"],
                 (label_sets.model_id(model), float(model.logit_scale), model.logit_bias))
    n_texts = conn.execute(SQL["reembed_texts_move"]).rowcount
    discard(conn)
    text_cache.clear()
    return {"labels": n_labels, "texts": n_texts}


def discard(conn) -> None:
    """Empty the side tables (a new or cancelled reembed)."""
    conn.execute(SQL["reembed_discard"])
