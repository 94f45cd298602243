"""``clipsql reembed``: switch the collection to another model without downtime."""

from __future__ import annotations

import click

import clipsql
import clipsql.reembed
from clipsql.cli.options import batch_size_option, database_options, json_option, precision_option
from clipsql.cli.output import echo_json, friendly, printable, progress_bar, step_printer


@click.command()
@click.option("--model", "target",
              help="The model to switch to: ARCH/PRETRAINED or ARCH/PATH-TO-CHECKPOINT.")
@click.option("--drop-old", is_flag=True,
              help="Do not keep the replaced vectors; without --model, remove those an "
                   "earlier reembed kept.")
@click.option("--cancel", is_flag=True, help="Give up an unfinished reembed.")
@click.option("--status", "show_status", is_flag=True,
              help="Show the progress of the latest reembed and exit.")
@batch_size_option()
@click.option("--workers", type=click.IntRange(1, 64), help="Decoders (default 2).")
@click.option("--processes", is_flag=True, help="Decode in worker processes (GPU runs).")
@precision_option
@json_option("Print a JSON summary only.")
@database_options
@friendly
def reembed(target, drop_old, cancel, show_status, batch_size, workers, processes, precision,
            as_json, dsn, device):
    """Embed the collection with another model beside the current one, then switch to it.

    Searches keep the current model until the new one is complete; an interrupted run
    resumes when run again with the same --model. See docs/reembed.md.
    """
    if not (target or drop_old or cancel or show_status):
        raise click.UsageError("give --model SPEC (or --drop-old, --cancel or --status)")
    steps = step_printer(as_json or show_status)
    steps("opening the collection")
    with steps, clipsql.connect(dsn, device=device, precision=precision) as db:
        if show_status:
            row = clipsql.reembed.progress(db.conn)
            _print_status(row, as_json)
            return
        with progress_bar("re-embedding", as_json, steps) as progress:
            report = db.reembed(target, drop_old=drop_old, cancel=cancel,
                                batch_size=batch_size, workers=workers, processes=processes,
                                progress=progress, steps=steps)
    if as_json:
        echo_json(report.to_dict())
        return
    m = report.model
    name = f"{m['arch']}/{m['pretrained']} ({m['dim']}-d)" if m else "(none)"
    if report.state == "done":
        click.echo(f"switched to {name}: {report.embedded} images embedded"
                   f"{' (resumed)' if report.resumed else ''}, {report.labels} labels, "
                   f"{report.texts} stored texts in {report.seconds:.1f} s; old vectors "
                   + ("kept" if report.old_kept else "dropped"))
    elif report.state == "cancelled":
        click.echo(f"cancelled the reembed to {name}")
    elif report.state == "dropped" or report.old_dropped:
        click.echo(f"dropped {report.old_dropped} old vectors")
    else:
        click.echo(f"the collection already uses {name}")


def _print_status(row, as_json) -> None:
    if as_json:
        echo_json(row)
        return
    if row is None:
        click.echo("no reembed yet")
        return
    when = "%Y-%m-%d %H:%M:%S"
    finished = f", finished {row['finished_at']:{when}}" if row["finished_at"] else ""
    click.echo(f"reembed to {row['arch']}/{row['pretrained']} ({row['dim']}-d): {row['state']}, "
               f"{row['embedded']} of {row['total']} images, started "
               f"{row['started_at']:{when}}{finished}")
    if row["finished_at"] is None:
        click.echo(pending_advice(row), err=True)


def pending_advice(row: dict) -> str:
    """What to do about an unfinished reembed (``clipsql status``, ``reembed --status``)."""
    again = f"`clipsql reembed --model {printable(row['spec'])}`"
    if not row["embedded"]:
        return (f"nothing is embedded yet: `clipsql reembed --cancel` gives it up (nothing is "
                f"lost), {again} runs it")
    return f"{again} resumes it; `clipsql reembed --cancel` gives it up"


COMMANDS = [reembed]
