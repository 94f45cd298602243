"""clipsql: CLIP image search inside PostgreSQL.

>>> import clipsql
>>> db = clipsql.connect()                     # doctest: +SKIP
>>> db.load("~/Pictures")                      # doctest: +SKIP
>>> db.search("two dogs playing in the snow")  # doctest: +SKIP
"""

from .errors import ClipsqlError

__version__ = "0.1.0"
__all__ = ["connect", "Collection", "ClipsqlError", "__version__"]


def connect(dsn=None, model=None, device=None, precision=None):
    """Open a collection (see :func:`clipsql.collection.connect`)."""
    from .collection import connect as _connect

    return _connect(dsn, model=model, device=device, precision=precision)


def __getattr__(name):
    if name == "Collection":
        from .collection import Collection

        return Collection
    raise AttributeError(name)
