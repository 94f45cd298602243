"""``clipsql embed-text``: embed text queries once so plain SQL can search with them.

    $ clipsql embed-text "two dogs in snow"
    $ psql -c "SELECT path FROM clipsql.images
               ORDER BY embedding <=> clipsql.text_embedding('two dogs in snow') LIMIT 5"
"""

from __future__ import annotations

import click

from .cli import _common, _echo_json, _friendly, _open, main


@main.command("embed-text")
@click.argument("texts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array only.")
@_common
@_friendly
def embed_text(texts, as_json, dsn, model, device):
    """Embed TEXTS with the collection's model and store them for clipsql.text_embedding()."""
    from . import textcache

    with _open(dsn, model, device) as db:
        saved = textcache.save(db.conn, db.model, texts)
    if as_json:
        _echo_json(saved)
        return
    for item in saved:
        state = "stored" if item["new"] else "already stored"
        click.echo(f"{state}: {item['query']}  ({item['dim']}-d)")
    click.echo("use it from SQL: ORDER BY embedding <=> clipsql.text_embedding('...')", err=True)
