"""CLI commands for zero-shot labels, moderation flags and duplicates (registered on ``main``).

    clipsql labels add cat dog car "a screenshot"
    clipsql classify --top 2 --store
    clipsql label-search dog --limit 20
    clipsql flag --set safety --threshold 0.8
    clipsql duplicates --threshold 0.97
"""

from __future__ import annotations

import click

from .cli import _common, _echo_json, _friendly, _open, _print_hits, main

_SET = click.option("--set", "label_set", default="default", show_default=True,
                    help="The label set.")


def _filter(f):
    f = click.option("--where", help="SQL filter over clipsql.images columns (read-only).")(f)
    return click.option("--param", "params", multiple=True, help="A value for a %s in --where (repeat).")(f)


@main.group("labels")
def labels_group():
    """Manage named label sets (stored in clipsql.label_sets / clipsql.labels)."""


@labels_group.command("add")
@click.argument("labels", nargs=-1, required=True)
@_SET
@click.option("--template", "templates", multiple=True,
              help="Prompt template with {} for the label (repeat to average several); "
                   "default 'a photo of a {}.' or the set's current ones.")
@click.option("--json", "as_json", is_flag=True)
@_common
@_friendly
def labels_add(labels, label_set, templates, as_json, dsn, model, device):
    """Add LABELS to a set (created if new), embedded with the collection's model."""
    with _open(dsn, model, device) as db:
        ls = db.add_labels(list(labels), label_set=label_set, templates=list(templates) or None)
    if as_json:
        _echo_json({"name": ls.name, "labels": ls.labels, "templates": ls.templates,
                    "version": ls.version, "model": ls.model})
        return
    click.echo(f"set {ls.name} (v{ls.version}): {len(ls.labels)} labels: {', '.join(ls.labels)}")


@labels_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@_common
@_friendly
def labels_list(as_json, dsn, model, device):
    """Every label set with its labels and templates."""
    with _open(dsn, model, device) as db:
        found = db.label_sets()
    if as_json:
        _echo_json(found)
        return
    if not found:
        click.echo("no label sets; add some: clipsql labels add cat dog car", err=True)
    for s in found:
        click.echo(f"{s['name']} (v{s['version']}, {s['stored_rows']} stored rows, "
                   f"templates: {' | '.join(s['templates'])}): {', '.join(s['labels'])}")


@labels_group.command("remove")
@click.argument("labels", nargs=-1)
@_SET
@click.option("--all", "whole_set", is_flag=True, help="Remove the whole set and its stored results.")
@_common
@_friendly
def labels_remove(labels, label_set, whole_set, dsn, model, device):
    """Remove LABELS from a set, or the whole set with --all."""
    if bool(labels) == whole_set:
        raise click.UsageError("give LABELS to remove, or --all for the whole set")
    with _open(dsn, model, device) as db:
        n = db.remove_labels(list(labels) if labels else None, label_set=label_set)
    click.echo(f"removed {'set ' + label_set + ' with ' if whole_set else ''}{n} labels")


@main.command()
@_SET
@_filter
@click.option("--top", default=1, show_default=True, type=click.IntRange(0, 10000),
              help="Best labels kept per image (0: all).")
@click.option("--store", is_flag=True,
              help="Store into clipsql.image_labels; only images without current results are computed.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON only: per-image labels, or with --store a summary.")
@_common
@_friendly
def classify(label_set, where, params, top, store, as_json, dsn, model, device):
    """Zero-shot classify images with a label set (softmax with the model's logit scale)."""
    with _open(dsn, model, device) as db:
        result = db.classify(label_set, where=where, params=params, top=top, store=store)
    if store:
        s = result.summary()
        if as_json:
            _echo_json(s)
        else:
            click.echo(f"classified {s['computed']} images with set {s['label_set']} "
                       f"(v{s['version']}); {s['skipped']} already stored, in {s['seconds']:.1f} s")
        return
    if as_json:
        _echo_json([r.to_dict() for r in result])
        return
    for r in result:
        labels = "  ".join(f"{label} {p:.3f}" for label, p in r.labels)
        click.echo(f"{r.id:>7}  {labels}  {r.path}")


@main.command("label-search")
@click.argument("label")
@_SET
@_filter
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True)
@_common
@_friendly
def label_search(label, label_set, where, params, limit, as_json, dsn, model, device):
    """The images closest to LABEL's embedding (through the HNSW index)."""
    with _open(dsn, model, device) as db:
        hits = db.label_search(label, label_set, where=where, params=params, limit=limit)
    _print_hits(hits, as_json)


@main.command()
@click.option("--set", "label_set", required=True, help="The label set to flag with, e.g. safety.")
@click.option("--threshold", default=0.8, show_default=True, type=click.FloatRange(0, 1, min_open=True))
@click.option("--neutral", multiple=True,
              help="Background prompt(s) scored with the labels (default: 'a photo.' etc.).")
@_filter
@click.option("--json", "as_json", is_flag=True)
@_common
@_friendly
def flag(label_set, threshold, neutral, where, params, as_json, dsn, model, device):
    """Images whose probability for any label of a set reaches the threshold."""
    with _open(dsn, model, device) as db:
        found = db.flag(label_set, threshold, neutral=list(neutral) or None, where=where, params=params)
    if as_json:
        _echo_json([r.to_dict() for r in found])
        return
    if not found:
        click.echo("nothing flagged", err=True)
    for r in found:
        click.echo(f"{r.id:>7}  {'  '.join(f'{lb} {p:.3f}' for lb, p in r.labels)}  {r.path}")


@main.command()
@click.option("--threshold", default=0.97, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Cosine similarity for near-duplicates.")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Nearest neighbours looked at per image.")
@click.option("--json", "as_json", is_flag=True)
@_common
@_friendly
def duplicates(threshold, k, as_json, dsn, model, device):
    """Groups of byte-identical and near-duplicate images."""
    with _open(dsn, model, device) as db:
        groups = db.duplicates(threshold, k)
    if as_json:
        _echo_json([g.to_dict() for g in groups])
        return
    if not groups:
        click.echo("no duplicates", err=True)
    for n, g in enumerate(groups, start=1):
        kind = "exact" if g.exact else f"similarity {g.min_similarity:.4f}-{g.max_similarity:.4f}"
        click.echo(f"group {n} ({len(g.ids)} images, {kind}):")
        for i, p in zip(g.ids, g.paths):
            click.echo(f"  {i:>7}  {p}")
