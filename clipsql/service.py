"""The query service: the one thread-safe home of a collection's model and query embeddings.

Every surface embeds and ranks queries through a :class:`QueryService`: the Python API
(:class:`clipsql.Collection` and the CLI on it), the web server, the psycopg helpers and
the SQLAlchemy expressions. A service holds no connection: each call takes the caller's
(a collection's own, one from the web server's pool, the application's psycopg
connection), so one service serves many threads at once. It keeps the models it opened
(thread-safe, one per spec), and reads the collection's binding once per call (and
passes that row down to the model check and the text cache), so a model switch
(``reembed``, maybe by another process) is followed by every surface alike: the next call
embeds with the model the collection now holds. Rankings are built here and run in SQL
(:mod:`clipsql.query.search`, ``migrations/0020_one_home.sql``).

>>> service = QueryService()                                            # doctest: +SKIP
>>> with psycopg.connect(url) as conn:                                  # doctest: +SKIP
...     hits = service.search(conn, "two dogs in the snow", limit=5)
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from clipsql import config
from clipsql.database import binding, connection, images
from clipsql.database.queries import SQL
from clipsql.errors import ClipsqlError, EmptyCollectionError, ImageError, QueryError
from clipsql.query import algebra, relevance, search, text_cache

if TYPE_CHECKING:
    import numpy as np

    from clipsql.models.openclip import ClipModel

#: An image given as a query: a row id, a stored key (a path, or an imported row's key),
#: any image file, or the bytes of one.
ImageRef = int | str | os.PathLike | bytes
#: Models a service keeps open (a switch opens the new one; the oldest is let go).
MAX_MODELS = 2


class QueryService:
    """A collection's model and query embeddings, for any number of threads.

    ``model``: a spec to use instead of the collection's own (needed only when its local
    checkpoint moved), followed until the collection is switched to another model.
    """

    def __init__(self, model: str | None = None, device: str | None = None,
                 precision: str | None = None):
        self._request = config.model_spec(model)
        self._device = device
        self._precision = precision
        self._models: dict[str, ClipModel] = {}
        self._identities: dict[str, dict] = {}  # spec -> its model's identity, computed once
        self._seen: dict[tuple, object] = {}  # database -> the binding the request was seen with
        self._last: ClipModel | None = None
        self._lock = threading.RLock()

    # --- the model ----------------------------------------------------------------------------
    def open(self, spec: str | None) -> ClipModel:
        """The model of ``spec`` (default: clipsql's default) with this service's device and
        precision, opened once (its weights load on first use)."""
        from clipsql.models.openclip import ClipModel

        with self._lock:
            model = self._models.get(spec or "")
            if model is None:
                model = ClipModel(spec, device=self._device, precision=self._precision)
                self._models[spec or ""] = model
                while len(self._models) > MAX_MODELS:
                    self._identities.pop(old := next(iter(self._models)), None)
                    self._models.pop(old)
            return model

    def _open(self, spec: str | None) -> tuple[ClipModel, dict]:
        """:meth:`open`, with the model's identity (arch, pretrained, dim: fixed for a model
        object, so computed once, when first asked for)."""
        model = self.open(spec)
        with self._lock:
            identity = self._identities.get(spec or "")
        if identity is None:
            identity = model.identity()
            with self._lock:
                if self._models.get(spec or "") is model:
                    self._identities[spec or ""] = identity
        return model, identity

    def pin(self, model: ClipModel | None) -> None:
        """Use ``model`` from now on (a reembed just switched to it); None: the bound model."""
        with self._lock:
            self._seen.clear()
            if model is None:
                self._request = None
                return
            self._request = model.spec.resolved()
            self._models[self._request] = model
            self._identities.pop(self._request, None)
            self._last = model

    @property
    def loaded(self) -> ClipModel | None:
        """The model the last call used, or None (status reports it; nothing is loaded)."""
        return self._last

    def model(self, conn, binding_row=None) -> ClipModel:
        """The model to embed with for the collection on ``conn``: the bound one (or the
        requested one until a switch), checked against the binding."""
        row = binding_row if binding_row is not None else _binding(conn)
        return self._checked(conn, row)[0]

    def _checked(self, conn, row) -> tuple[ClipModel, dict, tuple]:
        """The model for the binding's ``row`` (read once by the caller), its identity checked
        against the row, and the database: ``(model, identity, database)``, passed down."""
        database = connection.database_key(conn)
        bound = binding.bound_from_row(row) if row else None
        model, identity = self._open(self._spec(database, row, bound))
        if bound is not None:
            binding.check_identity(bound, identity)
        self._last = model
        return model, identity, database

    def _spec(self, database: tuple, row, bound: dict | None) -> str | None:
        generation = None if row is None else row[4]
        with self._lock:
            if self._request is not None:
                seen = self._seen.get(database)
                if seen is None:
                    self._seen[database] = seen = generation
                if seen == generation:
                    return self._request
        if row is None:
            return None  # nothing bound yet: the default model (a first load binds it)
        return binding.usable_spec(bound)

    def _needs_no_model(self, row) -> bool:
        """Whether the collection's own model, not yet open, would embed (then a text
        stored before can be read without loading any model)."""
        with self._lock:
            return row is not None and self._request is None and row[3] not in self._models

    # --- query embeddings ---------------------------------------------------------------------
    def embed_text(self, conn, text: str, *, store: bool = True,
                   row=text_cache.UNREAD) -> np.ndarray:
        """The embedding of ``text``: from memory, from ``clipsql.text_embeddings`` or
        computed (and stored there unless ``store`` is False: anonymous web queries).
        ``row``: the binding's row (:data:`binding.BINDING_SQL`) the caller read."""
        algebra.check_text(text)  # before any model loads
        if row is text_cache.UNREAD:
            row = _binding(conn)
        return self._embed_text(conn, text, store, row)

    def _embed_text(self, conn, text: str, store: bool, row) -> np.ndarray:
        """:meth:`embed_text` of a checked text, with the binding's row the caller read: the
        model is chosen and checked here once, and the text cache told so."""
        if self._needs_no_model(row):
            vec = text_cache.stored(conn, text)  # embedded before: no model needed at all
            if vec is not None:
                return vec
        model, identity, database = self._checked(conn, row)
        return text_cache.embed(conn, model, text, store=store, bound_row=row,
                                checked=(identity, database))

    async def embed_text_async(self, conn, text: str) -> np.ndarray:
        """:meth:`embed_text` on an async psycopg connection."""
        algebra.check_text(text)
        row = await (await conn.execute(binding.BINDING_SQL)).fetchone()
        bound = binding.bound_from_row(row) if row else None
        model = self.open(self._spec(connection.database_key(conn), row, bound))
        self._last = model
        return await text_cache.embed_async(conn, model, text)

    def stored(self, conn, image, column: str = "embedding"):
        """One column of the row an image reference names (a row id, a stored key as given,
        or a local path made absolute), or None."""
        for where, params in _lookups(image):
            row = conn.execute(_lookup_sql(column, where), params).fetchone()
            if row is not None:
                return row[0]
        return None

    def stored_embedding(self, conn, image) -> np.ndarray:
        """The stored embedding of an image in ``clipsql.images``, or :class:`QueryError`."""
        return _stored_vector(self.stored(conn, image), image)

    async def stored_embedding_async(self, conn, image) -> np.ndarray:
        """:meth:`stored_embedding` on an async psycopg connection."""
        for where, params in _lookups(image):
            cur = await conn.execute(_lookup_sql("embedding", where), params)
            row = await cur.fetchone()
            if row is not None:
                return _stored_vector(row[0], image)
        return _stored_vector(None, image)

    def embed_image(self, conn, image: ImageRef, row=None) -> np.ndarray:
        """The embedding of an image: stored (a row id or key), else of the file or bytes."""
        import numpy as np

        if isinstance(image, bytes):
            with tempfile.NamedTemporaryFile(prefix="clipsql-query-") as f:
                f.write(image)
                f.flush()
                return self.embed_file(conn, f.name, "the image bytes", row=row)
        stored = self.stored(conn, image)
        if stored is not None:
            return stored.to_numpy().astype(np.float32)
        if isinstance(image, (int, np.integer)):
            raise QueryError(f"no image with id {image}")
        return self.embed_file(conn, _abspath(image), row=row)

    def embed_file(self, conn, path: str, name: str | None = None, row=None) -> np.ndarray:
        """The embedding of the image file at ``path`` (``name`` in messages)."""
        from clipsql.ingest.decode import read
        from clipsql.models.image import stack

        if not os.path.lexists(path):
            raise QueryError(f"cannot use {name or path} as a query image: no such file")
        model = self.model(conn, row)
        try:
            decoded = read(path, model.preprocess)
        except ImageError as exc:
            raise QueryError(f"cannot use {name or path} as a query image: {exc}") from None
        return model.encode_images(stack([decoded.pixels]))[0]

    def embed_picture(self, conn, picture) -> np.ndarray:
        """The embedding of a decoded picture (a PIL image, upright)."""
        from clipsql.models.image import stack

        model = self.model(conn)
        return model.encode_images(stack([model.preprocess(picture)]))[0]

    def embed_query(self, conn, query, *, store: bool = True,
                    vectors: Sequence[tuple[np.ndarray, float]] = (),
                    row=text_cache.UNREAD) -> np.ndarray:
        """The embedding of a query (a text, a part or a list of parts: :mod:`clipsql.query.algebra`)
        plus already embedded ``vectors`` as ``(vector, weight)`` (an upload), combined by
        ``clipsql.combine``. ``row``: the binding's row, if the caller read it."""
        parts = algebra.as_parts(query) if query is not None else []
        return self._embed_parts(conn, parts, store, vectors, row)

    def _embed_parts(self, conn, parts, store, vectors, row) -> np.ndarray:
        """:meth:`embed_query` of parts already checked (:func:`algebra.as_parts`)."""
        import numpy as np

        if row is text_cache.UNREAD and parts:
            row = _binding(conn)
        embedded = [(self._embed_text(conn, p.text, store, row)
                     if isinstance(p, algebra.Text) else self.embed_image(conn, p.image, row),
                     p.weight) for p in parts]
        embedded += list(vectors)
        if not any(w > 0 for _, w in embedded):
            raise QueryError("give a text query, an image, or both")
        if len(embedded) == 1 and embedded[0][1] == 1:
            return np.asarray(embedded[0][0], np.float32)  # one part: nothing to combine
        return algebra.combine(conn, [v for v, _ in embedded], [w for _, w in embedded])

    # --- rankings -----------------------------------------------------------------------------
    def search(self, conn, query=None, *, image: ImageRef | None = None, store: bool = True,
               vectors: Sequence[tuple[np.ndarray, float]] = (), where: str | None = None,
               params: Sequence = (), limit: int = 10, candidates: int = relevance.CANDIDATES,
               **cutoffs) -> search.Results:
        """Rank images by a query (texts, images, weighted parts, ``vectors``), best first;
        the keywords of :func:`clipsql.query.search.find`. A switch of models that overlaps
        the call is followed: the call is done again, once, with the new model."""
        parts, own = algebra.parse(query, image)
        if not parts and not vectors:
            raise QueryError("give a text query, an image, or both")
        own = None if vectors else own

        def rank(row):
            vector = self._embed_parts(conn, parts, store, vectors, row)
            exclude = self.stored(conn, own.image, "id") if own is not None else None
            return search.find(conn, vector, where=where, params=params, limit=limit,
                               candidates=candidates, exclude_id=exclude, **cutoffs)
        return self._across_switch(conn, rank, parts)

    def hybrid(self, conn, text: str, *, store: bool = True, **kwargs) -> search.Results:
        """The CLIP ranking and the full-text rankings of the captions and the words in the
        images fused by reciprocal rank (:func:`clipsql.captions.hybrid.hybrid`'s keywords);
        with a CLIP weight of 0 the text is not embedded."""
        from clipsql.captions import hybrid

        hybrid.check_text(text)
        clip = hybrid.check_weights(kwargs.get("weights"))["clip"] > 0

        def rank(row):
            vector = self.embed_text(conn, text, store=store, row=row) if clip else None
            return hybrid.hybrid(conn, vector, text, **kwargs)
        return self._across_switch(conn, rank, [algebra.Text(text)])

    def _across_switch(self, conn, call, parts):
        """``call(row)`` with the binding's row, read once here and passed down
        (EmptyCollectionError when nothing is bound); done again, once, with the new row
        when another model was switched in while it ran."""
        row = _required(conn)
        try:
            result = call(row)
        except ClipsqlError:
            if not self._switched(conn, tuple(row), parts):
                raise
            return call(_required(conn))
        return call(_required(conn)) if self._switched(conn, tuple(row), parts) else result

    @staticmethod
    def _switched(conn, before, parts) -> bool:
        """Whether another model was switched in since ``before``; then the call's texts,
        which the old model may have stored after the switch, are removed so that the call
        done again stores the new model's."""
        now = _binding(conn)
        if before is None or (None if now is None else tuple(now)) == before:
            return False
        texts = [p.text for p in parts if isinstance(p, algebra.Text)]
        if texts:
            conn.execute(SQL["text_delete"], (texts,))
        return True


def _binding(conn):
    """The binding's row (:data:`binding.BINDING_SQL`), or None before the first load."""
    return conn.execute(binding.BINDING_SQL).fetchone()


def _required(conn):
    """The binding's row, or :class:`EmptyCollectionError` before the first load."""
    row = _binding(conn)
    if row is None:
        raise EmptyCollectionError(binding.EMPTY_MESSAGE)
    return row


#: A video moment named by a time (a W3C media fragment): ``clip.mp4#t=12.5``.
_AT_TIME = re.compile(r"(?s)(.+)#t=(\d{1,9}(?:\.\d{1,6})?)")


def _lookups(image) -> list[tuple[str, tuple]]:
    """Where to look an image reference up (a condition and its parameters): the row id; or
    its key as given, then as an absolute local path (a video: its first moment); then, for
    ``PATH#t=SECONDS``, the moment of that video that holds that time."""
    import numpy as np

    if isinstance(image, bool):
        raise QueryError(f"not an image id or path: {image!r}")
    if isinstance(image, (int, np.integer)):
        return [("id = %s", (int(image),))]
    if not isinstance(image, (str, os.PathLike)):
        raise QueryError(f"not an image id or path: {image!r}")
    key = os.fspath(image)
    found = [("path = %s", (k,)) for k in dict.fromkeys((key, _abspath(key)))]
    if at := _AT_TIME.fullmatch(key):
        found += [("path = %s AND start_s <= %s", (k, float(at[2])))
                  for k in dict.fromkeys((at[1], _abspath(at[1])))]
    return found


def _lookup_sql(column: str, where: str) -> str:
    """The one row a lookup names: for a video, the latest moment starting at or before the
    time (the first moment without one)."""
    order = "start_s DESC NULLS LAST" if "start_s" in where else "start_s NULLS FIRST"
    return SQL["image_lookup"].format(column=column, where=where, order=order)


def _stored_vector(value, image) -> np.ndarray:
    import numpy as np

    if value is None:
        what = f"id {image}" if isinstance(image, (int, np.integer)) else f"key {image}"
        raise QueryError(f"no image with {what} in {images.TABLE}")
    return value.to_numpy().astype(np.float32)


def _abspath(path) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))
