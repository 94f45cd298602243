"""What a load owns besides its images: the walk's failures in ``clipsql.failures`` (with
their reasons, :class:`~clipsql.ingest.reasons.Reason`) and the ignored files in
``clipsql.ignored`` (:class:`~clipsql.ingest.reasons.Ignored`), so that every file under a
loaded folder is accounted for; the rows a prune would remove, refused where that looks like
a missing drive rather than deleted files (:func:`check_prune`); and the claims by which two
loads of the same files share the work (:class:`Claims`). A code that is not a member is
refused before anything is written.

>>> record(conn, discover(["/photos"]))            # doctest: +SKIP
[('/photos/dangling.jpg', 'broken_link', 'broken symbolic link to /gone.jpg')]
"""

from __future__ import annotations

import os

from clipsql.database.queries import SQL
from clipsql.errors import PruneRefusedError
from clipsql.ingest.reasons import Ignored, Reason

#: A prune is refused, unless forced, when it would remove more than this share of the rows
#: under a loaded folder and at least :data:`PRUNE_MIN_ROWS` of them (an emptied folder is
#: refused whatever its size): files are rarely deleted in bulk, drives often go unmounted.
PRUNE_MAX_SHARE = 0.5
PRUNE_MIN_ROWS = 10
#: The first key of a file claim's advisory lock (``pg_advisory_lock(int, int)``, the second
#: key a hash of the path): a space of its own, apart from the single-key locks.
CLAIM_SPACE = 0x636C6970  # "clip"
#: The tables a file's path may be stored in (the ``{table}`` of queries.sql's path blocks):
#: its rows (a video's moments are several), its failure, or its ignored record.
IMAGES, FAILURES, IGNORED = "images", "failures", "ignored"


def _under(root: str) -> str:
    return root if root.endswith(os.sep) else root + os.sep


def record(conn, found) -> list:
    """Store the walk's failures and the ignored files; return the failures as stored.

    Ignored files replace, under each folder loaded (blind spots aside), what an earlier
    load ignored there.
    """
    failures = [(p, Reason.of(r).value, d[:1000]) for p, (r, d) in sorted(found.failed.items())]
    ignored = [(p, Ignored.of(r).value) for p, r in sorted(found.ignored.items())]
    folders = [_under(r) for r in found.roots if os.path.isdir(r)]
    with conn.transaction():
        if failures:
            conn.execute(SQL["paths_delete"].format(table=IMAGES), ([f[0] for f in failures],))
            conn.execute(SQL["walk_failures_record"], tuple(list(col) for col in zip(*failures)))
        if folders:
            conn.execute(SQL["ignored_forget"], (folders, [p for p, _ in ignored],
                                                 [_under(b) for b in found.blind_spots]))
        if ignored:  # a file is in one table: an ignored link drops what was loaded through it
            links = [_under(p) for p, r in ignored if r == Ignored.LINK_OUTSIDE]
            for table in (IMAGES, FAILURES):
                conn.execute(SQL["paths_delete"].format(table=table), ([p for p, _ in ignored],))
                if links:
                    conn.execute(SQL["paths_delete_under"].format(table=table), (links,))
            conn.execute(SQL["ignored_record"],
                         ([p for p, _ in ignored], [r for _, r in ignored]))
    return failures


def known_state(conn, roots, paths=None) -> dict:
    """path -> (bytes, mtime) for rows and recorded failures under the roots (or of ``paths``;
    a root that is a file is looked up as one, not as a prefix)."""
    state = {}
    folders = [_under(r) for r in roots if os.path.isdir(r)]
    for table in (IMAGES, FAILURES):
        if paths is not None:
            rows = conn.execute(SQL["known_state_paths"].format(table=table), (list(paths),))
        else:
            rows = conn.execute(SQL["known_state_under"].format(table=table),
                                (list(roots), folders))
        for path, size, mtime in rows:
            state[path] = (size, mtime)
    return state


def gone(found, known) -> list:
    """Paths with a row or failure under the roots whose file the walk did not find (blind
    spots aside)."""
    return [p for p in known if p not in found.files and p not in found.failed
            and not any(p.startswith(_under(b)) for b in found.blind_spots)]


def check_prune(found, known, vanished) -> None:
    """:class:`PruneRefusedError` (nothing written yet) if pruning ``vanished`` would empty a loaded
    folder whose walk found nothing at all (an unmounted drive), or remove more than
    :data:`PRUNE_MAX_SHARE` of its rows; the message says how many rows would go."""
    seen = [*found.files, *found.failed, *found.ignored, *found.blind_spots]
    for root in found.roots:
        under = _under(root)
        rows = sum(1 for p in known if p == root or p.startswith(under))
        going = sum(1 for p in vanished if p == root or p.startswith(under))
        if not going:
            continue
        why = prune_refusal(root, rows, going, not any(p.startswith(under) for p in seen))
        if why is None:
            continue
        problem = (f"refusing to prune: {why}; it would remove {going} of the {rows} rows "
                   "under it. Nothing was loaded or removed")
        raise PruneRefusedError(problem)


def prune_refusal(root: str, rows: int, going: int, found_nothing: bool,
                  missing: bool = False) -> str | None:
    """Why removing the rows of ``going`` of the ``rows`` files known under ``root`` is
    refused (the rule of every prune: a load's and a watch's), or None where it may go on:
    ``root`` is ``missing`` or ``found_nothing`` under it (an unmounted drive), or more than
    :data:`PRUNE_MAX_SHARE` of its files, and at least :data:`PRUNE_MIN_ROWS`, would go."""
    if missing:
        return f"{root} is missing (a drive or share that is not mounted, or moved away?)"
    if found_nothing:
        return f"{root} is empty (a drive or share that is not mounted?)"
    if going > PRUNE_MAX_SHARE * rows and going >= PRUNE_MIN_ROWS:
        return f"more than {PRUNE_MAX_SHARE:.0%} of the files under {root} are gone"
    return None


def prune(conn, vanished) -> int:
    """Delete the rows and failures of ``vanished`` paths; how many rows went."""
    if not vanished:
        return 0
    with conn.transaction():
        n = conn.execute(SQL["paths_delete"].format(table=IMAGES), (vanished,)).rowcount
        conn.execute(SQL["paths_delete"].format(table=FAILURES), (vanished,))
    return n


class Claims:
    """Files this load is working on, so that two loads of the same files split the work.

    A claim is a session advisory lock on the path's hash, taken (never waited for) before a
    file is decoded and let go once its batch is committed; a file another load holds is
    left for later (:meth:`take` returns it as ``held``). A claimed file whose row or failure
    now matches its size and mtime was written by another load meanwhile: it is not
    embedded again (``done``). Waiting happens only between passes, holding no claim
    (:meth:`wait`), so two loads never wait on each other. A hash collision only makes a
    load wait; a load that dies lets its claims go with its session.
    """

    def __init__(self, connect):
        self.conn = connect()  # autocommit; shared with the writer thread (psycopg locks it)

    def close(self) -> None:
        self.conn.close()

    def take(self, paths, stats) -> tuple[list, list, list]:
        """(claimed and still to embed, claimed but already done, held by another load)."""
        from clipsql.ingest.decode import mtime_of

        got = {r[0] for r in self.conn.execute(SQL["claims_take"], (list(paths), CLAIM_SPACE))}
        claimed = [p for p in paths if p in got]
        state = known_state(self.conn, (), claimed) if claimed else {}
        done = {p for p in claimed if state.get(p) == (stats[p].st_size, mtime_of(stats[p]))}
        if done:
            self.release(done)
        return ([p for p in claimed if p not in done], [p for p in claimed if p in done],
                [p for p in paths if p not in got])

    def mine(self, todo, stats, chunk, held: list, done_elsewhere):
        """The paths of ``todo`` claimed and still to embed, ``chunk`` at a time as they are
        asked for; those held by another load are added to ``held``, and the number of those
        another load wrote meanwhile given to ``done_elsewhere``."""
        for i in range(0, len(todo), chunk):
            mine, done, others = self.take(todo[i:i + chunk], stats)
            held.extend(others)
            if done:
                done_elsewhere(len(done))
            yield from mine

    def release(self, paths) -> None:
        if paths and not self.conn.closed:
            self.conn.execute(SQL["claims_release"], (CLAIM_SPACE, list(paths)))

    def wait(self, path) -> None:
        """Wait until no other load holds ``path`` (this load holds no claim meanwhile)."""
        self.conn.execute(SQL["claims_wait"], (CLAIM_SPACE, path))
        self.release([path])
