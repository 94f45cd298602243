"""The ``clipsql`` command: a thin layer over the library. Each command makes one library
call and turns :class:`ClipsqlError` into a one-line message."""

from __future__ import annotations

import functools
import json
import sys

import click

from .errors import ClipsqlError


def _common(f):
    """--db and --model (and --device) on every command that opens the collection."""
    @click.option("--db", "dsn", envvar="CLIPSQL_DATABASE_URL",
                  help="PostgreSQL URL; default: the embedded server.")
    @click.option("--model", envvar="CLIPSQL_MODEL",
                  help="ARCH/PRETRAINED or ARCH/PATH-TO-CHECKPOINT (default ViT-B-32/laion2b_s34b_b79k, "
                       "or the collection's own).")
    @click.option("--device", envvar="CLIPSQL_DEVICE", default="auto", show_default=True,
                  help="auto, cpu, cuda, cuda:1, mps.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


def _friendly(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ClipsqlError as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            # Safety net: a driver error the library did not translate is still one line.
            import psycopg

            if isinstance(exc, psycopg.Error):
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise click.ClickException(f"database error: {first}") from None
            raise
    return wrapper


def _open(dsn, model, device, precision=None):
    from .collection import connect

    return connect(dsn, model=model, device=device, precision=precision)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=str, indent=None))


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        _echo_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("no results", err=True)
    for h in hits:
        taken = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else "-"
        click.echo(f"{h.score:.4f}  {h.id:>7}  {taken:10}  {h.path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipsql")
def main():
    """CLIP image search inside PostgreSQL."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--prune", is_flag=True, help="Remove rows of files that are gone from disk.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workers", type=click.IntRange(1, 64), help="Decoders (default: cores, 2 to 8).")
@click.option("--processes", is_flag=True,
              help="Decode in worker processes instead of threads (GPU loads on many cores).")
@click.option("--precision", envvar="CLIPSQL_PRECISION", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "fp16", "bf16", "int8"]),
              help="auto: fp16 on CUDA, fp32 on CPU. Faster on CPU: bf16 (CPUs with AVX512-BF16/AMX) or "
                   "int8 (dynamic quantisation); see benchmarks/precision.py.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary only.")
@_common
@_friendly
def load(paths, prune, batch_size, workers, processes, precision, as_json, dsn, model, device):
    """Embed every image under PATHS into the collection (incremental)."""
    with _open(dsn, model, device, precision) as db:
        show_bar = not as_json and sys.stderr.isatty()
        bar = click.progressbar(length=0, label="embedding", file=sys.stderr) if show_bar else None

        def progress(done, total):
            if bar is not None:
                bar.length = total
                bar.update(done - bar.pos)

        report = db.load(*paths, prune=prune, batch_size=batch_size, workers=workers,
                         processes=processes, progress=progress)
        if bar is not None:
            bar.render_finish()
    if as_json:
        _echo_json(report.to_dict())
        return
    for path, reason in report.failures:
        click.echo(f"failed: {path}: {reason}", err=True)
    for path, reason in report.skipped:
        click.echo(f"skipped: {path}: {reason}", err=True)
    click.echo(f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
               f"removed {report.removed}, failed {report.failed} in {report.seconds:.1f} s")


def _search_options(f):
    f = click.option("--where", help="SQL filter over clipsql.images columns (read-only).")(f)
    f = click.option("--param", "params", multiple=True, help="A value for a %s in --where (repeat).")(f)
    f = click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10000))(f)
    f = click.option("--min-score", type=float, help="Only hits with at least this cosine similarity.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print a JSON array of hits only.")(f)
    return f


@main.command()
@click.argument("query", required=False)
@click.option("--image", help="An image (path or id) to search by, alone or added to QUERY.")
@_search_options
@_common
@_friendly
def search(query, image, where, params, limit, min_score, as_json, dsn, model, device):
    """Rank images by a text QUERY (and/or --image) with optional SQL filters."""
    if query is None and image is None:
        raise click.UsageError("give a QUERY, --image, or both")
    with _open(dsn, model, device) as db:
        hits = db.search(query, image=_id_or_path(image), where=where, params=params,
                         limit=limit, min_score=min_score)
    _print_hits(hits, as_json)


@main.command()
@click.argument("image")
@_search_options
@_common
@_friendly
def similar(image, where, params, limit, min_score, as_json, dsn, model, device):
    """Images most like IMAGE (a path or a row id), IMAGE itself excluded."""
    with _open(dsn, model, device) as db:
        hits = db.similar(_id_or_path(image), where=where, params=params, limit=limit,
                          min_score=min_score)
    _print_hits(hits, as_json)


def _id_or_path(value):
    if value is not None and value.isdigit():
        return int(value)
    return value


@main.command()
@click.option("--json", "as_json", is_flag=True)
@_common
@_friendly
def status(as_json, dsn, model, device):
    """Rows, failures, model, database and index of the collection."""
    with _open(dsn, model, device) as db:
        info = db.status()
    if as_json:
        _echo_json(info)
        return
    m = info["model"]
    click.echo(f"database:   {info['database']}  (PostgreSQL {info['server_version']}, "
               f"pgvector {info['pgvector']}, schema v{info['schema_version']})")
    click.echo(f"model:      {m['arch']}/{m['pretrained']} ({m['dim']}-d)" if m else "model:      (none yet)")
    click.echo(f"images:     {info['images']}  ({info['table_bytes'] / 1e6:.1f} MB with indexes)")
    reasons = ", ".join(f"{k} {v}" for k, v in info["failures_by_reason"].items())
    click.echo(f"failures:   {info['failures']}" + (f"  ({reasons})" if reasons else ""))
    click.echo(f"index:      {info['index'] or 'none (built at the end of the next load)'}")


@main.group("db")
def db_group():
    """Manage the embedded PostgreSQL server."""


@db_group.command("start")
@_friendly
def db_start():
    """Start the embedded server and keep it running for other clients."""
    from . import embedded

    click.echo(embedded.start())


@db_group.command("stop")
@_friendly
def db_stop():
    """Stop the embedded server."""
    from . import embedded

    click.echo("stopped" if embedded.stop() else "not running")


@db_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def db_status(as_json):
    """Whether the embedded server is running, and where its data lives."""
    from . import embedded

    info = embedded.status()
    if as_json:
        _echo_json(info)
        return
    state = "running" if info["running"] else "stopped"
    kept = " (kept running by `clipsql db start`)" if info["kept_running"] else ""
    click.echo(f"{state}{kept}\ndata: {info['pgdata']}")
    if info["url"]:
        click.echo(f"url:  {info['url']}")


@db_group.command("url")
@_friendly
def db_url():
    """Print a connection URL for psql or your own app (starts the server if needed)."""
    from . import embedded

    click.echo(embedded.url() or embedded.start())


# Command groups that live in their own modules register themselves on `main` when imported.
# (Imported last: they import `main`, `_common` and `_friendly` from here.)
from . import cli_web  # noqa: E402,F401
from . import cli_query  # noqa: E402,F401
from . import cli_labels  # noqa: E402,F401
from . import cli_import  # noqa: E402,F401
