"""``clipsql db start|stop|status|url``: the embedded PostgreSQL server."""

from __future__ import annotations

import click

from clipsql.cli.options import json_option
from clipsql.cli.output import echo_json, friendly
from clipsql.database import embedded


@click.group("db")
def db_group():
    """Manage the embedded PostgreSQL server."""


@db_group.command("start")
@friendly
def db_start():
    """Start the embedded server and keep it running for other clients."""
    click.echo(embedded.start())


@db_group.command("stop")
@friendly
def db_stop():
    """Stop the embedded server."""
    click.echo("stopped" if embedded.stop() else "not running")


@db_group.command("status")
@json_option()
@friendly
def db_status(as_json):
    """Whether the embedded server is running, and where its data lives."""
    info = embedded.status()
    if as_json:
        echo_json(info)
        return
    state = "running" if info["running"] else "stopped"
    kept = (" (kept running after clipsql exits, as `clipsql db start` or `clipsql db url` "
            "left it; `clipsql db stop` stops it)" if info["running"] and info["kept_running"]
            else "")
    click.echo(f"{state}{kept}\ndata: {info['pgdata']}")
    if info["url"]:
        click.echo(f"url:  {info['url']}")


@db_group.command("url")
@friendly
def db_url():
    """Print a connection URL for psql or your own app (starts the server if needed, and
    keeps it running, as db start does)."""
    click.echo(embedded.url() or embedded.start())


COMMANDS = [db_group]
