"""``clipsql import-embeddings``: store precomputed CLIP features (e.g. Unsplash's features.npy).

    $ clipsql import-embeddings features.npy --ids photo_ids.csv --model ViT-B-32/openai
    $ clipsql import-embeddings features.npy --ids photo_ids.csv --metadata photos.csv \\
          --prefix https://unsplash.com/photos/

``--ids`` is a CSV with a header row; its first column (or ``--id-column``) holds one key per
row of FEATURES. ``--metadata`` is a CSV with a header row whose key column has the same name
and whose other columns are importable metadata (taken_at, camera_make, camera_model,
latitude, longitude, orientation, exif); unknown columns are an error unless ``--ignore-extra``.
"""

from __future__ import annotations

import csv

import click

from .cli import _common, _echo_json, _friendly, _open, main
from .errors import EmbeddingImportError


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
    from .importer import METADATA

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if key_column not in fields:
            raise EmbeddingImportError(f"{path} has no key column {key_column!r}")
        columns = [c for c in fields if c != key_column]
        unknown = [c for c in columns if c not in METADATA]
        if unknown and not ignore_extra:
            raise EmbeddingImportError(
                f"{path}: unknown columns {', '.join(unknown)} (importable: {', '.join(METADATA)}; "
                "--ignore-extra skips the others)")
        columns = [c for c in columns if c in METADATA]
        rows = {row[key_column].strip(): row for row in reader}
    return {c: [rows[k][c] if k in rows else None for k in keys] for c in columns}


@main.command("import-embeddings")
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--ids", "ids_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with a header row: one key per row of FEATURES.")
@click.option("--id-column", help="The key column of --ids (and --metadata); default: the first.")
@click.option("--metadata", "metadata_path", type=click.Path(exists=True, dir_okay=False),
              help="CSV with the key column and metadata columns (taken_at, camera_make, ...).")
@click.option("--ignore-extra", is_flag=True, help="Skip metadata columns clipsql does not store.")
@click.option("--prefix", default="", help="Prepended to every key, e.g. a URL or a folder.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary only.")
@_common
@_friendly
def import_embeddings(features, ids_path, id_column, metadata_path, ignore_extra, prefix, as_json,
                      dsn, model, device):
    """Import precomputed embeddings FEATURES (.npy, rows x dim) under the keys in --ids."""
    import numpy as np

    try:
        vectors = np.load(features, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot read {features} as a .npy array: {exc}") from None
    try:
        column, keys = read_keys(ids_path, id_column)
        meta = read_metadata(metadata_path, column, keys, ignore_extra) if metadata_path else None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise click.ClickException(f"cannot read the CSV: {exc}") from None
    except EmbeddingImportError as exc:
        raise click.ClickException(str(exc)) from None
    with _open(dsn, model, device) as db:
        report = db.add_embeddings([prefix + k.strip() if k.strip() else "" for k in keys],
                                  vectors, meta)
    if as_json:
        _echo_json(report.to_dict())
        return
    click.echo(f"added {report.added}, updated {report.updated} in {report.seconds:.1f} s"
               + ("; built the HNSW index" if report.index_built else ""))
