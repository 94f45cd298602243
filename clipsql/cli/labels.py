"""Zero-shot label commands: ``labels add|list|remove``, ``classify``, ``label-search``, ``flag``.

    clipsql labels add cat dog car "a screenshot"
    clipsql classify --top 2 --store
    clipsql label-search dog --limit 20
    clipsql flag --set safety --threshold 0.8
"""

from __future__ import annotations

import click

import clipsql
from clipsql.cli.options import (
    collection_options,
    filter_options,
    json_option,
    label_set_option,
    limit_option,
)
from clipsql.cli.output import (
    counted,
    echo_json,
    friendly,
    print_hits,
    print_image_labels,
    printable,
)


@click.group("labels")
def labels_group():
    """Manage named label sets (stored in clipsql.label_sets / clipsql.labels)."""


@labels_group.command("add")
@click.argument("labels", nargs=-1, required=True)
@label_set_option
@click.option("--template", "templates", multiple=True,
              help="Prompt template with {} for the label (repeat to average several); "
                   "default 'a photo of a {}.' or the set's current ones.")
@json_option()
@collection_options
@friendly
def labels_add(labels, label_set, templates, as_json, dsn, model, device):
    """Add LABELS to a set (created if new), embedded with the collection's model."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        before = {s["name"]: s["labels"] for s in db.label_sets()}
        ls = db.add_labels(list(labels), label_set=label_set, templates=list(templates) or None)
    if as_json:
        echo_json({"name": ls.name, "labels": ls.labels, "templates": ls.templates,
                   "version": ls.version, "model": ls.model})
        return
    listed = f"{printable(', '.join(ls.labels))}"
    if ls.name not in before:
        click.echo(f"created set {printable(ls.name)} with {counted(ls.labels, 'label')}: {listed}")
        return
    added = len([x for x in ls.labels if x not in before[ls.name]])
    click.echo(f"set {printable(ls.name)}: added {counted(added, 'label')}, "
               f"{counted(ls.labels, 'label')} in all: {listed}")


@labels_group.command("list")
@json_option()
@collection_options
@friendly
def labels_list(as_json, dsn, model, device):
    """Every label set with its labels and templates."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        found = db.label_sets()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no label sets; add some: clipsql labels add cat dog car", err=True)
    for s in found:
        # the version names the stored results (clipsql.image_labels.version): shown with them
        stored = (f"; {counted(s['stored_rows'], 'stored row')} of version {s['version']}"
                  if s["stored_rows"] else "")
        click.echo(f"{printable(s['name'])} ({counted(s['labels'], 'label')}; templates: "
                   f"{printable(' | '.join(s['templates']))}{stored}): "
                   f"{printable(', '.join(s['labels']))}")


@labels_group.command("remove")
@click.argument("labels", nargs=-1)
@label_set_option
@click.option("--all", "whole_set", is_flag=True, help="Remove the whole set and its stored results.")
@collection_options
@friendly
def labels_remove(labels, label_set, whole_set, dsn, model, device):
    """Remove LABELS from a set, or the whole set with --all."""
    if bool(labels) == whole_set:
        raise click.UsageError("give LABELS to remove, or --all for the whole set")
    with clipsql.connect(dsn, model=model, device=device) as db:
        n = db.remove_labels(list(labels) if labels else None, label_set=label_set)
    removed = counted(n, "label")
    click.echo(f"removed set {printable(label_set)} with {removed}" if whole_set
               else f"removed {removed} from set {printable(label_set)}")


@click.command()
@label_set_option
@filter_options
@click.option("--top", default=1, show_default=True, type=click.IntRange(0, 10000),
              help="Best labels kept per image (0: all).")
@click.option("--store", is_flag=True,
              help="Store into clipsql.image_labels; only images without current results are computed.")
@json_option("JSON only: per-image labels, or with --store a summary.")
@collection_options
@friendly
def classify(label_set, where, params, top, store, as_json, dsn, model, device):
    """Zero-shot classify images with a label set (the model's own scale; SigLIP: sigmoid)."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        result = db.classify(label_set, where=where, params=params, top=top, store=store)
    if store:
        s = result.summary()
        if as_json:
            echo_json(s)
        else:
            click.echo(f"classified {counted(s['computed'], 'image')} with set "
                       f"{printable(s['label_set'])} (stored as version {s['version']}); "
                       f"{s['skipped']} already stored, in {s['seconds']:.1f} s")
        return
    if as_json:
        echo_json([r.to_dict() for r in result])
        return
    print_image_labels(result)


@click.command("label-search")
@click.argument("label")
@label_set_option
@filter_options
@limit_option
@json_option()
@collection_options
@friendly
def label_search(label, label_set, where, params, limit, as_json, dsn, model, device):
    """The images closest to LABEL's embedding (through the HNSW index)."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        hits = db.label_search(label, label_set, where=where, params=params, limit=limit)
    print_hits(hits, as_json)


@click.command()
@click.option("--set", "label_set", required=True, help="The label set to flag with, e.g. safety.")
@click.option("--threshold", default=0.8, show_default=True,
              type=click.FloatRange(0, 1, min_open=True))
@click.option("--neutral", multiple=True,
              help="Background prompt(s) scored with the labels (default: 'a photo.' etc.).")
@filter_options
@json_option()
@collection_options
@friendly
def flag(label_set, threshold, neutral, where, params, as_json, dsn, model, device):
    """Images whose probability for any label of a set reaches the threshold."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        found = db.flag(label_set, threshold, neutral=list(neutral) or None, where=where,
                        params=params)
    if as_json:
        echo_json([r.to_dict() for r in found])
        return
    if not found:
        click.echo("nothing flagged", err=True)
    print_image_labels(found)


COMMANDS = [labels_group, classify, label_search, flag]
