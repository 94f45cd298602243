"""``clipsql caption``, and ``search --hybrid``: captions written by a CoCa model, searched by
their words and fused with the CLIP ranking.

    $ clipsql caption --max-length 20            # only images without a current caption
    $ clipsql search "dog on a beach" --hybrid --rrf-k 60
"""

from __future__ import annotations

import click

import clipsql
from clipsql.captions import generate, hybrid
from clipsql.cli.options import (
    batch_size_option,
    database_options,
    filter_options,
    json_option,
)
from clipsql.cli.output import (
    echo_json,
    friendly,
    located,
    print_hits,
    printable,
    progress_bar,
    step_printer,
)
from clipsql.errors import ModelError

#: The caption model when --model is not given (the collection's CLIP model is separate).
ENV_CAPTION_MODEL = "CLIPSQL_CAPTION_MODEL"


@click.command()
@click.option("--model", "caption_model", envvar=ENV_CAPTION_MODEL,
              help="The CoCa captioning model: ARCH/PRETRAINED or ARCH/PATH-TO-CHECKPOINT "
                   "(default: the model of the collection's captions; with none yet, "
                   f"{generate.DEFAULT_CAPTION_MODEL}).")
@filter_options
@batch_size_option(generate.BATCH, limit=1024,
                   help_text="Images captioned together (and written in one transaction).")
@click.option("--max-length", default=generate.MAX_LENGTH, show_default=True,
              type=click.IntRange(1, 70), help="Longest caption, in tokens.")
@json_option("Print a JSON summary only.")
@database_options
@friendly
def caption(caption_model, where, params, batch_size, max_length, as_json, dsn, device):
    """Caption the images that have no current caption from the model (incremental).

    A caption is current while the image's content (sha256) is the one it was written for;
    every batch is committed, so an interrupted run resumes where it stopped.
    """
    steps = step_printer(as_json)
    steps("opening the collection")
    with steps, clipsql.connect(dsn, device=device) as db:
        try:
            spec = generate.model_for(db.conn, caption_model)
        except ModelError as exc:
            raise click.UsageError(f"{exc}: give it with --model") from None
        with progress_bar("captioning", as_json, steps) as progress:
            report = db.caption(spec, where=where, params=params, batch_size=batch_size,
                                max_length=max_length, progress=progress, steps=steps)
    if as_json:
        echo_json(report.summary())
        return
    for path, reason in report.failed.items():
        click.echo(f"failed: {printable(path)}: {reason}", err=True)
    click.echo(f"captioned {report.computed} images with {printable(report.model)}; "
               f"{report.skipped} already current, {len(report.failed)} failed, "
               f"in {report.seconds:.1f} s ({report.rate:.2f} images/s)")


def _weight(_ctx, _param, values) -> dict:
    weights = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or name not in hybrid.RANKINGS:
            raise click.BadParameter(f"{value!r}: give NAME=WEIGHT, NAME one of "
                                     f"{', '.join(hybrid.RANKINGS)}")
        try:
            weights[name] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: {number!r} is not a number") from None
    return weights


def hybrid_options(f):
    """``--hybrid``, ``--weight`` and ``--rrf-k`` for ``search``."""
    f = click.option("--rrf-k", default=hybrid.RRF_K, show_default=True, type=click.IntRange(0),
                     help="With --hybrid: the k of score = sum weight/(k + rank).")(f)
    f = click.option("--weight", "weights", multiple=True, callback=_weight,
                     metavar="NAME=WEIGHT",
                     help="With --hybrid: a ranking's weight (clip, text: the captions, ocr: "
                          "the words in the images; default 1 each, 0 leaves it out).")(f)
    return click.option("--hybrid", is_flag=True,
                        help="Fuse the CLIP ranking with full-text rankings of the captions "
                             "and of the words in the images (reciprocal rank fusion); needs "
                             "a text QUERY.")(f)


def hybrid_search(db, query, *, where, params, limit, rrf_k, as_json, unsupported,
                  weights=None) -> None:
    """Run and print a hybrid search (``unsupported``: options given that it cannot use)."""
    if not query:
        raise click.UsageError("--hybrid needs a text QUERY (its words are searched in the "
                               "captions and in the images)")
    given = [name for name, value in unsupported.items() if value]
    if given:
        raise click.UsageError(f"--hybrid cannot be combined with {', '.join(given)}")
    hits = db.hybrid_search(query, where=where, params=params, limit=limit, rrf_k=rrf_k,
                            weights=weights or None)
    if as_json:
        echo_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("no results", err=True)
    for h in hits:
        ranks = "  ".join(f"{name} {'-' if r is None else r:>4}" for name, r in zip(
            hybrid.RANKINGS, (h.clip_rank, h.text_rank, h.ocr_rank)))
        click.echo(f"{h.score:.4f}  {h.id:>7}  {ranks}  {located(h)}")
        if h.caption:
            click.echo(f"{'':>15}{printable(h.caption)}")
        if h.ocr_text:
            click.echo(f"{'':>15}words: {printable(' '.join(h.ocr_text.split())[:120])}")


def print_captioned(db, hits, as_json: bool) -> None:
    """:func:`~clipsql.cli.output.print_hits`, with each hit's caption in the JSON where it
    has one."""
    if not as_json:
        print_hits(hits, as_json)
        return
    found = hybrid.captions_for(db.conn, [h.id for h in hits])
    echo_json([{**h.to_dict(), **({"caption": found[h.id]} if h.id in found else {})}
               for h in hits])


COMMANDS = [caption]
