"""Apply the numbered SQL files in ``migrations/`` in order, each in its own transaction,
and describe the schema they make.

A session advisory lock serialises concurrent runners; ``clipsql.schema_version`` records
what was applied (by number: the files are not checksummed, so a comment may be corrected
in a released file; what it does may not change).

``migrations/schema.sql`` is the current schema in one readable file, generated from a fresh
migration run by :func:`schema_sql`; ``python -m clipsql.database.migrations write-schema``
rewrites it (:func:`write_schema`).

>>> [m.version for m in available()][:1]
[1]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clipsql.database.queries import SQL
from clipsql.errors import MigrationError

#: Arbitrary constant shared by every clipsql process ("clipsql" in ASCII, as a number).
LOCK_KEY = 0x636C697073716C
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """The folder of SQL files: inside the installed wheel, or the repo's ``migrations/``."""
    here = Path(__file__).resolve().parents[1]  # the clipsql package
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"no migrations folder found next to {here}")


def available() -> list[Migration]:
    """All migrations shipped with this version of clipsql, in order."""
    found = []
    for path in sorted(migrations_dir().iterdir()):
        m = _NAME.match(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
    return found


def current_version(conn) -> int:
    """The highest applied migration, 0 for a database clipsql never touched."""
    exists = conn.execute(SQL["schema_version_exists"]).fetchone()[0]
    if exists is None:
        return 0
    return conn.execute(SQL["schema_version"]).fetchone()[0]


def apply(conn) -> list[Migration]:
    """Bring the database up to date; returns the migrations this call applied."""
    import psycopg

    if not conn.autocommit:
        raise MigrationError("migrations need an autocommit connection")
    pending = [m for m in available() if m.version > current_version(conn)]
    if not pending:
        return []
    applied = []
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(SQL["schema_create"])
        conn.execute(SQL["schema_version_create"])
        done = current_version(conn)  # another process may have migrated while we waited
        for migration in available():
            if migration.version <= done:
                continue
            try:
                with conn.transaction():
                    conn.execute(migration.sql())
                    conn.execute(
                        SQL["schema_version_insert"],
                        (migration.version, migration.name),
                    )
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.path.name} failed: {exc.diag.message_primary or exc}"
                ) from None
            applied.append(migration)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied
