"""Zero-shot classification of the whole collection, moderation flags, and stored results.

Images are read in batches through a binary server-side cursor (one query, not one per
image) and classified with numpy matrix products; see ``benchmarks/classify.py`` for the
throughput. Stored results go to ``clipsql.image_labels`` in one transaction.

>>> import clipsql                                              # doctest: +SKIP
>>> db = clipsql.connect()                                      # doctest: +SKIP
>>> for r in db.classify(["cat", "dog", "car"], top=1):         # doctest: +SKIP
...     print(r.path, r.labels)                                 # [('dog', 0.93)]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from clipsql.database import binding, user_sql
from clipsql.database.queries import SQL
from clipsql.errors import LabelError
from clipsql.query.label_sets import LabelSet, normalize, probabilities

#: Rows fetched and classified per batch.
BATCH = 20_000
#: Storing at least this many images refreshes the planner statistics of image_labels.
ANALYZE_ROWS = 10_000
#: The background class of `flag` (averaged into one "nothing in particular" label).
NEUTRAL_PROMPTS = ("a photo.", "a picture.", "an image.")


@dataclass
class ImageLabels:
    """One image's labels, ``[(label, probability), ...]`` best first."""

    id: int
    path: str
    labels: list

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path,
                "labels": [{"label": lb, "probability": round(float(p), 6)} for lb, p in self.labels]}


@dataclass
class Classification:
    """Per-image results of :func:`classify`, sorted by id; iterating yields :class:`ImageLabels`.

    ``top_index``/``top_probability`` are (N, top) arrays. ``computed`` counts the images this
    call classified; with ``stored=True``, ``skipped`` counts images whose stored results
    were already current.
    """

    label_set: str | None
    version: int | None
    labels: list
    ids: np.ndarray
    paths: list
    top_index: np.ndarray
    top_probability: np.ndarray
    stored: bool = False
    skipped: int = 0
    seconds: float = 0.0

    @property
    def computed(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> ImageLabels:
        pairs = [(self.labels[j], float(p)) for j, p in zip(self.top_index[i], self.top_probability[i])]
        return ImageLabels(int(self.ids[i]), self.paths[i], pairs)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def summary(self) -> dict:
        return {"label_set": self.label_set, "version": self.version, "labels": self.labels,
                "computed": self.computed, "skipped": self.skipped, "stored": self.stored,
                "seconds": round(self.seconds, 3)}

    def to_json(self) -> str:
        return json.dumps([r.to_dict() for r in self], ensure_ascii=False)


def classify(conn, label_set: LabelSet, *, where=None, params=(), top: int | None = 1,
             store: bool = False, batch: int = BATCH) -> Classification:
    """Classify the images matching ``where`` against ``label_set``.

    ``top`` keeps the best ``top`` labels per image (None or 0: all, in label order of
    probability). ``store`` writes them to ``clipsql.image_labels`` and classifies only
    images without current results (new, re-loaded, or classified with fewer ranks).
    """
    started = time.perf_counter()
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
        raise LabelError(f"top must be a positive integer (or 0/None for all labels), not {top!r}")
    k = len(label_set.labels) if not top else min(top, len(label_set.labels))
    if store and label_set.version is None:
        raise LabelError("storing results needs a named label set: add the labels first "
                         "(db.add_labels([...], label_set=NAME) or `clipsql labels add`)")
    chunks = []

    def on_batch(ids, paths, updated, emb):
        p = probabilities(emb, label_set)
        idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
        chunks.append((ids, paths, updated, idx.astype(np.int32), np.take_along_axis(p, idx, axis=1)))

    pending = (label_set.name, label_set.version, k) if store else None
    matched = scan(conn, where, params, on_batch, batch=batch, unstored=pending)
    ids, paths, updated, idx, prob = _concat(chunks, k)
    if store and len(ids):
        _store(conn, label_set, ids, updated, idx, prob)
    order = np.argsort(ids, kind="stable")
    return Classification(label_set.name, label_set.version, list(label_set.labels), ids[order],
                          [paths[i] for i in order], idx[order], prob[order], stored=store,
                          skipped=matched - len(ids) if store else 0,
                          seconds=time.perf_counter() - started)


def neutral_embedding(model, prompts=NEUTRAL_PROMPTS) -> np.ndarray:
    """One background label: the normalised mean of the (untemplated) neutral prompts."""
    return normalize(normalize(model.encode_text(list(prompts), fp32=True))
                     .mean(axis=0, keepdims=True))[0]


def flag(conn, label_set: LabelSet, threshold: float, *, neutral: np.ndarray | None = None,
         where=None, params=(), batch: int = BATCH) -> list[ImageLabels]:
    """Images whose probability for any label of the set is at least ``threshold``.

    With ``neutral`` (see :func:`neutral_embedding`), the softmax also includes that
    background class, so an image matching none of the labels puts its mass there instead
    of on the least unlikely label (a SigLIP set's per-label sigmoid needs no such class:
    it is left out there). Results: the labels over the threshold, most confident image first.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise LabelError(f"the threshold must be a probability in (0, 1], not {threshold!r}")
    n = len(label_set.labels)
    scored = label_set
    if neutral is not None:
        scored = LabelSet(label_set.name, [*label_set.labels, "(neutral)"], label_set.templates,
                          np.vstack([label_set.embeddings, neutral[None, :]]),
                          label_set.logit_scale, label_set.model, label_set.version,
                          logit_bias=label_set.logit_bias)
    found = []

    def on_batch(ids, paths, updated, emb):
        p = probabilities(emb, scored)[:, :n]
        for row in np.nonzero((p >= threshold).any(axis=1))[0]:
            order = [j for j in np.argsort(-p[row], kind="stable") if p[row, j] >= threshold]
            found.append(ImageLabels(int(ids[row]), paths[row],
                                     [(label_set.labels[j], float(p[row, j])) for j in order]))

    scan(conn, where, params, on_batch, batch=batch)
    return sorted(found, key=lambda r: (-r.labels[0][1], r.id))


def scan(conn, where, params, on_batch, *, batch=BATCH, unstored=None) -> int:
    """Call ``on_batch(ids, paths, updated_at, embeddings)`` per batch of matching images in
    one read-only transaction; returns how many images match ``where``.

    ``unstored=(set, version, rank)`` keeps only images without a current stored result.
    """
    binding.require_model(conn)
    user = [c for c in [user_sql.wrap(where)] if c]
    args = list(params or ())
    conditions, scan_args = list(user), list(args)
    if unstored:
        conditions.append(SQL["classify_unstored"])
        scan_args += list(unstored)
    where_sql = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    seen = 0
    with user_sql.read_only(conn, where, what="classify") as conn:
        # Every row is read: plan for the total, not for the first rows of the cursor.
        conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
        with conn.cursor(name="clipsql_scan", binary=True) as cur:
            cur.execute(SQL["classify_scan"].format(where=where_sql), scan_args)
            while rows := cur.fetchmany(batch):
                seen += len(rows)
                on_batch(np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                         [r[1] for r in rows], [r[2] for r in rows],
                         np.stack([r[3].to_numpy() for r in rows]))
        if unstored:
            user_sql_where = ("WHERE " + " AND ".join(user)) if user else ""
            return conn.execute(SQL["classify_count"].format(where=user_sql_where),
                                args).fetchone()[0]
    return seen


def _concat(chunks, k):
    if not chunks:
        return np.zeros(0, np.int64), [], [], np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    return (np.concatenate([c[0] for c in chunks]), [p for c in chunks for p in c[1]],
            [u for c in chunks for u in c[2]], np.concatenate([c[3] for c in chunks]),
            np.concatenate([c[4] for c in chunks]))


def _store(conn, label_set: LabelSet, ids, updated, idx, prob) -> None:
    """Replace the set's stored rows of these images, in one transaction."""
    with conn.transaction():
        row = conn.execute(SQL["label_set_version"], (label_set.name,)).fetchone()
        if row is None or row[0] != label_set.version:
            raise LabelError(f"the labels of set {label_set.name!r} changed while classifying; "
                             "nothing was stored, run classify again")
        conn.execute(SQL["classify_staging"])
        prob = np.clip(prob, 0.0, 1.0).tolist()
        with conn.cursor() as cur, cur.copy(SQL["classify_copy"]) as copy:
            copy.set_types(["int8", "timestamptz", "int4", "float4", "int2"])
            for i, (image, when, labels) in enumerate(zip(ids.tolist(), updated, idx.tolist())):
                for rank, (label, p) in enumerate(zip(labels, prob[i]), start=1):
                    copy.write_row((image, when, label, p, rank))
        conn.execute(SQL["classify_replace"], (label_set.name,))
        conn.execute(
            SQL["classify_store"],
            (label_set.name, list(label_set.labels), label_set.version))
    if len(ids) >= ANALYZE_ROWS:
        # Fresh statistics, so the next incremental scan's anti-join is planned as a hash join.
        conn.execute(SQL["classify_analyze"])
