"""The Python API: one object per database, with load, search, labels and status.

>>> import clipsql
>>> db = clipsql.connect()                                   # doctest: +SKIP
>>> report = db.load("~/Pictures")                           # doctest: +SKIP
>>> hits = db.search("two dogs in the snow", limit=10)       # doctest: +SKIP
>>> hits = db.search("a dog", where="camera_make = %s", params=["Canon"])  # doctest: +SKIP
>>> hits = db.search(image="~/Pictures/dog.jpg")             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clipsql.collection_ingest import IngestMixin
from clipsql.collection_labels import LabelsMixin
from clipsql.database import binding, connection, hnsw, migrations
from clipsql.database.queries import SQL
from clipsql.errors import ClipsqlError
from clipsql.query import duplicates, relevance, search, text_cache
from clipsql.service import ImageRef, QueryService

if TYPE_CHECKING:
    import numpy as np

    from clipsql.models.captioner import Captioner
    from clipsql.models.openclip import ClipModel
    from clipsql.reembed import ReembedReport


class Collection(IngestMixin, LabelsMixin):
    """An image collection in one PostgreSQL database (the embedded one by default).

    A collection is its own connection (``conn``, not shared between threads) over a
    :class:`~clipsql.service.QueryService` (``service``, which is): several threads each
    open a collection, or share one service with connections of their own.
    """

    def __init__(self, dsn: str | None = None, model: str | None = None,
                 device: str | None = None, precision: str | None = None):
        self._dsn = connection.resolve_dsn(dsn)
        self._device = device
        self.service = QueryService(model, device=device, precision=precision)
        self._captioner: Captioner | None = None
        self.conn = connection.connect_ready(self._dsn)

    # --- plumbing --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return connection.redact(self._dsn)

    @property
    def dsn(self) -> str:
        """The database URL, password included (to open more connections to it)."""
        return self._dsn

    @property
    def model(self) -> ClipModel:
        """The collection's model (the one it was loaded with, followed across a switch;
        its weights load on first encode)."""
        return self.service.model(self.conn)

    @property
    def loaded_model(self) -> ClipModel | None:
        """The model this collection has used so far, or None (nothing is loaded)."""
        return self.service.loaded

    def open_model(self, spec: str) -> ClipModel:
        """A model by ``spec`` with this collection's device and precision (not loaded yet)."""
        return self.service.open(spec)

    def use_model(self, model: ClipModel | None) -> None:
        """Use ``model`` from now on; None: the collection's bound model, opened on demand."""
        self.service.pin(model)

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
        SQL afterwards. A text embedded before needs no model at all.
        """
        return self.service.embed_text(self.conn, text)

    def store_texts(self, texts: Sequence[str]) -> list[dict]:
        """Embed and store texts so that plain SQL can search with
        ``clipsql.text_embedding(text)``; one ``{"query", "dim", "new"}`` per text."""
        return text_cache.save(self.conn, self.model, texts)

    def embed_image(self, image: ImageRef) -> np.ndarray:
        """The embedding of an image: a row id, a stored key (a path in the table, or an
        imported row's key), any image file, or the bytes of one."""
        return self.service.embed_image(self.conn, image)

    def embed_query(self, query) -> np.ndarray:
        """The embedding of a query: a text, a part, or a list of parts (see
        :mod:`clipsql.query.algebra`): the weighted sum of the parts' normalised embeddings,
        normalised.

        >>> db.embed_query(["a beach", clipsql.Image("sunset.jpg", weight=0.5),
        ...                 clipsql.Not("people")])                     # doctest: +SKIP
        """
        return self.service.embed_query(self.conn, query)

    # --- search ----------------------------------------------------------------------------
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
        return self.service.search(self.conn, query, image=image, where=where, params=params,
                                   limit=limit, min_score=min_score, within=within,
                                   adaptive=adaptive, order_by=order_by,
                                   candidates=candidates, strategy=strategy)

    def similar(self, image: ImageRef, **kwargs) -> search.Results:
        """Images most like ``image`` (an id, a stored key, or any file), itself excluded."""
        return self.search(image=image, **kwargs)

    def duplicates(self, threshold: float = duplicates.DEFAULT_THRESHOLD,
                   k: int = duplicates.DEFAULT_K) -> list[duplicates.DuplicateGroup]:
        """Groups of exact (same sha256) and near-duplicate images (HNSW k-nearest, union-find)."""
        return duplicates.find(self.conn, threshold, k)

    # --- reembed: another model, without downtime (docs/reembed.md) ----------------------
    def reembed(self, model_spec: str | None = None, **kwargs) -> ReembedReport:
        """Switch the collection to the model ``model_spec`` without downtime, and use it;
        ``drop_old``, ``cancel``, ``batch_size``, ``workers``, ``processes``, ``progress`` as
        in :func:`clipsql.reembed.reembed`.

        >>> db.reembed("ViT-L-14/openai")                                # doctest: +SKIP
        """
        from clipsql import reembed

        return reembed.reembed(self.conn, self.service, model_spec, **kwargs)

    # --- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        """Rows, failures, model, backend, database and index, as a JSON-ready dict."""
        return status_of(self.conn, self.url, lambda: self.model)

    # --- captions and hybrid search (docs/captions.md) ------------------------------------
    def caption(self, model: str | None = None, **kwargs):
        """Caption the images without a current caption from ``model`` (a CoCa spec; default:
        the model of the collection's captions, else ``DEFAULT_CAPTION_MODEL``): a
        ``CaptionReport``; ``where``, ``params``, ``batch_size``,
        ``max_length``, ``progress`` as in :func:`clipsql.captions.caption`."""
        from clipsql import captions

        self._captioner = captions.captioner_for(model, self._device, self._captioner,
                                                conn=self.conn)
        return captions.caption(self.conn, self._captioner, **kwargs)

    def hybrid_search(self, query: str, **kwargs) -> search.Results:
        """The CLIP ranking and the full-text rankings of the captions and of the words in
        the images fused by reciprocal rank; ``where``, ``params``, ``limit``, ``rrf_k``,
        ``weights``... as in :func:`clipsql.captions.hybrid.hybrid`."""
        return self.service.hybrid(self.conn, query, **kwargs)

    # --- words in images (docs/ocr.md) ------------------------------------------------------
    def ocr(self, languages: str | None = None, **kwargs):
        """Read the words in the images without a current OCR row for ``languages``
        (Tesseract's string, e.g. ``"eng+jpn"``; default: English, Japanese and Russian where
        installed): an ``OcrReport``; ``where``, ``params``, ``batch_size``, ``redo``,
        ``threads``, ``progress`` as in :func:`clipsql.ocr.run.ocr`."""
        from clipsql.ocr import run

        return run.ocr(self.conn, engine=languages, **kwargs)

    def text_in_image(self, query: str, *, where: str | None = None, params=(),
                      limit: int = 10):
        """The images (and video moments) whose recognised words hold every word of
        ``query``, best first (:func:`clipsql.ocr.search.text_in_image`)."""
        from clipsql.ocr import search as words

        return words.text_in_image(self.conn, query, limit, where=where, params=params)


def connect(dsn: str | None = None, model: str | None = None, device: str | None = None,
            precision: str | None = None) -> Collection:
    """Open a collection: ``dsn`` or ``$CLIPSQL_DATABASE_URL``, else the embedded server.

    ``precision``: ``auto`` (on a CPU, ONNX Runtime int8 where the checkpoint's export keeps
    cosine >= 0.999 to fp32 on a fixed reference set, else fp32; on CUDA, fp16), or ``fp32``,
    ``int8`` (CPU) or ``fp16`` (GPU) to force one (docs/models.md).
    """
    return Collection(dsn, model=model, device=device, precision=precision)


def status_of(c, url: str, model=None, *, filters=None) -> dict:
    """:meth:`Collection.status` for connection ``c``; ``model()`` gives the model whose backend
    is reported (nothing is loaded or measured for it); ``filters`` says how SQL filters run
    on the server (:func:`clipsql.database.filter_login.describe`, which logs in as the
    filter role: a caller that asks often passes what it found before); ``sql_text`` whether
    the server embeds any text itself (:func:`clipsql.database.native.mode`)."""
    from clipsql.database import filter_login, native
    from clipsql.models import cache

    rows, videos, moments = c.execute(SQL["image_status"]).fetchone()
    failures = dict(c.execute(SQL["image_failures_by_reason"]).fetchall())
    size = c.execute(SQL["image_table_bytes"]).fetchone()[0]
    try:
        backend = model().describe() if model else None
    except ClipsqlError as exc:  # e.g. the bound checkpoint is gone: status still answers
        backend = {"backend": None, "precision": None, "reason": str(exc)}
    return {
        "database": url,
        "server_version": c.execute("SHOW server_version").fetchone()[0],
        "pgvector": ".".join(map(str, connection.vector_version(c))),
        "schema_version": migrations.current_version(c),
        "model": binding.bound_model(c),
        "images": rows,
        "videos": videos,
        "moments": moments,
        "failures": sum(failures.values()),
        "failures_by_reason": failures,
        "ignored": c.execute(SQL["ignored_count"]).fetchone()[0],
        "index": hnsw.index_name(hnsw.index_kind(c)[0]) if hnsw.has_index(c) else None,
        "table_bytes": size,
        "backend": backend,
        "cache": {"path": str(cache.root()), "bytes": sum(e["bytes"] for e in cache.entries())},
        "filters": filters if filters is not None else filter_login.describe(c),
        "sql_text": native.mode(c),
    }
