"""``clipsql import-embeddings``: store precomputed CLIP features (e.g. Unsplash's features.npy).

    $ clipsql import-embeddings features.npy --ids photo_ids.csv --model ViT-B-32/openai
    $ clipsql import-embeddings features.npy --ids photo_ids.csv --metadata photos.csv \\
          --prefix https://unsplash.com/photos/

The files are read by :func:`clipsql.ingest.importer.read_files`.
"""

from __future__ import annotations

import click

import clipsql
from clipsql.cli.options import collection_options, json_option
from clipsql.cli.output import echo_json, friendly, printable
from clipsql.errors import ParameterError


@click.command("import-embeddings")
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--ids", "ids_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with a header row: one key per row of FEATURES.")
@click.option("--id-column", help="The key column of --ids (and --metadata); default: the first.")
@click.option("--metadata", "metadata_path", type=click.Path(exists=True, dir_okay=False),
              help="CSV with the key column and metadata columns (taken_at, camera_make, ...).")
@click.option("--ignore-extra", is_flag=True, help="Skip metadata columns clipsql does not store.")
@click.option("--prefix", default="", help="Prepended to every key, e.g. a URL or a folder.")
@json_option("Print a JSON summary only.")
@collection_options
@friendly
def import_embeddings(features, ids_path, id_column, metadata_path, ignore_extra, prefix, as_json,
                      dsn, model, device):
    """Import precomputed embeddings FEATURES (.npy, rows x dim) under the keys in --ids."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        try:
            report = db.import_files(features, ids_path, id_column=id_column,
                                     metadata_path=metadata_path, ignore_extra=ignore_extra,
                                     prefix=prefix)
        except ParameterError as exc:  # the library names its parameter; here, the option
            raise click.ClickException(printable(exc.naming(option_name(exc.parameter)))
                                       ) from None
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(f"added {report.added}, updated {report.updated} in {report.seconds:.1f} s"
               + ("; built the HNSW index" if report.index_built else ""))


def option_name(parameter: str) -> str:
    """The option of this command that sets a parameter of the library's import.

    >>> option_name("ignore_extra"), option_name("metadata_path")
    ('--ignore-extra', '--metadata')
    """
    for param in import_embeddings.params:  # the options carry the parameters' names
        if param.name == parameter and param.opts[0].startswith("--"):
            return param.opts[0]
    return "--" + parameter.replace("_", "-")


COMMANDS = [import_embeddings]
