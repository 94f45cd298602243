"""Options shared by several commands, each declared once, with defaults read from the library."""

from __future__ import annotations

import click

from clipsql import config
from clipsql.query import relevance

db_option = click.option("--db", "dsn", envvar=config.ENV_DATABASE_URL,
                         help="PostgreSQL URL; default: the embedded server.")
model_option = click.option("--model", envvar=config.ENV_MODEL,
                            help="ARCH/PRETRAINED or ARCH/PATH-TO-CHECKPOINT (default "
                                 f"{config.DEFAULT_MODEL}, or the collection's own).")
device_option = click.option("--device", envvar=config.ENV_DEVICE, default=config.DEFAULT_DEVICE,
                             show_default=True, help="auto, cpu, cuda, cuda:1, mps.")


def database_options(f):
    """``--db`` and ``--device``: a command that opens the collection with a model of its
    own choosing (``caption``, ``reembed``), so it offers no collection ``--model``."""
    return db_option(device_option(f))


def collection_options(f):
    """``--db``, ``--model`` and ``--device``: every command that opens the collection."""
    return db_option(model_option(device_option(f)))


def batch_size_option(default: int = config.BATCH_SIZE, limit: int = 4096,
                      help_text: str | None = None):
    """``--batch-size`` with a default read from the library (images per model call)."""
    return click.option("--batch-size", default=default, show_default=True,
                        type=click.IntRange(1, limit), help=help_text)


def precision_option(f):
    return click.option(
        "--precision", envvar=config.ENV_PRECISION, default=config.DEFAULT_PRECISION,
        show_default=True, type=click.Choice(config.PRECISIONS),
        help="auto: on a CPU, ONNX Runtime int8 where the checkpoint's export keeps cosine "
             ">= 0.999 to fp32, else fp32; on CUDA, fp16. fp32/int8/fp16 force one.")(f)


def filter_options(f):
    """``--where`` and ``--param``: a read-only SQL filter over ``clipsql.images``."""
    f = click.option("--where", help="SQL filter over clipsql.images columns (read-only).")(f)
    return click.option("--param", "params", multiple=True,
                        help="A value for a %s in --where (repeat).")(f)


def json_option(help_text: str = "Print JSON only."):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def limit_option(f):
    return click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10000))(f)


def search_options(f):
    """What ``search`` and ``similar`` share: filter, limit, score cutoff, JSON."""
    f = filter_options(f)
    f = limit_option(f)
    f = click.option("--min-score", type=float,
                     help="Only hits with at least this cosine similarity.")(f)
    return json_option("Print a JSON array of hits only.")(f)


def label_set_option(f):
    """``--set``: a label set by name (:mod:`clipsql.query.label_sets`, imported by the
    commands that take it, not by every command)."""
    from clipsql.query import label_sets

    return click.option("--set", "label_set", default=label_sets.DEFAULT_SET,
                        show_default=True, help="The label set.")(f)


def relevance_options(f):
    """Cutoffs relative to the query's own scores, and ordering of the relevant set."""
    f = click.option("--within", type=click.FloatRange(0), metavar="DELTA",
                     help="Only hits within DELTA of the best hit's score.")(f)
    f = click.option("--adaptive", type=click.Choice(relevance.ADAPTIVE),
                     help="Cut where the query's own scores break (gap) or stand out (zscore).")(f)
    f = click.option("--order-by", metavar="'COLUMN [asc|desc]'",
                     help="Order the relevant hits by a column, e.g. 'taken_at desc'.")(f)
    return click.option("--candidates", default=relevance.CANDIDATES, show_default=True,
                        type=click.IntRange(1, 10000),
                        help="Best hits that --within/--adaptive/--order-by look at.")(f)
