"""``clipsql cache``: what clipsql keeps on disk for its models (ONNX exports), and clearing it."""

from __future__ import annotations

import click

from clipsql.cli.options import json_option
from clipsql.cli.output import echo_json, friendly, printable


@click.command()
@click.option("--clear", is_flag=True,
              help="Remove the cached exports (each is made again on next use, once).")
@click.option("--stale", is_flag=True, help="With --clear: only what older versions left.")
@json_option()
@friendly
def cache(clear, stale, as_json):
    """List the model cache ($CLIPSQL_CACHE, default $CLIPSQL_HOME/cache), or clear it."""
    from clipsql.models import cache as store

    if stale and not clear:
        raise click.UsageError("--stale goes with --clear")
    if clear:
        removed, freed = store.clear(stale_only=stale)
        if as_json:
            echo_json({"removed": removed, "bytes": freed})
        else:
            click.echo(f"removed {removed} cache folder{'s' * (removed != 1)} "
                       f"({freed / 1e6:.0f} MB)")
        return
    entries = store.entries()
    if as_json:
        echo_json({"path": str(store.root()), "entries": entries})
        return
    total = sum(e["bytes"] for e in entries)
    click.echo(f"{printable(store.root())}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
               f", {total / 1e6:.0f} MB")
    for e in entries:
        what = "stale (clipsql cache --clear --stale removes it)" if e["stale"] else e["model"]
        click.echo(f"  {e['bytes'] / 1e6:8.0f} MB  {printable(e['path'])}  {printable(what)}")


COMMANDS = [cache]
