"""Import precomputed CLIP embeddings (e.g. the Unsplash dataset's ``features.npy``).

Each row gets a key (stored in ``path``: a file path, a photo id, a URL) and its vector;
the file facts a load would record (hash, size, pixel size, format) stay NULL, since no file
was read (migration 0004). Optional metadata fills the columns people filter on.

The vectors must come from the collection's model: their dimension is checked against it
(binding it on the first import, like a first load), every value must be finite and no row
all zeros, and each row is L2-normalised on the way in, in float64 after dividing it by its
largest value (rows of 1e30s or 1e-30s neither overflow nor vanish: never a zero vector).
All input is checked before anything is written; rows are then written in batches with
binary COPY into the loader's staging table layout and one upsert per batch (one
transaction each), so an interrupted import can simply be run again.

>>> import numpy as np, clipsql
>>> db = clipsql.connect(model="ViT-B-32/laion2b_s34b_b79k")            # doctest: +SKIP
>>> vecs = np.load("features.npy")                                        # doctest: +SKIP
>>> ids = [line.strip() for line in open("photo_ids.csv")][1:]            # doctest: +SKIP
>>> db.add_embeddings(ids, vecs, metadata={"camera_make": makes})         # doctest: +SKIP
ImportReport(added=25000, updated=0, seconds=9.1, index_built=True)
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from clipsql.database import binding, hnsw, upsert
from clipsql.database.images import IMPORTABLE
from clipsql.errors import EmbeddingImportError, ParameterError

if TYPE_CHECKING:
    import numpy as np

_KINDS = {datetime: "timestamp", str: "text", float: "float", int: "int", dict: "json"}
#: Metadata columns an import may set, with the kind of value each is turned into.
METADATA = {name: _KINDS[c.python] for name, c in IMPORTABLE.items()}
BATCH = 20_000


@dataclass
class ImportReport:
    """What an import did: rows added and updated (same key imported or loaded before)."""

    added: int = 0
    updated: int = 0
    seconds: float = 0.0
    index_built: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def add_embeddings(conn, model, keys, vectors, metadata=None, *, batch_size: int = BATCH,
                   build_index: bool = True) -> ImportReport:
    """Upsert ``vectors[i]`` under ``keys[i]`` with optional ``metadata`` (column -> values)."""
    started = time.perf_counter()
    keys = _check_keys(keys)
    vectors = _check_vectors(vectors, len(keys), model)
    meta = _check_metadata(metadata, len(keys))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise EmbeddingImportError(f"batch_size must be a positive integer, not {batch_size!r}")
    identity = model.identity()
    binding.bind_model(conn, identity, model.spec.resolved())
    report = ImportReport()
    for lo in range(0, len(keys), batch_size):
        hi = min(lo + batch_size, len(keys))
        added, total = _write(conn, keys[lo:hi], _normalised(vectors[lo:hi]),
                              {c: v[lo:hi] for c, v in meta.items()})
        report.added += added
        report.updated += total - added
    if build_index:
        report.index_built = hnsw.ensure_index(conn)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _check_keys(keys) -> list:
    import numpy as np

    if isinstance(keys, (str, bytes)):
        raise EmbeddingImportError("keys must be a sequence of strings (one per vector), not one string")
    out, seen = [], set()
    for i, k in enumerate(keys):
        if isinstance(k, (np.integer, int)) and not isinstance(k, bool):
            k = str(k)
        if not isinstance(k, str) or not k.strip() or "\x00" in k:
            raise EmbeddingImportError(f"key #{i} is not a usable key: {k!r}")
        k = k.strip()
        if k in seen:
            raise EmbeddingImportError(f"key {k!r} appears more than once")
        seen.add(k)
        out.append(k)
    if not out:
        raise EmbeddingImportError("nothing to import: no keys")
    return out


def _check_vectors(vectors, n: int, model) -> np.ndarray:
    import numpy as np

    try:
        v = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise EmbeddingImportError(f"the vectors are not an array: {exc}") from None
    if v.ndim != 2:
        raise EmbeddingImportError(f"the vectors must be a 2-D array (rows x dimension), not shape {v.shape}")
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise EmbeddingImportError(f"the vectors must be numbers, not {v.dtype}")
    if v.shape[0] != n:
        raise EmbeddingImportError(f"{v.shape[0]} vectors but {n} keys; they must match one to one")
    if v.shape[1] != model.dim:
        raise EmbeddingImportError(
            f"the vectors are {v.shape[1]}-d but the model {model.spec} makes {model.dim}-d "
            "embeddings; open the collection with the model that produced them (ARCH/PRETRAINED)")
    for lo in range(0, n, BATCH):  # in chunks: a 1M x 512 float32 input is 2 GB already
        chunk = np.asarray(v[lo:lo + BATCH], dtype=np.float64)
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            raise EmbeddingImportError(f"vector #{lo + int(np.argmin(finite))} has NaN or infinite values")
        zero = ~chunk.any(axis=1)
        if zero.any():
            raise EmbeddingImportError(f"vector #{lo + int(np.argmax(zero))} is all zeros: it has "
                                       "no direction to compare")
    return v


def _normalised(chunk) -> np.ndarray:
    """Rows of unit length as float32: each divided by its largest magnitude, then by its
    norm, in float64 (no overflow, no underflow, whatever the scale of the input)."""
    import numpy as np

    x = np.asarray(chunk, dtype=np.float64)
    x = x / np.abs(x).max(axis=1, keepdims=True)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _check_metadata(metadata, n: int) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise EmbeddingImportError("metadata must be a dict of column name -> values (one per key)")
    out = {}
    for column, values in metadata.items():
        if column not in METADATA:
            raise EmbeddingImportError(
                f"unknown metadata column {column!r}; importable columns: {', '.join(METADATA)}")
        values = list(values)
        if len(values) != n:
            raise EmbeddingImportError(f"metadata column {column!r} has {len(values)} values for {n} keys")
        out[column] = [_convert(column, METADATA[column], x, i) for i, x in enumerate(values)]
    return out


def _convert(column, kind, value, i):
    from psycopg.types.json import Jsonb

    if value is None or (isinstance(value, str) and not value.strip()) \
            or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if kind == "timestamp":
            if isinstance(value, datetime):
                return value.replace(tzinfo=None)
            if isinstance(value, date):
                return datetime(value.year, value.month, value.day)
            return datetime.fromisoformat(str(value).strip().replace("Z", "+00:00")).replace(tzinfo=None)
        if kind == "float":
            f = float(value)
            if not math.isfinite(f):
                raise ValueError("not finite")
            return f
        if kind == "int":
            return int(value)
        if kind == "json":
            import json

            return Jsonb(json.loads(value) if isinstance(value, str) else value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise EmbeddingImportError(f"metadata {column!r} of key #{i}: {value!r} is not a {kind} ({exc})") from None


def _write(conn, keys, vectors, meta) -> tuple[int, int]:
    """One batch in one transaction; a re-import replaces the vector and the given metadata,
    file facts of a loaded row stay."""
    import psycopg
    from pgvector import HalfVector

    values = list(meta.values())
    rows = ((key, *(v[i] for v in values), HalfVector(vec))
            for i, (key, vec) in enumerate(zip(keys, vectors)))
    try:
        with conn.transaction():
            return upsert.upsert(conn, ["path", *meta, "embedding"], rows)
    except psycopg.Error as exc:
        from clipsql.errors import DatabaseError

        raise DatabaseError(f"cannot store imported embeddings: {exc.diag.message_primary or exc}") from None


# --- files: a .npy of vectors, a CSV of keys, a CSV of metadata -----------------------------

def read_files(features: str, ids_path: str, *, id_column: str | None = None,
               metadata_path: str | None = None, ignore_extra: bool = False, prefix: str = ""):
    """(keys, vectors, metadata) from the files ``clipsql import-embeddings`` takes.

    ``ids_path`` is a CSV with a header row whose first column (or ``id_column``) holds one
    key per row of ``features``; ``metadata_path`` a CSV with the same key column and
    importable columns (:data:`METADATA`); unknown columns are an error unless
    ``ignore_extra``. ``prefix`` is prepended to every key.
    """
    import numpy as np

    try:
        vectors = np.load(features, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise EmbeddingImportError(f"cannot read {features} as a .npy array: {exc}") from None
    try:
        column, keys = read_keys(ids_path, id_column)
        meta = read_metadata(metadata_path, column, keys, ignore_extra) if metadata_path else None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EmbeddingImportError(f"cannot read the CSV: {exc}") from None
    return [prefix + k.strip() if k.strip() else "" for k in keys], vectors, meta


def read_keys(path: str, column: str | None) -> tuple[str, list[str]]:
    """(key column name, keys) from a CSV with a header row."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise EmbeddingImportError(f"{path} is empty; it needs a header row and one key per row")
        name = column or header[0]
        if name not in header:
            raise EmbeddingImportError(f"{path} has no column {name!r} (columns: {', '.join(header)})")
        i = header.index(name)
        return name, [row[i] if i < len(row) else "" for row in reader if row]


def read_metadata(path: str, key_column: str, keys: list[str], ignore_extra: bool) -> dict:
    """column -> values aligned with ``keys`` (None where a key has no metadata row)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if key_column not in fields:
            raise EmbeddingImportError(f"{path} has no key column {key_column!r}")
        columns = [c for c in fields if c != key_column]
        unknown = [c for c in columns if c not in METADATA]
        if unknown and not ignore_extra:
            raise ParameterError(
                f"{path}: unknown columns {', '.join(unknown)}; importable: "
                f"{', '.join(METADATA)}", "ignore_extra", "skips the others")
        columns = [c for c in columns if c in METADATA]
        rows = {row[key_column].strip(): row for row in reader}
    return {c: [rows[k][c] if k in rows else None for k in keys] for c in columns}
