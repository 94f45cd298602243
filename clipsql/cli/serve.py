"""``clipsql serve``: the web UI and JSON API on http://127.0.0.1:8000 (see :mod:`clipsql.web`)."""

from __future__ import annotations

import threading

import click

from clipsql import config
from clipsql.cli.options import collection_options
from clipsql.cli.output import friendly, printable, step_printer


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (::1 for IPv6 loopback). Anything but a loopback "
                   "address exposes your photos to the network (docs/security-serve.md).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--wait", "wait_s", default=config.CONNECT_WAIT_S, show_default=True,
              type=click.FloatRange(0), metavar="SECONDS",
              help="How long to wait for a database that is not up yet (retrying with "
                   "backoff); a wrong password or a missing database fails at once.")
@click.option("--watch", "folders", multiple=True, metavar="FOLDER",
              type=click.Path(exists=True, file_okay=False),
              help="Keep the collection in sync with FOLDER while serving (repeat): loaded at "
                   "the start, then new, changed and deleted files followed, as `load --watch`.")
@collection_options
@friendly
def serve(host, port, wait_s, folders, dsn, model, device):
    """Search the collection in a web browser (JSON API: /openapi.json, browsable at /docs)."""
    from clipsql.web import is_loopback
    from clipsql.web import serve as run_server

    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach this machine on port "
                   f"{port} can search and view the collection's images", err=True)
    stop = threading.Event()
    watchers: list[threading.Thread] = []
    steps = step_printer()
    steps("opening the collection and preparing its model")
    steps.__enter__()  # until it listens, a long step says it is still running

    def announce(url):
        steps.close()
        click.echo(f"clipsql: filters: {_filters(dsn)}", err=True)
        if folders:
            watchers.append(threading.Thread(target=_watch, name="clipsql-watch", daemon=True,
                                             args=(folders, stop, dsn, model, device)))
            watchers[0].start()
        click.echo(f"clipsql: open {url} (Ctrl-C stops)", err=True)

    try:
        run_server(host, port, dsn=dsn, model=model, device=device, steps=steps,
                   announce=announce, connect_wait_s=wait_s)
    finally:
        steps.close()
        stop.set()
        for watcher in watchers:
            watcher.join(WATCH_STOP_S)


#: Seconds a stopping server waits for its watcher to finish the sync it is in.
WATCH_STOP_S = 60.0


def _watch(folders, stop, dsn, model, device) -> None:
    """The watcher of ``serve --watch``, in a thread of its own: one line per sync; an error
    that ends it is printed, and the server goes on serving."""
    import clipsql
    from clipsql.cli.load import sync_printer
    from clipsql.errors import ClipsqlError

    try:
        with clipsql.connect(dsn, model=model, device=device) as db:
            db.watch(*folders, stop=stop, on_report=sync_printer(folders))
    except ClipsqlError as exc:
        click.echo(f"clipsql: the watch stopped: {printable(str(exc))}", err=True)


def _filters(dsn) -> str:
    """How SQL filters run on the server, in one line (the collection is ready by now)."""
    from clipsql.database import connection, filter_login

    with connection.connect(connection.resolve_dsn(dsn)) as conn:
        return filter_login.describe(conn)["summary"]


COMMANDS = [serve]
