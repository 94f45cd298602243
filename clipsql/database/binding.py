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
from clipsql.database.queries import SQL
from clipsql.errors import EmptyCollectionError, ModelError, ModelMismatchError

#: The binding's row (``queries.sql``'s ``binding``): ``arch, pretrained, dim, spec`` (which
#: :func:`bound_from_row` turns into a dict) and ``bound_at``, the moment it was made (it
#: changes when a reembed switches models).
BINDING_SQL = SQL["binding"]
EMPTY_MESSAGE = "the collection is empty: load a folder into it first (clipsql load FOLDER)"


def bound_from_row(row) -> dict | None:
    """``{"arch", "pretrained", "dim", "spec"}`` from a row of :data:`BINDING_SQL` (its
    first four columns), or None."""
    return None if row is None else dict(zip(("arch", "pretrained", "dim", "spec"), row[:4]))


def bound_model(conn) -> dict | None:
    """The model identity (arch, pretrained, dim) recorded for this collection, or None
    before the first load."""
    bound = bound_from_row(conn.execute(BINDING_SQL).fetchone())
    return None if bound is None else {k: bound[k] for k in ("arch", "pretrained", "dim")}


def require_model(conn) -> dict:
    """:func:`bound_model`, or :class:`EmptyCollectionError` when nothing was loaded yet."""
    bound = bound_model(conn)
    if bound is None:
        raise EmptyCollectionError(EMPTY_MESSAGE)
    return bound


def bound_spec(conn) -> str | None:
    """The model spec the collection was loaded with (checkpoint paths absolute)."""
    bound = bound_from_row(conn.execute(BINDING_SQL).fetchone())
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
        conn.execute(SQL["binding_lock"])
        bound = bound_model(conn)
        if bound is None:
            conn.execute(
                SQL["binding_insert"],
                (identity["arch"], identity["pretrained"], identity["dim"],
                 spec or f"{identity['arch']}/{identity['pretrained']}"),
            )
            conn.execute(SQL["binding_fix_dim"].format(dim=int(identity["dim"])))
            # Cached query embeddings of a previous model would rank wrongly.
            if conn.execute(SQL["binding_has_texts"]).fetchone()[0]:
                conn.execute(SQL["text_delete_all"])
    check_model(conn, identity)


def generation(conn) -> tuple | None:
    """The binding's row with its ``bound_at``; a different value means another model was
    switched in since (:mod:`clipsql.reembed`). None before the first load."""
    row = conn.execute(BINDING_SQL).fetchone()
    return None if row is None else tuple(row)


def rebind(conn, identity: dict, spec: str) -> None:
    """Record another model for a collection already bound (the switch of a reembed, in
    its transaction; the embedding column was replaced by then)."""
    conn.execute(
        SQL["binding_rebind"],
        (identity["arch"], identity["pretrained"], identity["dim"], spec))
