"""The loading part of :class:`clipsql.Collection`: folders (locally or on Ray) and
precomputed embeddings (the work is done in :mod:`clipsql.ingest`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clipsql import config
from clipsql.database import connection
from clipsql.errors import ConfigError
from clipsql.ingest import importer, loader

if TYPE_CHECKING:
    import threading

    import psycopg

    from clipsql.ingest import watch as watching
    from clipsql.models.openclip import ClipModel


class IngestMixin:
    """Methods of :class:`~clipsql.Collection` that write rows (its connection, model and
    URL: loads open connections of their own)."""

    conn: psycopg.Connection
    model: ClipModel
    dsn: str

    def load(self, *paths: str | os.PathLike, prune: bool = False, force: bool = False,
             batch_size: int = config.BATCH_SIZE,
             workers: int | None = None, processes: bool = False,
             progress: Callable[[int, int], None] | None = None, engine: str = "local",
             address: str | None = None, actors: int | None = None,
             steps: Callable[[str], None] | None = None,
             follow_links: bool = False) -> loader.LoadReport:
        """Embed every image under ``paths`` (incrementally) and return a :class:`LoadReport`.

        ``workers`` decoding threads, or processes with ``processes=True`` (GPU loads).
        ``engine="ray"`` decodes and embeds on a Ray cluster instead (``pip install
        "clipsql[ray]"``): ``address`` None for a local runtime, ``"auto"`` for the running
        cluster, or an address; ``actors`` embedding actors (see :mod:`clipsql.ingest.ray_engine`).
        ``steps(what)`` is told what a first use of a checkpoint on this machine does (its
        one-time export) before the images are embedded; ``progress(done, total)`` after.

        ``prune`` removes the rows of files gone from disk under ``paths``, but refuses (a
        :class:`~clipsql.errors.LoadError` saying how many rows would go, before anything
        is written) where a folder is empty (an unmounted drive?) or more than half of a
        folder's rows would go (:data:`clipsql.ingest.accounting.PRUNE_MAX_SHARE`), unless
        ``force``. Local loads of the same folder at once split the files between them.

        A symbolic link whose target lies outside ``paths`` is not followed: it is ignored
        (``link_outside``), and the web server sends no file that lies outside the loaded
        folders. ``follow_links=True`` follows such links (never into ``/proc``, ``/sys``,
        ``/dev``, nor to a folder that holds a loaded one), and the server then sends files
        from where they lead: give it only where nobody else can put links in the folders
        (see docs/security-serve.md).
        """
        if force and not prune:
            raise ConfigError("force=True only changes a prune: give prune=True too")

        def connect():
            return connection.connect(self.dsn)

        if engine == "ray":
            from clipsql.ingest import ray_engine

            report = ray_engine.load(connect, self.model, paths, address=address, actors=actors,
                                     prune=prune, force=force, batch_size=batch_size,
                                     progress=progress, steps=steps, follow_links=follow_links)
        elif engine != "local":
            raise ConfigError(f'engine must be "local" or "ray", not {engine!r}')
        elif address is not None or actors is not None:
            raise ConfigError('address and actors are options of engine="ray"')
        else:
            report = loader.load(connect, self.model, paths, prune=prune, force=force,
                                 batch_size=batch_size, workers=workers, processes=processes,
                                 progress=progress, steps=steps, follow_links=follow_links,
                                 conn=self.conn)
        return report

    def watch(self, *paths: str | os.PathLike, stop: threading.Event | None = None,
              debounce_s: float = 1.0, settle_s: float = 1.0, max_delay_s: float = 10.0,
              prune: bool = True, force: bool = False,
              on_report: Callable[[watching.SyncReport], None] | None = None,
              polling: bool = False, batch_size: int = config.BATCH_SIZE,
              workers: int | None = None, processes: bool = False,
              progress: Callable[[int, int], None] | None = None,
              steps: Callable[[str], None] | None = None,
              follow_links: bool = False) -> watching.WatchReport:
        """Load the folders ``paths``, then keep the collection in sync with them until
        ``stop`` is set or Ctrl-C (see :mod:`clipsql.ingest.watch`): new and changed files
        are loaded about ``max(debounce_s, settle_s)`` seconds after they were last written
        (a file still being copied is waited for), deleted ones' rows removed.

        The first load is a normal :meth:`load` with ``prune`` (what changed while nothing
        watched), told ``progress`` and ``steps``. Deletions are pruned with the same rules
        as ``load(prune=True)``: a refused prune (a watched folder missing or empty, most of
        its rows at once, unless ``force``) is reported to ``on_report`` and the watch goes
        on; so is a sync that failed (the database restarted), retried after a backoff.
        ``on_report(report)`` gets each :class:`~clipsql.ingest.watch.SyncReport`; the
        return value adds them up. ``polling`` polls the folders instead of asking the
        operating system for events (network shares). ``follow_links`` as for :meth:`load`:
        a new file that is a link out of the watched folders is ignored unless it is given.

        >>> db.watch("/photos", stop=stop_event, on_report=print)  # doctest: +SKIP
        """
        from clipsql.ingest import watch as watching

        if force and not prune:
            raise ConfigError("force=True only changes a prune: give prune=True too")

        def connect():
            return connection.connect(self.dsn)

        return watching.watch(connect, self.model, paths, stop=stop, debounce_s=debounce_s,
                              settle_s=settle_s, max_delay_s=max_delay_s, prune=prune,
                              force=force, on_report=on_report, polling=polling,
                              progress=progress, steps=steps, batch_size=batch_size,
                              workers=workers, processes=processes, follow_links=follow_links)

    def add_embeddings(self, keys: Sequence[str], vectors, metadata: dict | None = None, *,
                       batch_size: int = importer.BATCH,
                       build_index: bool = True) -> importer.ImportReport:
        """Import precomputed embeddings of the collection's model under ``keys`` (paths, ids,
        URLs), with optional ``metadata`` (column -> values).

        >>> db.add_embeddings(["photo-1", "photo-2"], np.eye(2, 512))  # doctest: +SKIP
        """
        return importer.add_embeddings(self.conn, self.model, keys, vectors, metadata,
                                       batch_size=batch_size, build_index=build_index)

    def import_files(self, features: str, ids_path: str, *, id_column: str | None = None,
                     metadata_path: str | None = None, ignore_extra: bool = False,
                     prefix: str = "") -> importer.ImportReport:
        """:meth:`add_embeddings` from files: a ``.npy`` of vectors, a CSV of keys and an
        optional CSV of metadata (see :func:`clipsql.ingest.importer.read_files`)."""
        keys, vectors, meta = importer.read_files(
            features, ids_path, id_column=id_column, metadata_path=metadata_path,
            ignore_extra=ignore_extra, prefix=prefix)
        return self.add_embeddings(keys, vectors, meta)

