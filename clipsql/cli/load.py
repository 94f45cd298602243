"""``clipsql load`` and ``clipsql status``."""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import click

import clipsql
from clipsql.cli.options import (
    batch_size_option,
    collection_options,
    json_option,
    precision_option,
)
from clipsql.cli.output import echo_json, friendly, printable, progress_bar, step_printer
from clipsql.errors import ConfigError, PruneRefusedError


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--prune", is_flag=True, help="Remove rows of files that are gone from disk "
              "(refused where a folder is empty or most of its files are gone).")
@click.option("--force", is_flag=True,
              help="With --prune (or --watch): prune even an empty folder, or most of a "
                   "folder's rows.")
@batch_size_option()
@click.option("--workers", type=click.IntRange(1, 64), help="Decoders (default: cores, 2 to 8).")
@click.option("--processes", is_flag=True,
              help="Decode in worker processes instead of threads (GPU loads on many cores).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]",
              help="Decode and embed with Ray (pip install \"clipsql[ray]\"): alone, a new "
                   "Ray runtime on this machine listening on 127.0.0.1 only; `--ray auto` "
                   "joins the cluster running here (RAY_ADDRESS, `ray start`); `--ray "
                   "ADDRESS` joins that one.")
@click.option("--actors", type=click.IntRange(1, 4096),
              help="With --ray: embedding actors (default: one per GPU, else half the CPUs).")
@click.option("--watch", is_flag=True,
              help="After the load, keep PATHS (folders) in sync until Ctrl-C: new and changed "
                   "files are loaded seconds after they are written (a file still being copied "
                   "is waited for), deleted ones' rows removed as --prune does (refused where a "
                   "folder is empty or most of it is gone, unless --force). One line per sync.")
@click.option("--debounce", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              metavar="SECONDS", help="With --watch: quiet time of the folders before a sync.")
@click.option("--settle", type=click.FloatRange(0, 3600), default=1.0, show_default=True,
              metavar="SECONDS",
              help="With --watch: how long a file's size and time must stay unchanged.")
@click.option("--poll", is_flag=True,
              help="With --watch: poll the folders instead of the system's file events "
                   "(network shares that send none).")
@click.option("--follow-links", is_flag=True,
              help="Follow symbolic links that lead outside PATHS (ignored by default: "
                   "whoever can put a link in a folder could load and serve any file you can "
                   "read). Never into /proc, /sys, /dev, nor to a folder that holds PATHS.")
@precision_option
@json_option("Print a JSON summary only (with --watch: one JSON line per sync).")
@collection_options
@friendly
def load(paths, prune, force, batch_size, workers, processes, ray_address, actors, watch,
         debounce, settle, poll, follow_links, precision, as_json, dsn, model, device):
    """Embed every image under PATHS into the collection (incremental)."""
    if actors is not None and ray_address is None:
        raise click.UsageError("--actors needs --ray")
    if watch:
        if ray_address:
            raise click.UsageError("--watch loads on this machine: leave out --ray")
        return _watch(paths, force, batch_size, workers, processes, debounce, settle, poll,
                      precision, as_json, dsn, model, device, follow_links)
    if debounce != 1.0 or settle != 1.0 or poll:
        raise click.UsageError("--debounce, --settle and --poll are options of --watch")
    if force and not prune:
        raise click.UsageError("--force only changes a prune: give --prune too")
    engine = {"engine": "ray", "address": ray_address, "actors": actors} if ray_address else {}
    steps = step_printer(as_json)
    steps("opening the collection")
    try:
        with steps, clipsql.connect(dsn, model=model, device=device,
                                    precision=precision) as db, \
                progress_bar("embedding", as_json, steps, unit="files") as progress:
            report = db.load(*paths, prune=prune, force=force, batch_size=batch_size,
                             workers=workers, processes=processes, progress=progress,
                             steps=steps, follow_links=follow_links, **engine)
    except PruneRefusedError as exc:
        raise click.ClickException(printable(f"{exc.problem}; if those files are really gone, "
                                             "run it again with --force")) from None
    except ConfigError as exc:
        if ray_address != "auto" or "Ray cluster" not in str(exc):
            raise
        raise click.ClickException(printable(
            f"{exc}; `--ray auto` joins a Ray cluster already running (`ray start --head`, "
            "or RAY_ADDRESS): for a Ray runtime of its own on this machine, give plain "
            "`--ray`")) from None
    if as_json:
        echo_json(report.to_dict())
        return
    _print_load(report)


def _print_load(report) -> None:
    for path, reason in report.failures:
        click.echo(f"failed: {printable(path)}: {printable(reason)}", err=True)
    for path, reason in report.skipped:
        click.echo(f"skipped: {printable(path)}: {printable(reason)}", err=True)
    if report.backend:
        click.echo(f"embedded with {report.backend} ({report.backend_reason})", err=True)
    click.echo(load_line(report))


def load_line(report) -> str:
    """The summary line of a load: every number counts files (a video is one file); the rows
    its videos' moments became are said apart.

    >>> from clipsql.ingest.loader import LoadReport
    >>> load_line(LoadReport(added=1, unchanged=2, moments=2, seconds=1.25))
    'added 1, updated 0, unchanged 2, removed 0, failed 0, ignored 0 in 1.2 s (files; the videos among them were stored as 2 rows, one per moment)'
    """
    moments = (f" (files; the videos among them were stored as {report.moments} "
               f"row{'s' * (report.moments != 1)}, one per moment)" if report.moments else "")
    return (f"added {report.added}, updated {report.updated}, "
            f"unchanged {report.unchanged}, removed {report.removed}, "
            f"failed {report.failed}, {_ignored(report)} in {report.seconds:.1f} s{moments}")


def _watch(paths, force, batch_size, workers, processes, debounce, settle, poll, precision,
           as_json, dsn, model, device, follow_links=False) -> None:
    """The first load as usual, then one line per sync until Ctrl-C or SIGTERM (exit 0)."""
    stop = threading.Event()
    try:  # SIGTERM (a service manager) stops it as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except ValueError:  # not the main thread
        previous = None
    steps = step_printer(as_json)
    bars = contextlib.ExitStack()

    on_report = sync_printer(paths, as_json, on_catch_up=bars.close)  # the first bar is done

    steps("opening the collection")
    bars.enter_context(steps)  # a long step says it is still running, until the catch-up
    try:
        with clipsql.connect(dsn, model=model, device=device, precision=precision) as db:
            progress = bars.enter_context(progress_bar("embedding", as_json, steps,
                                                       unit="files"))
            db.watch(*paths, stop=stop, debounce_s=debounce, settle_s=settle,
                     max_delay_s=max(10.0, debounce), force=force, on_report=on_report,
                     polling=poll, batch_size=batch_size, workers=workers,
                     processes=processes, progress=progress, steps=steps,
                     follow_links=follow_links)
    except KeyboardInterrupt:
        pass
    finally:
        bars.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not as_json:
        click.echo("stopped watching", err=True)


def sync_printer(paths, as_json: bool = False, on_catch_up=None):
    """The ``on_report`` of a watch that prints one line per sync (``+added ~updated
    -removed``), refusals and errors on stderr; JSON lines with ``as_json``."""
    def on_report(sync) -> None:
        if sync.kind == "catch-up" and on_catch_up is not None:
            on_catch_up()
        if as_json:
            echo_json(sync.to_dict())
            return
        for note in sync.notes:
            click.echo(f"clipsql: {printable(note)}", err=True)
        for problem in sync.refused:
            click.echo(f"prune refused: {printable(problem)}; if those files are really gone, "
                       "run it again with --force", err=True)
        if sync.error:
            click.echo(f"sync failed: {printable(sync.error)}; retrying in "
                       f"{sync.retry_in:.0f} s", err=True)
            return
        if sync.kind == "catch-up":
            _print_load(sync.load)
            click.echo(f"watching {len(paths)} folder{'s' * (len(paths) > 1)} "
                       "(Ctrl-C stops)", err=True)
            return
        for path, reason in sync.failures:
            click.echo(f"failed: {printable(path)}: {printable(reason)}", err=True)
        if sync.kind == "note":
            return
        click.echo(f"{time.strftime('%H:%M:%S')} +{sync.added} ~{sync.updated} "
                   f"-{sync.removed}" + (f" !{sync.failed}" if sync.failed else "")
                   + (" (re-load)" if sync.kind == "rescan" else "")
                   + f" ({sync.seconds:.1f} s)")
    return on_report


def _ignored(report) -> str:
    """``ignored 3 (not images)``, or ``ignored 4 (3 not images, 1 hidden)``."""
    by = report.ignored_by_reason
    if not report.ignored:
        return "ignored 0"
    if set(by) == {"not_image"}:
        return f"ignored {report.ignored} (not images)"
    labels = {"not_image": "not images", "hidden": "hidden",
              "link_outside": "links outside the folders"}
    return f"ignored {report.ignored} (" + ", ".join(
        f"{n} {labels.get(k, k)}" for k, n in sorted(by.items(), reverse=True)) + ")"


@click.command()
@json_option()
@collection_options
@friendly
def status(as_json, dsn, model, device):
    """Rows, failures, model, database and index of the collection."""
    import clipsql.reembed

    with clipsql.connect(dsn, model=model, device=device) as db:
        info = db.status()
        row = clipsql.reembed.progress(db.conn)
    info["reembed"] = row if row is not None and row["finished_at"] is None else None
    if as_json:
        echo_json(info)
        return
    for line in status_lines(info):
        click.echo(line)


def status_lines(info: dict) -> list[str]:
    """What ``clipsql status`` prints for ``info`` (:meth:`Collection.status`, plus
    ``reembed``: an unfinished reembed's row, or None). docs/cli.md and docs/models.md show
    these lines (``tests/unit/test_docs_drift.py`` checks their labels and order)."""
    m = info["model"]
    lines = [f"database:   {info['database']}  (PostgreSQL {info['server_version']}, "
             f"pgvector {info['pgvector']}, schema v{info['schema_version']})",
             f"model:      {m['arch']}/{m['pretrained']} ({m['dim']}-d)" if m
             else "model:      (none yet)"]
    videos = ""
    if info.get("videos"):
        moments, n = info["moments"], info["videos"]
        videos = (f"; {info['images'] - moments} pictures and {moments} moments of "
                  f"{n} video{'s' * (n != 1)}, a row each")
    lines.append(f"images:     {info['images']}  ({info['table_bytes'] / 1e6:.1f} MB with "
                 f"indexes{videos})")
    reasons = ", ".join(f"{k} {v}" for k, v in info["failures_by_reason"].items())
    lines.append(f"failures:   {info['failures']}" + (f"  ({reasons})" if reasons else ""))
    lines.append(f"ignored:    {info['ignored']}  (not images, or hidden)")
    lines.append(f"index:      {info['index'] or 'none (built at the end of the next load)'}")
    lines.append(f"filters:    {info['filters']['summary']}")
    t = info["sql_text"]
    lines.append(f"sql text:   {t['mode']} ({t['reason']})")
    b = info["backend"]
    lines.append(f"backend:    {b['backend'] or 'not decided yet'} ({b['reason']})")
    if b.get("text"):
        lines.append(f"text:       {b['text']} (queries; stored texts and labels in fp32)")
    r = info.get("reembed")
    if r:
        from clipsql.cli.reembed import pending_advice

        lines.append(f"reembed:    to {r['arch']}/{r['pretrained']} ({r['dim']}-d) unfinished, "
                     f"{r['state']}: {r['embedded']} of {r['total']} images embedded; "
                     + pending_advice(r))
    lines.append(f"cache:      {info['cache']['path']}  ({info['cache']['bytes'] / 1e6:.0f} MB; "
                 "`clipsql cache` lists it, `clipsql cache --clear` empties it)")
    return [printable(line) for line in lines]


COMMANDS = [load, status]
