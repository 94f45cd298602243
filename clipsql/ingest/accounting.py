"""Store what the walk found besides images: its failures in ``clipsql.failures`` (with
their reasons, :class:`~clipsql.ingest.reasons.Reason`) and the ignored files in
``clipsql.ignored`` (:class:`~clipsql.ingest.reasons.Ignored`), so that every file under a
loaded folder is accounted for. A code that is not a member is refused before anything is
written.

>>> record(conn, discover(["/photos"]))            # doctest: +SKIP
[('/photos/dangling.jpg', 'broken_link', 'broken symbolic link to /gone.jpg')]
"""

from __future__ import annotations

import os

from clipsql.ingest.reasons import Ignored, Reason


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
            conn.execute("DELETE FROM clipsql.images WHERE path = ANY(%s)",
                         ([f[0] for f in failures],))
            conn.execute(
                "INSERT INTO clipsql.failures (path, reason, detail) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
                "ON CONFLICT (path) DO UPDATE SET reason = EXCLUDED.reason, "
                "detail = EXCLUDED.detail, bytes = NULL, mtime = NULL, failed_at = now()",
                tuple(list(col) for col in zip(*failures)))
        if folders:
            conn.execute(
                "DELETE FROM clipsql.ignored WHERE path ^@ ANY(%s::text[]) "
                "AND NOT path = ANY(%s::text[]) AND NOT path ^@ ANY(%s::text[])",
                (folders, [p for p, _ in ignored], [_under(b) for b in found.blind_spots]))
        if ignored:
            conn.execute(
                "INSERT INTO clipsql.ignored (path, reason) "
                "SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT (path) DO UPDATE "
                "SET reason = EXCLUDED.reason WHERE ignored.reason <> EXCLUDED.reason",
                ([p for p, _ in ignored], [r for _, r in ignored]))
    return failures
