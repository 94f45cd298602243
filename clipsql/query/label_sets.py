"""Zero-shot labels: named label sets in ``clipsql.labels``, embedded through prompt templates
the way CLIP zero-shot classification does, classification of the collection by batched
matrix work, and stored results (``clipsql.image_labels``) that SQL can join.

Each label is embedded once per template ("a photo of a {}." by default); the normalised
template embeddings are averaged and re-normalised. An image's probabilities use the
model's own logit scale: for CLIP models ``softmax(logit_scale * cos(image, label))`` over the
labels of the set; for SigLIP models, trained with a sigmoid loss and a learned
``logit_bias``, ``sigmoid(logit_scale * cos(image, label) + logit_bias)`` for each label on its
own (they need not sum to one).

>>> import numpy as np
>>> p = softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
>>> p.sum(axis=1).round(6).tolist()
[1.0, 1.0]
>>> sigmoid(np.array([0.0, 1000.0, -1000.0])).tolist()
[0.5, 1.0, 0.0]
>>> [round(float(x), 4) for x in average_templates(np.array([[1.0, 0.0], [0.0, 1.0]]), 2)[0]]
[0.7071, 0.7071]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipsql.database import binding
from clipsql.database.queries import SQL
from clipsql.errors import LabelError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_SET = "default"
DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass
class LabelSet:
    """Labels with their embeddings (L, dim). ``version`` is None for an ad-hoc, unstored set."""

    name: str | None
    labels: list[str]
    templates: list[str]
    embeddings: np.ndarray
    logit_scale: float
    model: str
    version: int | None = None
    #: SigLIP's logit bias (per-label sigmoid); None for CLIP models (softmax over the set).
    logit_bias: float | None = None


# --- math --------------------------------------------------------------------------------
def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    import numpy as np

    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large positive or negative logits."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def average_templates(vectors: np.ndarray, n_templates: int) -> np.ndarray:
    """(L * T, dim) template embeddings, label-major, to (L, dim): normalise, mean, re-normalise."""
    import numpy as np

    v = normalize(np.asarray(vectors, dtype=np.float32))
    return normalize(v.reshape(-1, n_templates, v.shape[-1]).mean(axis=1))


def probabilities(images: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """(N, L) probabilities of each label for each (not necessarily normalised) image row:
    a softmax over the labels, or with a ``logit_bias`` (SigLIP) a sigmoid per label."""
    import numpy as np

    logits = label_set.logit_scale * (normalize(images.astype(np.float32)) @ label_set.embeddings.T)
    if label_set.logit_bias is None:
        return softmax(logits)
    return sigmoid(logits + label_set.logit_bias).astype(np.float32)


# --- validation and embedding ------------------------------------------------------------
def clean_labels(labels) -> list[str]:
    if isinstance(labels, str):
        labels = [labels]
    out = []
    for label in labels or ():
        if not isinstance(label, str) or not label.strip() or "\x00" in label:
            raise LabelError(f"a label must be non-empty text, not {label!r}")
        if label.strip() not in out:
            out.append(label.strip())
    if not out:
        raise LabelError("give at least one label")
    return out


def clean_templates(templates) -> list[str]:
    if isinstance(templates, str):
        templates = [templates]
    out = list(templates or ())
    bad = [t for t in out if not isinstance(t, str) or t.count("{}") != 1 or "\x00" in t]
    if bad or not out:
        raise LabelError(f"a prompt template needs exactly one {{}} for the label, e.g. "
                         f"'a photo of a {{}}.'; got {bad[0] if bad else 'none'!r}")
    return out


def model_id(model) -> str:
    ident = model.identity()
    return f"{ident['arch']}/{ident['pretrained']}"


def embed_labels(model, labels, templates=DEFAULT_TEMPLATES) -> np.ndarray:
    """(L, dim) label embeddings: every template filled with every label, averaged per label."""
    labels, templates = clean_labels(labels), clean_templates(templates)
    texts = [t.replace("{}", label) for label in labels for t in templates]
    return average_templates(model.encode_text(texts, fp32=True), len(templates))


def adhoc(model, labels, templates=DEFAULT_TEMPLATES) -> LabelSet:
    """A label set embedded now and not stored (``db.classify(["cat", "dog"])``)."""
    labels, templates = clean_labels(labels), clean_templates(templates)
    return LabelSet(None, labels, templates, embed_labels(model, labels, templates),
                    float(model.logit_scale), model_id(model), logit_bias=model.logit_bias)


# --- the label tables ----------------------------------------------------------------------
def add(conn, model, labels, label_set: str = DEFAULT_SET, templates=None) -> LabelSet:
    """Add ``labels`` to a set (created if new). New templates, or a different model,
    re-embed the set's existing labels too. Stored results of the set become stale."""
    from pgvector import HalfVector

    labels, name = clean_labels(labels), _set_name(label_set)
    row = conn.execute(SQL["label_set_templates"], (name,)).fetchone()
    templates = clean_templates(templates) if templates else (row[0] if row else list(DEFAULT_TEMPLATES))
    existing = _label_names(conn, name)
    mid = model_id(model)
    if row and (row[0] != templates or row[1] != mid):
        todo = existing + [x for x in labels if x not in existing]
    else:
        todo = [x for x in labels if x not in existing]
    vectors = embed_labels(model, todo, templates) if todo else []
    with conn.transaction():
        conn.execute(
            SQL["label_set_upsert"],
            (name, templates, mid, float(model.logit_scale), model.logit_bias))
        with conn.cursor() as cur:
            cur.executemany(
                SQL["label_upsert"],
                [(name, label, HalfVector(v)) for label, v in zip(todo, vectors)])
    return read_set(conn, name)


def remove(conn, label_set: str, labels=None) -> int:
    """Remove labels from a set, or the whole set (and its stored results) if ``labels`` is None.
    Returns how many labels were removed."""
    name = _set_name(label_set)
    known = _label_names(conn, name)
    if not conn.execute(SQL["label_set_exists"], (name,)).fetchone():
        raise LabelError(f"there is no label set {name!r}{_known_sets(conn)}")
    with conn.transaction():
        if labels is None:
            conn.execute(SQL["label_set_delete"], (name,))
            return len(known)
        labels = clean_labels(labels)
        missing = [x for x in labels if x not in known]
        if missing:
            raise LabelError(f"set {name!r} has no label {missing[0]!r}; it has: {', '.join(known)}")
        return conn.execute(SQL["labels_delete"], (name, labels)).rowcount


def sets(conn) -> list[dict]:
    """Every label set with its labels, templates, model, version and stored result rows."""
    rows = conn.execute(SQL["label_sets"]).fetchall()
    keys = ("name", "templates", "model", "version", "labels", "stored_rows")
    return [dict(zip(keys, r)) for r in rows]


def read_set(conn, label_set: str = DEFAULT_SET) -> LabelSet:
    """A stored set with its embeddings (as stored: halfvec, read back as float32)."""
    import numpy as np

    name = _set_name(label_set)
    row = conn.execute(SQL["label_set"], (name,)).fetchone()
    if row is None:
        raise LabelError(f"there is no label set {name!r}{_known_sets(conn)}; "
                         "create it by adding labels to it")
    rows = conn.execute(SQL["label_embeddings"], (name,)).fetchall()
    if not rows:
        raise LabelError(f"label set {name!r} has no labels; add some to it first")
    emb = normalize(np.stack([r[1].to_numpy().astype(np.float32) for r in rows]))
    return LabelSet(name, [r[0] for r in rows], list(row[0]), emb, float(row[2]), row[1], row[3],
                    logit_bias=None if row[4] is None else float(row[4]))


def resolve(conn, model, labels_or_set, templates=None) -> LabelSet:
    """A set name -> the stored set (re-embedded first if another model embedded it);
    a list of labels -> an ad-hoc set."""
    if isinstance(labels_or_set, str):
        ls = read_set(conn, labels_or_set)
        if ls.model != model_id(model):
            ls = add(conn, model, ls.labels, ls.name, templates=ls.templates)
        return ls
    return adhoc(model, labels_or_set, templates or DEFAULT_TEMPLATES)


def _set_name(name) -> str:
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise LabelError(f"a label set name must be non-empty text, not {name!r}")
    return name.strip()


def _label_names(conn, name) -> list[str]:
    return [r[0] for r in conn.execute(SQL["label_names"], (name,))]


def _known_sets(conn) -> str:
    names = [r[0] for r in conn.execute(SQL["label_set_names"])]
    return f" (sets: {', '.join(names)})" if names else " (no label sets yet)"


def vector(conn, model, label: str, label_set: str = DEFAULT_SET) -> np.ndarray:
    """The stored embedding of one label (for ranking images by it)."""
    binding.require_model(conn)
    ls = resolve(conn, model, label_set)
    label = clean_labels(label)[0]
    if label not in ls.labels:
        raise LabelError(f"set {ls.name!r} has no label {label!r}; it has: {', '.join(ls.labels)} "
                         "(add it to the set first)")
    return ls.embeddings[ls.labels.index(label)]
