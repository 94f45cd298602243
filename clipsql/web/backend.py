"""What the web server does with the database: pooled connections, one shared model.

Every request takes its own connection from a ``psycopg_pool.ConnectionPool`` (searches
from one pool, the quick look-ups that thumbnails, images, status and facets need from
another, so a page full of thumbnails never waits behind slow searches). A connection is
checked when it is handed out, so one the server dropped (a restart, an administrator's
``pg_terminate_backend``) is replaced rather than failing every later request. Waiting for a
free connection is bounded (:data:`POOL_WAIT_S`): past it the answer is a 503 with a
readable message, never a request stuck behind another. Queries are embedded and ranked by
one :class:`~clipsql.service.QueryService` that every request shares (thread-safe, it
follows a model switch).

Web queries are anonymous: their text embeddings stay in the process's memory
(``store=False``) and never grow ``clipsql.text_embeddings``.

At start-up the first connection may wait for a database that is not accepting connections
yet (:func:`connect_when_up`: ``clipsql serve`` waits :data:`clipsql.config.CONNECT_WAIT_S`), with
exponential backoff; what waiting cannot fix fails at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

import numpy as np

from clipsql.database import binding, connection, images
from clipsql.database.queries import SQL
from clipsql.errors import DatabaseError, QueryError
from clipsql.service import QueryService
from clipsql.web import files
from clipsql.web.filters import LABELS_TABLE, build_filter
from clipsql.web.words import text_in_image, words_of

#: Deepest rank a page may reach (offset + limit): paging re-ranks the top this many.
MAX_RANK = 1000
#: Seconds a request waits for a free database connection before a 503.
POOL_WAIT_S = 5.0
#: Connections for searches (each may run up to the filter's statement timeout).
SEARCH_CONNECTIONS = 8
#: Connections for row look-ups, status and facets.
LOOKUP_CONNECTIONS = 4
#: Seconds ``/api/status`` reuses how filters run (finding it opens a connection).
FILTERS_TTL_S = 30.0
LOST = "the connection to the database was lost; try again"
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 8.0
#: libpq's words for a server that is not accepting connections (yet): worth waiting for.
#: Anything else (a wrong password, a role or database that does not exist, a URL that
#: cannot be parsed, no pgvector) fails at once: waiting cannot fix it.
NOT_UP_YET = ("connection refused", "the database system is starting up",
              "the database system is not yet accepting connections",
              "the database system is shutting down", "the database system is in recovery mode",
              "no such file or directory", "temporary failure in name resolution",
              "no route to host", "network is unreachable", "timeout expired",
              "server closed the connection unexpectedly", "too many clients already")
#: ... unless the server itself said one of these (its words may quote a name).
REFUSED = ("authentication failed", "does not exist", "no pg_hba.conf entry",
           "permission denied")

log = logging.getLogger(__name__)


def _not_up_yet(exc: DatabaseError) -> bool:
    """Whether connecting failed because the server is not accepting connections (yet)."""
    import psycopg

    cause = exc.__context__  # connection.connect raises from None: the driver's error is here
    if type(exc) is not DatabaseError or not isinstance(cause, psycopg.OperationalError):
        return False
    text = str(cause).lower()
    return any(w in text for w in NOT_UP_YET) and not any(w in text for w in REFUSED)


def connect_when_up(dsn: str, wait_s: float = 0.0, steps=None, *, sleep=time.sleep):
    """:func:`clipsql.database.connection.connect_ready`, tried again with exponential
    backoff for up to ``wait_s`` seconds while the server is not accepting connections (each
    retry told to ``steps(what)``, else logged). What waiting cannot fix fails at the first
    try, and so does everything when ``wait_s`` is 0."""
    deadline = time.monotonic() + wait_s
    pause, tries = FIRST_RETRY_S, 1
    while True:
        try:
            return connection.connect_ready(dsn)
        except DatabaseError as exc:
            left = deadline - time.monotonic()
            if not _not_up_yet(exc):
                raise
            if left <= 0:
                if tries == 1:
                    raise
                raise DatabaseError(f"{exc} (after {tries} tries in {wait_s:g} s)") from None
            wait = min(pause, left)
            (steps or log.warning)(f"the database is not reachable yet ({exc}); "
                                   f"trying again in {wait:.1f} s")
            sleep(wait)
            pause, tries = min(2 * pause, MAX_RETRY_S), tries + 1


#: What a path in the web's status becomes.
HIDDEN_PATH = "(hidden)"
# An absolute path inside a text: a "/" that starts a word (not a URL's, a fraction's or a
# relative path's), up to the next space or quote.
_PATH_IN_TEXT = re.compile(r"(?<![\w.:/~-])/[^\s'\"()\[\],;]*")


def public_database(dsn: str) -> str:
    """Which database, without secrets or paths: a socket directory is "local socket".

    >>> public_database("postgresql://bob:pw@/photos?host=/home/bob/.clipsql/run")
    'photos on local socket'
    >>> public_database("host=db.example port=5433 dbname=photos password=x")
    'photos on db.example:5433'
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return HIDDEN_PATH
    hosts = [h if h and not h.startswith(("/", "@")) else "local socket"
             for h in str(params.get("host") or "").split(",")]
    port = params.get("port")
    where = ",".join(dict.fromkeys(hosts)) + (f":{port}" if port and "local socket" not in hosts
                                              else "")
    return f"{params.get('dbname') or params.get('user') or 'postgres'} on {where}"


def _hide(value):
    if isinstance(value, str):
        return _PATH_IN_TEXT.sub(HIDDEN_PATH, value)
    if isinstance(value, dict):
        return {k: _hide(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hide(v) for v in value]
    return value


def public_status(status: dict, dsn: str) -> dict:
    """``status`` (:func:`clipsql.collection.status_of`) as the web shows it: the database
    by name and host (no socket path), the cache's size (not its folder), a checkpoint by its
    file name, the model export's folder left out, and any other absolute path in a text
    replaced by ``(hidden)``. The local ``clipsql status`` shows them all."""
    shown = dict(status)
    shown["database"] = public_database(dsn)
    if isinstance(shown.get("cache"), dict):
        shown["cache"] = {k: v for k, v in shown["cache"].items() if k != "path"}
    if isinstance(shown.get("backend"), dict) and "export" in shown["backend"]:
        shown["backend"] = {**shown["backend"], "export": bool(shown["backend"]["export"])}
    model = shown.get("model")
    if isinstance(model, dict) and isinstance(model.get("pretrained"), str) and \
            ("/" in model["pretrained"] or os.sep in model["pretrained"]):
        shown["model"] = {**model, "pretrained": os.path.basename(model["pretrained"])}
    return _hide(shown)


@dataclass
class Row:
    """The columns the server needs to serve one image's file."""

    id: int
    path: str
    sha256: str
    format: str
    #: A video moment's start (seconds; the row's file is the video), None for a still image.
    start_s: float | None = None
    #: The file's size when it was loaded: a file of another size is refused unread.
    bytes: int | None = None


class Backend:
    """The server's connection pools, model and look-ups."""

    def __init__(self, dsn: str | None = None, model: str | None = None,
                 device: str | None = None, *, search_connections: int = SEARCH_CONNECTIONS,
                 wait_s: float = POOL_WAIT_S, connect_wait_s: float = 0.0, steps=None):
        self.dsn = connection.resolve_dsn(dsn)
        # pgvector and the migrations, once; waiting up to connect_wait_s for the server
        connect_when_up(self.dsn, connect_wait_s, steps).close()
        self.wait_s = wait_s
        self._filters_lock, self._filters_found = threading.Lock(), (None, 0.0)
        self.service = QueryService(model, device=device)
        self._searches = connection.pool(self.dsn, search_connections, wait_s=wait_s, name="clipsql-search")
        try:
            self._lookups = connection.pool(self.dsn, LOOKUP_CONNECTIONS, wait_s=wait_s,
                                           name="clipsql-lookup")
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
    def model(self):
        """The collection's model (the one it holds now: a switch is followed)."""
        with self.connection() as conn:
            return self.service.model(conn)

    def warm_up(self, steps=None) -> bool:
        """Prepare the model now, at start-up (a first use on this machine exports it, told to
        ``steps``), so that no request pays a one-time set-up; False if none is bound yet."""
        with self.connection() as conn:
            if binding.bound_model(conn) is None:
                return False
            model = self.service.model(conn)
        model.prepare(steps)
        return True

    def embed_upload(self, path: str) -> np.ndarray:
        """The embedding of an uploaded image file, decoded in a process of its own
        (:func:`clipsql.web.files.check_upload`: refused with 413/400/503 there)."""
        with self.connection() as conn:
            binding.require_model(conn)  # an empty collection: no model is prepared for it
            size = self.service.model(conn).image_size
        picture = files.check_upload(path, 2 * size)  # no connection held meanwhile
        with self.connection() as conn:
            return self.service.embed_picture(conn, picture)

    # --- searches ------------------------------------------------------------------------------
    def search(self, text=None, *, image_ids=(), minus=(), minus_image_ids=(),
               image_weight=1.0, minus_weight=1.0, upload=None, offset=0, limit=40,
               filters=None, hybrid=False, words=None, **relevant):
        """Hits ``offset .. offset+limit`` of the ranking, whether more follow, and the
        cutoff report. The query is the algebra of :mod:`clipsql.query.algebra`: ``text``
        and ``image_ids`` (stored images) with their weights, minus ``minus`` texts and
        ``minus_image_ids``; ``upload`` is the embedding of an uploaded image
        (:meth:`embed_upload`). ``relevant``: min_score, within, adaptive, order_by.
        ``hybrid``: a text alone, fused with the captions' full-text ranking
        (:mod:`clipsql.captions.hybrid`). ``words``: instead of all that, the images whose
        recognised text (OCR) matches these words, best match first (:func:`text_in_image`).
        Hits carry their caption where they have one.
        """
        from clipsql.captions import CANDIDATES, captions_for
        from clipsql.query import algebra

        if offset < 0 or limit < 1 or offset + limit > MAX_RANK:
            raise QueryError(f"offset + limit must stay within 1..{MAX_RANK}")
        where, params = build_filter(**(filters or {}))
        parts = [algebra.Text(text)] if text else []
        parts += [algebra.Image(int(i), image_weight) for i in image_ids]
        parts += [algebra.Not(t, minus_weight) for t in minus]
        parts += [algebra.Not(algebra.Image(int(i)), minus_weight) for i in minus_image_ids]
        vectors = [(upload, image_weight)] if upload is not None else []
        depth = offset + limit + 1
        with self.connection("search") as conn:
            if words is not None:
                if parts or vectors or hybrid or any(v is not None for v in relevant.values()):
                    raise QueryError("a words-in-the-image search takes its words alone (no "
                                     "text query, images, minus parts, hybrid or relevance "
                                     "cutoffs; the filters apply)")
                hits = text_in_image(conn, words, depth, where, params)
            elif hybrid:
                if len(parts) != 1 or not text or vectors or \
                        any(v is not None for v in relevant.values()):
                    raise QueryError("a hybrid search takes a text query alone (no images, "
                                     "minus parts or relevance cutoffs)")
                hits = self.service.hybrid(conn, text, store=False, where=where, params=params,
                                           limit=depth, candidates=max(CANDIDATES, depth))
            else:
                if not any(p.weight > 0 for p in parts) and not vectors:
                    raise QueryError("give a text query, an image, or both")
                hits = self.service.search(conn, parts or None, store=False, vectors=vectors,
                                           where=where, params=params, limit=depth, **relevant)
            page = hits[offset:offset + limit]
            captions = captions_for(conn, [h.id for h in page if not hasattr(h, "caption")])
            for h in page:  # plain hits: the caption rides along for the page (schemas.hit_json)
                if not hasattr(h, "caption"):
                    h.caption = captions.get(h.id)
        return page, len(hits) > offset + limit, getattr(hits, "cutoff", None)

    def words(self, image_id: int, query: str | None = None) -> dict | None:
        """What OCR read in one row's image: its text and the word boxes that match
        ``query`` (:func:`clipsql.ocr.search.matches`), or None when nothing was read."""
        with self.connection() as conn:
            return words_of(conn, image_id, query)

    def status(self) -> dict:
        """Rows, failures, model, database and index, as ``clipsql status --json``, for
        anyone who can open the page: without the machine's paths (:func:`public_status`)."""
        from clipsql.collection import status_of

        with self.connection() as conn:
            model = self.service.loaded  # the one in use, if any: status loads nothing
            found = status_of(conn, connection.redact(self.dsn),
                              (lambda: model) if model else None, filters=self._filters(conn))
        return public_status(found, self.dsn)

    def _filters(self, conn) -> dict:
        """How filters run (:func:`clipsql.database.filter_login.describe`: a login as the
        filter role, a new connection), found at most once per :data:`FILTERS_TTL_S`."""
        from clipsql.database import filter_login

        with self._filters_lock:
            found, at = self._filters_found
            if found is None or time.monotonic() - at > FILTERS_TTL_S:
                found = filter_login.describe(conn)
                self._filters_found = (found, time.monotonic())
            return found

    # --- look-ups ------------------------------------------------------------------------------
    def _query(self, sql, params=()):
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def row(self, image_id: int) -> Row | None:
        """The row with this id, or None: the only way the server finds a file to send."""
        rows = self._query(SQL["web_row"], (image_id,))
        return Row(*rows[0]) if rows else None

    def holds(self, real: str) -> bool:
        """Whether the resolved path ``real`` lies inside a place a load was given
        (:mod:`clipsql.ingest.roots`): only such files are sent."""
        from clipsql.ingest.roots import HOLDS

        return bool(self._query(HOLDS, {"real": real})[0][0])

    def image(self, image_id: int) -> dict | None:
        """All of one row's metadata (no embedding), JSON-ready."""
        rows = self._query(SQL["web_image"].format(columns=images.select_list(images.DETAILS)),
                           (image_id,))
        return dict(zip((c.name for c in images.DETAILS), rows[0])) if rows else None

    def labels(self, limit: int = 500) -> list[dict]:
        """Each stored label with how many images carry it, most common first."""
        rows = self._query(SQL["web_labels"].format(labels=LABELS_TABLE), (limit,))
        return [{"label": label, "images": n} for label, n in rows]

    def facets(self) -> dict:
        """What the page's filters can offer: cameras, the date range, GPS count, labels."""
        cameras = self._query(SQL["web_cameras"])
        lo, hi, gps, total = self._query(SQL["web_dates_gps"])[0]
        return {
            "images": total,
            "cameras": [{"camera_make": c, "images": n} for c, n in cameras],
            "taken_at": {"min": lo, "max": hi},
            "with_gps": gps,
            "labels": self.labels(),
        }

