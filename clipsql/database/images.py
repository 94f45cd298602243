"""The ``clipsql.images`` row, defined once: every column with its types and nullability.

The migrations create the table; everything in Python that names its columns reads them
from here: the loader's COPY (:mod:`clipsql.database.upsert`), search results
(:class:`clipsql.query.search.Hit`), the SQLAlchemy ``Image`` mapping, the web API's shapes
and the importer's metadata columns. ``tests/integration/test_schema.py`` compares this
with the live table after all migrations.

>>> [c.name for c in COLUMNS][:3]
['id', 'path', 'sha256']
>>> IMPORTABLE["latitude"].python
<class 'float'>
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

SCHEMA = "clipsql"
TABLE = f"{SCHEMA}.images"


@dataclass(frozen=True)
class Column:
    """One column: PostgreSQL type (as ``format_type`` prints it), binary COPY type, the
    Python type of its values, and its group:

    * ``key``: the path (or key) every row has; ``file``: facts of a file read by a load,
      all NULL together for imported rows (migration 0004); ``meta``: EXIF metadata, also
      importable; ``system``: filled by the database; ``moment``: a video moment's time range
      (migration 0015: a video is one row per moment, all with its path); ``vector``: the
      embedding.
    """

    name: str
    sql: str
    copy: str | None
    python: type
    nullable: bool
    group: str
    doc: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("id", "bigint", None, int, False, "system", "row id"),
    Column("path", "text", "text", str, False, "key",
           "absolute file path, or the key of an imported embedding"),
    Column("sha256", "text", "text", str, True, "file", "SHA-256 of the file's bytes"),
    Column("bytes", "bigint", "int8", int, True, "file", "file size"),
    Column("mtime", "timestamp with time zone", "timestamptz", datetime, True, "file",
           "file modification time"),
    Column("width", "integer", "int4", int, True, "file", "pixels, after EXIF orientation"),
    Column("height", "integer", "int4", int, True, "file", "pixels, after EXIF orientation"),
    Column("format", "text", "text", str, True, "file", "JPEG, PNG, WEBP, HEIF, ..."),
    Column("orientation", "smallint", "int2", int, True, "meta", "EXIF orientation (1-8)"),
    Column("taken_at", "timestamp without time zone", "timestamp", datetime, True, "meta",
           "EXIF DateTimeOriginal, camera local time"),
    Column("camera_make", "text", "text", str, True, "meta", "EXIF Make"),
    Column("camera_model", "text", "text", str, True, "meta", "EXIF Model"),
    Column("latitude", "double precision", "float8", float, True, "meta", "GPS, degrees"),
    Column("longitude", "double precision", "float8", float, True, "meta", "GPS, degrees"),
    Column("exif", "jsonb", "jsonb", dict, True, "meta", "all readable EXIF tags"),
    Column("added_at", "timestamp with time zone", None, datetime, False, "system",
           "when the row was added"),
    Column("updated_at", "timestamp with time zone", None, datetime, False, "system",
           "when the row last changed"),
    Column("start_s", "double precision", "float8", float, True, "moment",
           "a video moment's start, seconds from the video's start; NULL for a still image"),
    Column("end_s", "double precision", "float8", float, True, "moment",
           "a video moment's end, seconds; NULL for a still image"),
    Column("embedding", "halfvec", "halfvec", object, False, "vector",
           "the normalised CLIP embedding; its dimension is fixed by the first load"),
)

BY_NAME = {c.name: c for c in COLUMNS}
#: What a load writes, in COPY order, with the binary COPY type of each.
WRITTEN = {c.name: c.copy for c in COLUMNS if c.copy is not None}
#: File facts: all set (a file was read) or all NULL (an imported embedding).
FILE_FACTS = tuple(c.name for c in COLUMNS if c.group == "file")
#: Metadata an import may set (``Collection.add_embeddings(metadata=...)``).
IMPORTABLE = {c.name: c for c in COLUMNS if c.group == "meta"}
#: The columns of a search hit (besides ``score``): everything but EXIF, updated_at, vector.
HIT = tuple(c for c in COLUMNS if c.name not in ("exif", "updated_at", "embedding"))
#: The columns of one image's details (the web API's ``/api/images/ID``).
DETAILS = tuple(c for c in COLUMNS if c.name not in ("updated_at", "embedding"))


def select_list(columns, prefix: str = "") -> str:
    """``id, path, ...`` for a SELECT of these columns (``prefix`` such as ``"i."``)."""
    return ", ".join(prefix + c.name for c in columns)
