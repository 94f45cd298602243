"""What the web server does with the database: pooled connections, one shared model.

Every request takes its own connection from a ``psycopg_pool.ConnectionPool`` (searches
from one pool, the quick look-ups that thumbnails, images, status and facets need from
another, so a page full of thumbnails never waits behind slow searches). A connection is
checked when it is handed out, so one the server dropped (a restart, an administrator's
``pg_terminate_backend``) is replaced rather than failing every later request. Waiting for a
free connection is bounded (:data:`POOL_WAIT_S`): past it the answer is a 503 with a
readable message, never a request stuck behind another. The model loads once and is
shared; only its encode calls (milliseconds) are serialised.

Web queries are anonymous: their text embeddings stay in the process's memory
(``text_cache.embed(..., store=False)``) and never grow ``clipsql.text_embeddings``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np

from clipsql.database import binding, images
from clipsql.database import connection as dbmod
from clipsql.errors import DatabaseError, QueryError
from clipsql.models.image import stack
from clipsql.web.filters import LABELS_TABLE, build_filter

#: Deepest rank a page may reach (offset + limit): paging re-ranks the top this many.
MAX_RANK = 1000
#: Seconds a request waits for a free database connection before a 503.
POOL_WAIT_S = 5.0
#: Connections for searches (each may run up to the filter's statement timeout).
SEARCH_CONNECTIONS = 8
#: Connections for row look-ups, status and facets.
LOOKUP_CONNECTIONS = 4
LOST = "the connection to the database was lost; try again"


@dataclass
class Row:
    """The columns the server needs to serve one image's file."""

    id: int
    path: str
    sha256: str
    format: str


def _pool(dsn: str, size: int, wait_s: float, name: str):
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=1, max_size=size, timeout=wait_s, name=name,
                          kwargs={"autocommit": True, "connect_timeout": 10},
                          configure=dbmod.register_types, check=ConnectionPool.check_connection,
                          open=False)
    try:
        pool.open(wait=True, timeout=max(wait_s, 10))
    except Exception:
        pool.close()
        raise DatabaseError(f"cannot open connections to {dbmod.redact(dsn)}") from None
    return pool


class Backend:
    """The server's connection pools, model and look-ups."""

    def __init__(self, dsn: str | None = None, model: str | None = None,
                 device: str | None = None, *, search_connections: int = SEARCH_CONNECTIONS,
                 wait_s: float = POOL_WAIT_S, steps=None):
        from clipsql import config
        from clipsql.collection import Collection

        self.dsn = dbmod.resolve_dsn(dsn)
        Collection(self.dsn).close()  # pgvector and the schema's migrations, once
        self.wait_s = wait_s
        self._model_request = config.model_spec(model)
        self._device = device
        self._model, self._generation = None, None
        self._model_lock = threading.Lock()  # opening it (ClipModel itself is thread-safe)
        self._searches = _pool(self.dsn, search_connections, wait_s, "clipsql-search")
        try:
            self._lookups = _pool(self.dsn, LOOKUP_CONNECTIONS, wait_s, "clipsql-lookup")
        except Exception:
            self._searches.close()
            raise
        self.warm_up(steps)

    def close(self) -> None:
        self._searches.close()
        self._lookups.close()

    @contextlib.contextmanager
    def connection(self, kind: str = "lookup"):
        """A pooled connection; database trouble becomes a :class:`DatabaseError` (503)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        pool = self._searches if kind == "search" else self._lookups
        try:
            with pool.connection(timeout=self.wait_s) as conn:
                try:
                    yield conn
                except QueryError:
                    if conn.broken or conn.closed:  # not the filter's fault
                        raise DatabaseError(LOST) from None
                    raise
        except PoolTimeout:
            raise DatabaseError(f"the database is busy or unreachable: no connection came free "
                                f"within {self.wait_s:g} s; try again") from None
        except psycopg.OperationalError:
            raise DatabaseError(LOST) from None
        except psycopg.Error as exc:
            reason = (exc.diag.message_primary if exc.diag else None) or type(exc).__name__
            raise DatabaseError(f"the database refused the request: {reason}") from None

    # --- the model ---------------------------------------------------------------------------
    def model(self, conn=None):
        """The collection's model, loaded once (on the first call after a model is bound), and
        again after a ``reembed`` switched the collection to another one."""
        if conn is None:
            with self.connection() as own:
                return self.model(own)
        now = binding.generation(conn)
        if self._model is not None and (self._model_request or now == self._generation):
            return self._model
        from clipsql.models.openclip import ClipModel

        bound = binding.bound_from_row(conn.execute(binding.BOUND_SQL).fetchone())
        spec = self._model_request or binding.usable_spec(bound)
        with self._model_lock:
            if self._model is None or (not self._model_request and now != self._generation):
                model = ClipModel(spec, device=self._device)
                binding.check_model(conn, model.identity())
                self._model, self._generation = model, now
        return self._model

    def warm_up(self, steps=None) -> bool:
        """Prepare the model now, at start-up (a first use on this machine exports it, told to
        ``steps``), so that no request pays a one-time set-up; False if none is bound yet."""
        with self.connection() as conn:
            if binding.bound_model(conn) is None:
                return False
            model = self.model(conn)
        model.prepare(steps)
        return True

    def _embed_text(self, conn, text: str) -> np.ndarray:
        from clipsql.query import text_cache

        return text_cache.embed(conn, self.model(conn), text, store=False)

    def embed_upload(self, path: str) -> np.ndarray:
        """The embedding of an uploaded image file (its header already checked)."""
        from clipsql.errors import ImageError
        from clipsql.ingest.decode import read

        model = self.model()
        try:
            decoded = read(path, model.preprocess)
        except ImageError as exc:
            raise QueryError(f"cannot use the uploaded file as a query image: {exc}") from None
        return model.encode_images(stack([decoded.pixels]))[0]

    # --- searches ------------------------------------------------------------------------------
    def search(self, text=None, *, image_ids=(), minus=(), minus_image_ids=(),
               image_weight=1.0, minus_weight=1.0, upload=None, offset=0, limit=40,
               filters=None, hybrid=False, **relevant):
        """Hits ``offset .. offset+limit`` of the ranking, whether more follow, and the
        cutoff report. The query is the algebra of :mod:`clipsql.query.algebra`: ``text``
        and ``image_ids`` (stored images) with their weights, minus ``minus`` texts and
        ``minus_image_ids``; ``upload`` is the embedding of an uploaded image
        (:meth:`embed_upload`). ``relevant``: min_score, within, adaptive, order_by.
        ``hybrid``: a text alone, fused with the captions' full-text ranking
        (:mod:`clipsql.query.hybrid`). Hits carry their caption where they have one.
        """
        from clipsql.query import algebra, search
        from clipsql.query import hybrid as fused

        if offset < 0 or limit < 1 or offset + limit > MAX_RANK:
            raise QueryError(f"offset + limit must stay within 1..{MAX_RANK}")
        where, params = build_filter(**(filters or {}))
        with self.connection("search") as conn:
            binding.require_model(conn)
            vectors, weights = [], []
            for texts, weight in (([text] if text else [], 1.0), (minus, -minus_weight)):
                for t in texts:
                    vectors.append(self._embed_text(conn, t))
                    weights.append(weight)
            for ids, weight in ((image_ids, image_weight), (minus_image_ids, -minus_weight)):
                for image_id in ids:
                    vectors.append(self._stored_embedding(conn, image_id))
                    weights.append(weight)
            if upload is not None:
                vectors.append(upload)
                weights.append(image_weight)
            if not any(w > 0 for w in weights):
                raise QueryError("give a text query, an image, or both")
            only_image = len(vectors) == 1 and len(image_ids) == 1
            if hybrid:
                if not text or len(vectors) != 1 or any(v is not None for v in relevant.values()):
                    raise QueryError("a hybrid search takes a text query alone (no images, "
                                     "minus parts or relevance cutoffs)")
                hits = fused.hybrid(conn, vectors[0], text, where=where, params=params,
                                    limit=offset + limit + 1,
                                    candidates=max(fused.CANDIDATES, offset + limit + 1))
            else:
                hits = search.find(conn, algebra.combine(vectors, weights), where=where,
                                   params=params, limit=offset + limit + 1,
                                   exclude_id=image_ids[0] if only_image else None, **relevant)
            page = hits[offset:offset + limit]
            captions = fused.captions_for(conn, [h.id for h in page if not hasattr(h, "caption")])
            for h in page:  # plain hits: the caption rides along for the page (schemas.hit_json)
                if not hasattr(h, "caption"):
                    h.caption = captions.get(h.id)
        return page, len(hits) > offset + limit, hits.cutoff

    @staticmethod
    def _stored_embedding(conn, image_id: int) -> np.ndarray:
        row = conn.execute(f"SELECT embedding FROM {images.TABLE} WHERE id = %s",
                           (image_id,)).fetchone()
        if row is None or row[0] is None:
            raise QueryError(f"no image with id {image_id}")
        return row[0].to_numpy().astype(np.float32)

    def status(self) -> dict:
        """Rows, failures, model, database and index, as ``clipsql status --json``."""
        from clipsql.collection import status_of

        with self.connection() as conn:
            model = self._model  # the loaded one, if any: status loads nothing
            return status_of(conn, dbmod.redact(self.dsn), (lambda: model) if model else None)

    # --- look-ups ------------------------------------------------------------------------------
    def _query(self, sql, params=()):
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def row(self, image_id: int) -> Row | None:
        """The row with this id, or None: the only way the server finds a file to send."""
        rows = self._query("SELECT id, path, sha256, format FROM clipsql.images WHERE id = %s",
                           (image_id,))
        return Row(*rows[0]) if rows else None

    def image(self, image_id: int) -> dict | None:
        """All of one row's metadata (no embedding), JSON-ready."""
        rows = self._query(f"SELECT {images.select_list(images.DETAILS)} FROM {images.TABLE} "
                           "WHERE id = %s", (image_id,))
        return dict(zip((c.name for c in images.DETAILS), rows[0])) if rows else None

    def labels(self, limit: int = 500) -> list[dict]:
        """Each stored label with how many images carry it, most common first."""
        rows = self._query(
            f"SELECT label, count(DISTINCT id) FROM {LABELS_TABLE} "
            "GROUP BY label ORDER BY 2 DESC, 1 LIMIT %s", (limit,))
        return [{"label": label, "images": n} for label, n in rows]

    def facets(self) -> dict:
        """What the page's filters can offer: cameras, the date range, GPS count, labels."""
        cameras = self._query(
            "SELECT camera_make, count(*) FROM clipsql.images WHERE camera_make IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 200")
        lo, hi, gps, total = self._query(
            "SELECT min(taken_at)::date, max(taken_at)::date, "
            "count(*) FILTER (WHERE latitude IS NOT NULL AND longitude IS NOT NULL), count(*) "
            "FROM clipsql.images")[0]
        return {
            "images": total,
            "cameras": [{"camera_make": c, "images": n} for c, n in cameras],
            "taken_at": {"min": lo, "max": hi},
            "with_gps": gps,
            "labels": self.labels(),
        }
