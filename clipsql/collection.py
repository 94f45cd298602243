"""The Python API: one object per database, with load, search, labels and status.

>>> import clipsql
>>> db = clipsql.connect()                                   # doctest: +SKIP
>>> report = db.load("~/Pictures")                           # doctest: +SKIP
>>> hits = db.search("two dogs in the snow", limit=10)       # doctest: +SKIP
>>> hits = db.search("a dog", where="camera_make = %s", params=["Canon"])  # doctest: +SKIP
>>> hits = db.search(image="~/Pictures/dog.jpg")             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clipsql.collection_ingest import IngestMixin
from clipsql.collection_labels import LabelsMixin
from clipsql.database import binding, hnsw, images, migrations
from clipsql.database import connection as dbconn
from clipsql.errors import ClipsqlError, ImageError, QueryError
from clipsql.models import cache
from clipsql.models.image import stack
from clipsql.query import algebra, model_switch, relevance, search, text_cache

if TYPE_CHECKING:
    from clipsql.models.openclip import ClipModel

#: An image given as a query: a row id, or a path (in the table, or any image file).
ImageRef = int | str | os.PathLike



class Collection(IngestMixin, LabelsMixin):
    """An image collection in one PostgreSQL database (the embedded one by default)."""

    def __init__(self, dsn: str | None = None, model: str | None = None,
                 device: str | None = None, precision: str | None = None):
        from clipsql import config

        self._dsn = dbconn.resolve_dsn(dsn)
        self._model_request = config.model_spec(model)
        self._device = device
        self._precision = precision
        self._model: ClipModel | None = None
        self.conn = dbconn.connect(self._dsn)
        dbconn.ensure_vector(self.conn)
        migrations.apply(self.conn)

    # --- plumbing --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return dbconn.redact(self._dsn)

    @property
    def model(self) -> ClipModel:
        """The collection's model (its weights load on first encode)."""
        if self._model is None:
            bound = binding.bound_from_row(self.conn.execute(binding.BOUND_SQL).fetchone())
            spec = self._model_request or (binding.usable_spec(bound) if bound else None)
            model = self.open_model(spec)
            binding.check_model(self.conn, model.identity())
            self._model = model
        return self._model

    @property
    def loaded_model(self) -> ClipModel | None:
        """The model this collection has opened so far, or None (nothing is loaded)."""
        return self._model

    def open_model(self, spec: str) -> ClipModel:
        """A model by ``spec`` with this collection's device and precision (not loaded yet)."""
        from clipsql.models.openclip import ClipModel

        return ClipModel(spec, device=self._device, precision=self._precision)

    def use_model(self, model: ClipModel | None) -> None:
        """Use ``model`` from now on; None: the collection's bound model, opened on demand."""
        self._model = model
        self._model_request = None if model is None else model.spec.resolved()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- embeddings ------------------------------------------------------------------------
    def embed_text(self, text: str) -> np.ndarray:
        """The normalised embedding of ``text`` with the collection's model.

        Cached in memory and in ``clipsql.text_embeddings`` (see
        :mod:`clipsql.query.text_cache`), so ``clipsql.text_embedding(text)`` finds it from
        SQL afterwards.
        """
        text_cache.check_text(text)  # before loading the model
        if self._model is None and self._model_request is None:
            # The collection's own model and a text embedded before (the table only holds
            # the bound model's vectors): no model, not even open_clip, is loaded.
            vec = text_cache.stored(self.conn, text)
            if vec is not None:
                return vec
        return text_cache.embed(self.conn, self.model, text)

    def store_texts(self, texts: Sequence[str]) -> list[dict]:
        """Embed and store texts so that plain SQL can search with
        ``clipsql.text_embedding(text)``; one ``{"query", "dim", "new"}`` per text."""
        return text_cache.save(self.conn, self.model, texts)

    def embed_image(self, image: ImageRef | bytes) -> np.ndarray:
        """The embedding of an image: a row id, a path already in the table, any image file,
        or the bytes of one."""
        if isinstance(image, bytes):
            return self._embed_image_bytes(image)
        stored = self._stored(image, "embedding")
        if stored is not None:
            return stored.to_numpy().astype(np.float32)
        if isinstance(image, int):
            raise QueryError(f"no image with id {image}")
        from clipsql.ingest.decode import read

        path = _abspath(image)
        try:
            decoded = read(path, self.model.preprocess)
        except ImageError as exc:
            raise QueryError(f"cannot use {path} as a query image: {exc}") from None
        return self.model.encode_images(stack([decoded.pixels]))[0]

    def _embed_image_bytes(self, data: bytes) -> np.ndarray:
        import tempfile

        with tempfile.NamedTemporaryFile(prefix="clipsql-query-") as f:
            f.write(data)
            f.flush()
            return self.embed_image(f.name)

    def embed_query(self, query) -> np.ndarray:
        """The embedding of a query: a text, a part, or a list of parts (see
        :mod:`clipsql.query.algebra`): the weighted sum of the parts' normalised embeddings,
        normalised.

        >>> db.embed_query(["a beach", clipsql.Image("sunset.jpg", weight=0.5),
        ...                 clipsql.Not("people")])                     # doctest: +SKIP
        """
        parts = algebra.as_parts(query)
        vectors = [self.embed_text(p.text) if isinstance(p, algebra.Text)
                   else self.embed_image(p.image) for p in parts]
        return algebra.combine(vectors, [p.weight for p in parts])

    def _stored(self, image: ImageRef, column: str):
        """One column of the row an image reference names, or None."""
        if isinstance(image, (int, np.integer)):
            key, value = "id", int(image)
        else:
            key, value = "path", _abspath(image)
        row = self.conn.execute(f"SELECT {column} FROM {images.TABLE} WHERE {key} = %s",
                                (value,)).fetchone()
        return None if row is None else row[0]

    # --- search ----------------------------------------------------------------------------
    @model_switch.follows_switch
    def search(self, query=None, *, image: ImageRef | None = None, where: str | None = None,
               params: Sequence = (), limit: int = 10, min_score: float | None = None,
               within: float | None = None, adaptive: str | None = None,
               order_by: str | None = None, candidates: int = relevance.CANDIDATES,
               strategy: str = "auto") -> search.Results:
        """Rank images by a query: a text, an image (``image=``, a path or id), or a list of
        weighted parts (:mod:`clipsql.query.algebra`), best first.

        ``where`` is a SQL fragment over ``clipsql.images`` columns with ``%s`` placeholders
        for ``params``; it runs read-only (:mod:`clipsql.database.user_sql`). ``min_score``,
        ``within`` and ``adaptive`` cut the ranking (:mod:`clipsql.query.relevance`; the
        results' ``cutoff`` says which rule cut where); ``order_by="taken_at desc"`` orders
        the relevant set (the hits that pass the cutoffs among the best ``candidates``).

        >>> db.search("a beach", within=0.03, order_by="taken_at desc")   # doctest: +SKIP
        """
        parts = [] if query is None else algebra.as_parts(query)
        if image is not None:
            parts.append(algebra.Image(image))
        if not parts:
            raise QueryError("give a text query, an image, or both")
        binding.require_model(self.conn)
        vector = self.embed_query(parts)
        own = algebra.self_reference(parts)
        exclude = self._stored(own.image, "id") if own is not None else None
        return search.find(self.conn, vector, where=where, params=params, limit=limit,
                           min_score=min_score, within=within, adaptive=adaptive,
                           order_by=order_by, candidates=candidates, exclude_id=exclude,
                           strategy=strategy)

    def similar(self, image: ImageRef, **kwargs) -> search.Results:
        """Images most like ``image`` (an id, a path in the table, or any file), itself excluded."""
        return self.search(image=image, **kwargs)

    # --- reembed: another model, without downtime (docs/reembed.md) ----------------------
    reembed = model_switch.reembed

    # --- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        """Rows, failures, model, backend, database and index, as a JSON-ready dict."""
        return status_of(self.conn, self.url, lambda: self.model)

    # --- captions and hybrid search (docs/captions.md) ------------------------------------
    def caption(self, model: str | None = None, **kwargs):
        """Caption the images without a current caption from ``model`` (a CoCa spec, default
        ``DEFAULT_CAPTION_MODEL``): a ``CaptionReport``; ``where``, ``params``, ``batch_size``,
        ``max_length``, ``progress`` as in :func:`clipsql.ingest.captions.caption`."""
        from clipsql.ingest import captions

        self._captioner = captions.captioner_for(model, self._device,
                                                getattr(self, "_captioner", None))
        return captions.caption(self.conn, self._captioner, **kwargs)

    def hybrid_search(self, query: str, **kwargs) -> search.Results:
        """The CLIP ranking and the captions' full-text ranking fused by reciprocal rank;
        ``where``, ``params``, ``limit``, ``rrf_k``... as in :func:`clipsql.query.hybrid.hybrid`."""
        from clipsql.query import hybrid

        hybrid.check_text(query)
        binding.require_model(self.conn)
        return hybrid.hybrid(self.conn, self.embed_text(query), query, **kwargs)


def _abspath(path) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def connect(dsn: str | None = None, model: str | None = None, device: str | None = None,
            precision: str | None = None) -> Collection:
    """Open a collection: ``dsn`` or ``$CLIPSQL_DATABASE_URL``, else the embedded server.

    ``precision``: ``auto`` (on a CPU, ONNX Runtime int8 where the checkpoint's export keeps
    cosine >= 0.999 to fp32 on a fixed reference set, else fp32; on CUDA, fp16), or ``fp32``,
    ``int8`` (CPU) or ``fp16`` (GPU) to force one (docs/models.md).
    """
    return Collection(dsn, model=model, device=device, precision=precision)


def status_of(c, url: str, model=None) -> dict:
    """:meth:`Collection.status` for connection ``c``; ``model()`` gives the model whose backend
    is reported (nothing is loaded or measured for it)."""
    rows = c.execute(f"SELECT count(*) FROM {images.TABLE}").fetchone()[0]
    failures = dict(c.execute(
        "SELECT reason, count(*) FROM clipsql.failures GROUP BY reason ORDER BY 1").fetchall())
    size = c.execute(f"SELECT pg_total_relation_size('{images.TABLE}')").fetchone()[0]
    try:
        backend = model().describe() if model else None
    except ClipsqlError as exc:  # e.g. the bound checkpoint is gone: status still answers
        backend = {"backend": None, "precision": None, "reason": str(exc)}
    return {
        "database": url,
        "server_version": c.execute("SHOW server_version").fetchone()[0],
        "pgvector": ".".join(map(str, dbconn.vector_version(c))),
        "schema_version": migrations.current_version(c),
        "model": binding.bound_model(c),
        "images": rows,
        "failures": sum(failures.values()),
        "failures_by_reason": failures,
        "ignored": c.execute("SELECT count(*) FROM clipsql.ignored").fetchone()[0],
        "index": hnsw.index_name(hnsw.index_kind(c)[0]) if hnsw.has_index(c) else None,
        "table_bytes": size,
        "backend": backend,
        "cache": {"path": str(cache.root()), "bytes": sum(e["bytes"] for e in cache.entries())},
    }
