"""``clipsql ocr``: the words in the images, read by PP-OCR (or Tesseract), for ``clipsql.text_in_image``.

    $ clipsql ocr                          # only images without a current OCR row
    $ clipsql ocr --languages eng+jpn --redo
"""

from __future__ import annotations

import click

import clipsql
from clipsql.cli.options import batch_size_option, db_option, filter_options, json_option
from clipsql.cli.output import (
    counted,
    echo_json,
    friendly,
    printable,
    progress_bar,
    step_printer,
)
from clipsql.ocr import engine as ocr_engine
from clipsql.ocr import run


@click.command()
@click.option("--languages", metavar="LANG+LANG",
              help="Languages joined by '+' (default: "
                   f"{'+'.join(ocr_engine.DEFAULT_LANGUAGES)}, read by PP-OCR; a language it "
                   "lacks, e.g. rus, is read by Tesseract, whose language data is a system "
                   "package).")
@click.option("--redo", is_flag=True, help="Read every image again, current or not.")
@filter_options
@batch_size_option(run.BATCH, limit=1024,
                   help_text="Images read together (and written in one transaction).")
@click.option("--threads", type=click.IntRange(1, 64),
              help="Images read at once (default: the CPUs, at most 8).")
@json_option("Print a JSON summary only.")
@db_option
@friendly
def ocr(languages, redo, where, params, batch_size, threads, as_json, dsn):
    """Read the words in the images that have no current OCR row (incremental).

    A row is current while the image's content (sha256), the engine (its models or
    version) and the languages are those it was read with; every batch is committed, so an interrupted run
    resumes where it stopped. Search the words with clipsql.text_in_image in SQL.
    """
    steps = step_printer(as_json)
    with steps:  # Tesseract's language data (Japanese: tens of MB) can take seconds to load
        steps("starting Tesseract" + (f" ({languages})" if languages else ""))
        engine = ocr_engine.OcrEngine(languages)
    try:
        steps(f"opening the collection ({engine.engine}, {engine.languages})")
        with steps, clipsql.connect(dsn) as db, \
                progress_bar("reading words", as_json, steps) as progress:
            steps("finding the images without a current OCR row")
            report = run.ocr(db.conn, engine=engine, batch_size=batch_size, where=where,
                             params=params, progress=progress, redo=redo, threads=threads)
    finally:
        engine.close()
    if as_json:
        echo_json(report.summary())
        return
    for path, reason in report.failed.items():
        click.echo(f"failed: {printable(path)}: {reason}", err=True)
    if report.moments_skipped:
        click.echo(f"skipped {report.moments_skipped} video moments: no video reader "
                   "(clipsql.ingest.video) in this installation", err=True)
    click.echo(f"read words in {counted(report.computed, 'image')} with {report.engine} "
               f"({report.languages}); {report.skipped} already current, "
               f"{len(report.failed)} failed, in {report.seconds:.1f} s "
               f"({report.rate:.2f} images/s)")


COMMANDS = [ocr]
