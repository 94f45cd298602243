"""Which model embedded the collection: record it on the first load, refuse any other.

The migrations create ``clipsql.images.embedding`` as a ``halfvec`` without a dimension,
because the dimension depends on the model. The first load binds a model: it records the
model in ``clipsql.model`` and fixes the column to ``halfvec(dim)``. From then on every
other model is refused with :class:`ModelMismatchError`, until a reembed
(:mod:`clipsql.reembed`) switches the collection to another model (:func:`rebind`).
"""

from __future__ import annotations

import os

from clipsql import config
from clipsql.errors import EmptyCollectionError, ModelError, ModelMismatchError

#: The binding's columns; ``bound_from_row`` turns its row into a dict.
BOUND_SQL = "SELECT arch, pretrained, dim, spec FROM clipsql.model"
EMPTY_MESSAGE = "the collection is empty: load a folder into it first (clipsql load FOLDER)"


def bound_from_row(row) -> dict | None:
    """``{"arch", "pretrained", "dim", "spec"}`` from a row of :data:`BOUND_SQL`, or None."""
    return None if row is None else dict(zip(("arch", "pretrained", "dim", "spec"), row))


def bound_model(conn) -> dict | None:
    """The model identity (arch, pretrained, dim) recorded for this collection, or None
    before the first load."""
    bound = bound_from_row(conn.execute(BOUND_SQL).fetchone())
    return None if bound is None else {k: bound[k] for k in ("arch", "pretrained", "dim")}


def require_model(conn) -> dict:
    """:func:`bound_model`, or :class:`EmptyCollectionError` when nothing was loaded yet."""
    bound = bound_model(conn)
    if bound is None:
        raise EmptyCollectionError(EMPTY_MESSAGE)
    return bound


def bound_spec(conn) -> str | None:
    """The model spec the collection was loaded with (checkpoint paths absolute)."""
    bound = bound_from_row(conn.execute(BOUND_SQL).fetchone())
    return None if bound is None else bound["spec"]


def usable_spec(bound: dict | None) -> str:
    """The bound model's spec, checked: a local checkpoint it names must still exist.

    ``bound`` is :func:`bound_from_row`'s dict; None raises :class:`EmptyCollectionError`.
    """
    if bound is None:
        raise EmptyCollectionError(EMPTY_MESSAGE)
    path = bound["spec"].partition("/")[2]
    if bound["pretrained"].startswith("file:") and not os.path.isfile(path):
        raise ModelError(
            f"this collection was embedded with the checkpoint {path}, which is gone; open it "
            f"with the model {bound['arch']}/PATH naming a copy (or set {config.ENV_MODEL})")
    return bound["spec"]


def describe(identity: dict) -> str:
    return f"{identity['arch']}/{identity['pretrained']} ({identity['dim']}-d)"


def check_model(conn, identity: dict) -> None:
    """Raise if the collection was embedded by a different model."""
    bound = bound_model(conn)
    if bound is not None:
        check_identity(bound, identity)


def check_identity(bound: dict, identity: dict) -> None:
    """Raise :class:`ModelMismatchError` unless ``identity`` is the ``bound`` model's."""
    bound = {k: bound[k] for k in ("arch", "pretrained", "dim")}
    if bound != identity:
        raise ModelMismatchError(
            f"this collection was embedded with {describe(bound)}, not {describe(identity)}; "
            "open it with the same model (or none, to use the collection's own), "
            "or load into another database"
        )


def bind_model(conn, identity: dict, spec: str | None = None) -> None:
    """Record the model and fix the embedding column's dimension (first load only)."""
    with conn.transaction():
        conn.execute("LOCK TABLE clipsql.model IN EXCLUSIVE MODE")
        bound = bound_model(conn)
        if bound is None:
            conn.execute(
                "INSERT INTO clipsql.model (arch, pretrained, dim, spec) VALUES (%s, %s, %s, %s)",
                (identity["arch"], identity["pretrained"], identity["dim"],
                 spec or f"{identity['arch']}/{identity['pretrained']}"),
            )
            conn.execute(
                f"ALTER TABLE clipsql.images ALTER COLUMN embedding TYPE halfvec({int(identity['dim'])})"
            )
            # Cached query embeddings of a previous model would rank wrongly.
            if conn.execute("SELECT to_regclass('clipsql.text_embeddings')").fetchone()[0]:
                conn.execute("DELETE FROM clipsql.text_embeddings")
    check_model(conn, identity)


#: The binding with the moment it was made: changes when a reembed switches models.
GENERATION_SQL = "SELECT arch, pretrained, dim, spec, bound_at FROM clipsql.model"


def generation(conn) -> tuple | None:
    """The binding's row with its ``bound_at``; a different value means another model was
    switched in since (:mod:`clipsql.reembed`). None before the first load."""
    row = conn.execute(GENERATION_SQL).fetchone()
    return None if row is None else tuple(row)


def rebind(conn, identity: dict, spec: str) -> None:
    """Record another model for a collection already bound (the switch of a reembed, in
    its transaction; the embedding column was replaced by then)."""
    conn.execute(
        "UPDATE clipsql.model SET arch = %s, pretrained = %s, dim = %s, spec = %s, "
        "bound_at = clock_timestamp()",
        (identity["arch"], identity["pretrained"], identity["dim"], spec))
