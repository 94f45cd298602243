"""clipsql: CLIP image search inside PostgreSQL.

>>> import clipsql
>>> db = clipsql.connect()                     # doctest: +SKIP
>>> db.load("~/Pictures")                      # doctest: +SKIP
>>> db.search("two dogs playing in the snow")  # doctest: +SKIP

The package is layered (checked by import-linter, see ``pyproject.toml``): ``cli`` and
``web`` use the integrations (``psycopg``, ``sqlalchemy``) and :class:`Collection`, which use
``query`` and ``ingest``, which use ``models`` and ``database``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsql.errors import ClipsqlError

if TYPE_CHECKING:
    from clipsql.collection import Collection
    from clipsql.models.openclip import ClipModel
    from clipsql.query.algebra import Image, Not, Text
    from clipsql.query.search import Hit, Results

__version__ = "0.1.0"
__all__ = ["connect", "Collection", "ClipModel", "Hit", "Results", "Text", "Image", "Not",
           "ClipsqlError", "__version__"]

# Imported on first use, so that `import clipsql` (and the CLI's start) stays fast.
_LAZY = {"Collection": "clipsql.collection", "ClipModel": "clipsql.models.openclip",
         "Hit": "clipsql.query.search", "Results": "clipsql.query.search",
         "Text": "clipsql.query.algebra", "Image": "clipsql.query.algebra",
         "Not": "clipsql.query.algebra"}


def connect(dsn: str | None = None, model: str | None = None, device: str | None = None,
            precision: str | None = None) -> Collection:
    """Open a collection (see :func:`clipsql.collection.connect`)."""
    from clipsql.collection import connect as _connect

    return _connect(dsn, model=model, device=device, precision=precision)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
