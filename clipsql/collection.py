"""The Python API: one object per database, with load, search and status.

>>> import clipsql
>>> db = clipsql.connect()                                   # doctest: +SKIP
>>> report = db.load("~/Pictures")                           # doctest: +SKIP
>>> hits = db.search("two dogs in the snow", limit=10)       # doctest: +SKIP
>>> hits = db.search("a dog", where="camera_make = %s", params=["Canon"])  # doctest: +SKIP
>>> hits = db.search(image="~/Pictures/dog.jpg")             # doctest: +SKIP
"""

from __future__ import annotations

import os

import numpy as np

from . import config, db, loader, migrate, schema, search
from .errors import EmptyCollectionError, ModelError, QueryError


class Collection:
    """An image collection in one PostgreSQL database (the embedded one by default)."""

    def __init__(self, dsn: str | None = None, model: str | None = None, device: str | None = None,
                 precision: str | None = None):
        self._dsn = db.resolve_dsn(dsn)
        self._model_request = config.model_spec(model)
        self._device = device
        self._precision = precision
        self._model = None
        self.conn = self._connect()
        db.ensure_vector(self.conn)
        migrate.apply(self.conn)

    # --- plumbing --------------------------------------------------------------------------
    def _connect(self):
        return db.connect(self._dsn)

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return db.redact(self._dsn)

    @property
    def model(self):
        """The collection's :class:`~clipsql.model.ClipModel` (weights load on first encode)."""
        if self._model is None:
            from .model import ClipModel

            spec = self._model_request or schema.bound_spec(self.conn)
            bound = schema.bound_model(self.conn)
            if self._model_request is None and bound and bound["pretrained"].startswith("file:"):
                path = spec.partition("/")[2]
                if not os.path.isfile(path):
                    raise ModelError(
                        f"this collection was embedded with the checkpoint {path}, which is gone; "
                        f"pass --model {bound['arch']}/PATH to a copy (or set {config.ENV_MODEL})")
            model = ClipModel(spec, device=self._device, precision=self._precision)
            schema.check_model(self.conn, model.identity())
            self._model = model
        return self._model

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- loading ---------------------------------------------------------------------------
    def load(self, *paths, prune: bool = False, batch_size: int = 32, workers: int | None = None,
             processes: bool = False, progress=None) -> loader.LoadReport:
        """Embed every image under ``paths`` (incrementally) and return a :class:`LoadReport`.

        ``workers`` decoding threads, or processes with ``processes=True`` (GPU loads).
        """
        from . import texttower

        report = loader.load(self._connect, self.model, paths, prune=prune,
                             batch_size=batch_size, workers=workers, processes=processes,
                             progress=progress)
        if self.model.loaded:  # so the first text search of a new process needs no model
            texttower.export_once(self.model)
        return report

    # --- embeddings ------------------------------------------------------------------------
    def embed_text(self, text: str) -> np.ndarray:
        """The normalised embedding of ``text`` with the collection's model.

        Cached in memory and in ``clipsql.text_embeddings`` (see :mod:`clipsql.textcache`),
        so ``clipsql.text_embedding(text)`` finds it from SQL afterwards.
        """
        from . import textcache

        textcache.check_text(text)  # before loading the model
        if self._model is None and self._model_request is None:
            # The collection's own model and a text embedded before (the table only holds
            # the bound model's vectors): no model, not even open_clip, is loaded.
            vec = textcache.stored(self.conn, text)
            if vec is not None:
                return vec
        return textcache.embed(self.conn, self.model, text)

    def embed_image(self, image) -> np.ndarray:
        """The embedding of an image: a row id, a path already in the table, or any image file."""
        stored = self._stored_embedding(image)
        if stored is not None:
            return stored
        if isinstance(image, int):
            raise QueryError(f"no image with id {image}")
        from .decode import read
        from .errors import ImageError

        path = os.path.abspath(os.path.expanduser(os.fspath(image)))
        try:
            decoded = read(path, self.model.preprocess)
        except ImageError as exc:
            raise QueryError(f"cannot use {path} as a query image: {exc}") from None
        return self.model.encode_images(decoded.pixels.unsqueeze(0))[0]

    def _stored_embedding(self, image):
        if isinstance(image, (int, np.integer)):
            row = self.conn.execute("SELECT embedding FROM clipsql.images WHERE id = %s",
                                    (int(image),)).fetchone()
        else:
            path = os.path.abspath(os.path.expanduser(os.fspath(image)))
            row = self.conn.execute("SELECT embedding FROM clipsql.images WHERE path = %s",
                                    (path,)).fetchone()
        return None if row is None else row[0].to_numpy().astype(np.float32)

    def _image_id(self, image):
        if isinstance(image, (int, np.integer)):
            return int(image)
        path = os.path.abspath(os.path.expanduser(os.fspath(image)))
        row = self.conn.execute("SELECT id FROM clipsql.images WHERE path = %s", (path,)).fetchone()
        return row[0] if row else None

    # --- search ----------------------------------------------------------------------------
    def search(self, text: str | None = None, *, image=None, where: str | None = None,
               params=(), limit: int = 10, min_score: float | None = None,
               strategy: str = "auto") -> search.Results:
        """Rank images by a text query, an image query (path or id), or both (summed and normalised).

        ``where`` is a SQL fragment over ``clipsql.images`` columns with ``%s`` placeholders
        for ``params``; it runs read-only.
        """
        if text is None and image is None:
            raise QueryError("give a text query, an image, or both")
        if schema.bound_model(self.conn) is None:
            raise EmptyCollectionError("the collection is empty: run `clipsql load FOLDER` first")
        parts = []
        if text is not None:
            parts.append(self.embed_text(text))
        exclude = None
        if image is not None:
            parts.append(self.embed_image(image))
            exclude = self._image_id(image) if text is None else None
        query = np.sum(parts, axis=0)
        query = query / (np.linalg.norm(query) or 1.0)
        return search.rank(self.conn, query, where=where, params=params, limit=limit,
                           min_score=min_score, exclude_id=exclude, strategy=strategy)

    def similar(self, image, **kwargs) -> search.Results:
        """Images most like ``image`` (an id, a path in the table, or any file), itself excluded."""
        return self.search(image=image, **kwargs)

    # --- status ----------------------------------------------------------------------------
    def status(self) -> dict:
        """Rows, failures, model, database and index, as a JSON-ready dict."""
        c = self.conn
        images = c.execute("SELECT count(*) FROM clipsql.images").fetchone()[0]
        failures = dict(c.execute(
            "SELECT reason, count(*) FROM clipsql.failures GROUP BY reason ORDER BY 1").fetchall())
        size = c.execute("SELECT pg_total_relation_size('clipsql.images')").fetchone()[0]
        return {
            "database": self.url,
            "server_version": c.execute("SHOW server_version").fetchone()[0],
            "pgvector": ".".join(map(str, db.vector_version(c))),
            "schema_version": migrate.current_version(c),
            "model": schema.bound_model(c),
            "images": images,
            "failures": sum(failures.values()),
            "failures_by_reason": failures,
            "index": schema.INDEX_NAME if schema.has_index(c) else None,
            "table_bytes": size,
        }

    # --- zero-shot labels and duplicates (clipsql/labels.py, zeroshot.py, duplicates.py) ---
    def add_labels(self, labels, label_set: str = "default", templates=None):
        """Add labels to a named set (created if new), embedded through the prompt templates.

        >>> db.add_labels(["cat", "dog", "car"], templates=["a photo of a {}."])  # doctest: +SKIP
        """
        from . import labels as lb

        return lb.add(self.conn, self.model, labels, label_set, templates)

    def remove_labels(self, labels=None, label_set: str = "default") -> int:
        """Remove labels from a set, or the whole set when ``labels`` is None."""
        from . import labels as lb

        return lb.remove(self.conn, label_set, labels)

    def label_sets(self) -> list:
        """Every label set: name, labels, templates, model, version, stored result rows."""
        from . import labels as lb

        return lb.sets(self.conn)

    def classify(self, labels_or_set="default", *, where=None, params=(), top=1, store=False,
                 templates=None):
        """Zero-shot classify images by a set name or a list of labels; a Classification.

        >>> for r in db.classify(["cat", "dog"], where="format = %s", params=["PNG"]):  # doctest: +SKIP
        ...     print(r.path, r.labels)
        """
        from . import labels as lb
        from . import zeroshot

        return zeroshot.classify(self.conn, lb.resolve(self.conn, self.model, labels_or_set, templates),
                                 where=where, params=params, top=top, store=store)

    def label_search(self, label: str, label_set: str = "default", **kwargs) -> search.Results:
        """Images closest to a stored label's embedding (``where``, ``limit``... as in search)."""
        from . import labels as lb

        return search.rank(self.conn, lb.vector(self.conn, self.model, label, label_set), **kwargs)

    def flag(self, label_set: str, threshold: float = 0.8, *, neutral=None, where=None, params=()):
        """Images whose probability for any label of ``label_set`` reaches ``threshold``,
        scored together with a neutral background class (``zeroshot.NEUTRAL_PROMPTS``)."""
        from . import labels as lb
        from . import zeroshot

        return zeroshot.flag(self.conn, lb.resolve(self.conn, self.model, label_set), threshold,
                             neutral=zeroshot.neutral_embedding(self.model, neutral or zeroshot.NEUTRAL_PROMPTS),
                             where=where, params=params)

    def duplicates(self, threshold: float = 0.97, k: int = 10) -> list:
        """Groups of exact (same sha256) and near-duplicate images (HNSW k-nearest, union-find)."""
        from . import duplicates

        return duplicates.find(self.conn, threshold, k)

    # --- precomputed embeddings (clipsql/importer.py) --------------------------------------
    def add_embeddings(self, keys, vectors, metadata=None, *, batch_size: int = 20_000,
                       build_index: bool = True):
        """Import precomputed embeddings of the collection's model under ``keys`` (paths, ids,
        URLs), with optional ``metadata`` (column -> values); returns an ImportReport.

        >>> db.add_embeddings(["photo-1", "photo-2"], np.eye(2, 512))  # doctest: +SKIP
        """
        from . import importer

        return importer.add_embeddings(self.conn, self.model, keys, vectors, metadata,
                                       batch_size=batch_size, build_index=build_index)


def connect(dsn: str | None = None, model: str | None = None, device: str | None = None,
            precision: str | None = None) -> Collection:
    """Open a collection: ``dsn`` or ``$CLIPSQL_DATABASE_URL``, else the embedded server.

    ``precision``: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` (GPU), ``bf16``
    (GPU, or CPUs with AVX512-BF16/AMX) or ``int8`` (CPU, dynamic quantisation); the faster
    modes keep embeddings within cosine 0.999 of fp32 (benchmarks/precision.py).
    """
    return Collection(dsn, model=model, device=device, precision=precision)
