"""``clipsql search``, ``similar``, ``embed-text`` and ``duplicates``: questions to the collection.

    $ clipsql search "two dogs in snow" --where "taken_at > %s" --param 2021-01-01
    $ clipsql embed-text "two dogs in snow"      # then from psql: clipsql.text_embedding(...)
"""

from __future__ import annotations

import click

import clipsql
from clipsql.cli.captions import hybrid_options, hybrid_search, print_captioned
from clipsql.cli.options import collection_options, json_option, relevance_options, search_options
from clipsql.cli.output import echo_json, friendly, print_cutoff, print_hits, printable
from clipsql.query.algebra import Image, Not, Text
from clipsql.query.duplicates import DEFAULT_K, DEFAULT_THRESHOLD


def _id_or_path(value):
    if value is not None and value.isdigit():
        return int(value)
    return value


@click.command()
@click.argument("query", required=False)
@click.option("--image", "images", multiple=True,
              help="An image (path or row id) to search by, alone or added to QUERY (repeat).")
@click.option("--minus", "minus", multiple=True, help="A text to move away from (repeat).")
@click.option("--minus-image", "minus_images", multiple=True,
              help="An image (path or row id) to move away from (repeat).")
@click.option("--image-weight", default=1.0, show_default=True, type=float,
              help="Weight of each --image against QUERY's 1.")
@click.option("--minus-weight", default=1.0, show_default=True, type=float,
              help="Weight of each --minus / --minus-image.")
@click.option("--text-in-image", "text_in_image", is_flag=True,
              help="Find QUERY's words in the words read in the images (clipsql ocr), not "
                   "by CLIP.")
@hybrid_options
@relevance_options
@search_options
@collection_options
@friendly
def search(query, images, minus, minus_images, image_weight, minus_weight, within, adaptive,
           order_by, candidates, where, params, limit, min_score, as_json, dsn, model, device,
           hybrid=False, rrf_k=60, weights=None, text_in_image=False):
    """Rank images by a text QUERY and/or --image, minus --minus, with optional SQL filters.

    The query is the weighted sum of the parts' normalised embeddings, normalised again.
    """
    parts = ([Text(query)] if query is not None else []) \
        + [Image(_id_or_path(i), weight=image_weight) for i in images] \
        + [Not(Text(m), weight=minus_weight) for m in minus] \
        + [Not(Image(_id_or_path(i)), weight=minus_weight) for i in minus_images]
    if not any(p.weight > 0 for p in parts):
        raise click.UsageError("give a QUERY or an --image to search for")
    unsupported = {"--image": images, "--minus": minus, "--minus-image": minus_images,
                   "--within": within, "--adaptive": adaptive, "--order-by": order_by,
                   "--min-score": min_score is not None}
    if text_in_image:
        given = [n for n, v in {**unsupported, "--hybrid": hybrid, "--weight": weights}.items()
                 if v]
        if given or not query:
            raise click.UsageError("--text-in-image takes a text QUERY alone"
                                   + (f", not {', '.join(given)}" if given else ""))
        with clipsql.connect(dsn, model=model, device=device) as db:
            hits = db.text_in_image(query, where=where, params=params, limit=limit)
        print_words(hits, as_json)
        return
    if weights and not hybrid:
        raise click.UsageError("--weight is an option of --hybrid")
    with clipsql.connect(dsn, model=model, device=device) as db:
        if hybrid:
            return hybrid_search(db, query, where=where, params=params, limit=limit,
                                 rrf_k=rrf_k, as_json=as_json, unsupported=unsupported,
                                 weights=weights)
        hits = db.search(parts, where=where, params=params, limit=limit, min_score=min_score,
                         within=within, adaptive=adaptive, order_by=order_by,
                         candidates=candidates)
        print_captioned(db, hits, as_json)
    print_cutoff(hits, as_json)


def print_words(hits, as_json: bool) -> None:
    """Words-in-the-image hits: the hit line, then the words read in it."""
    if as_json or not hits:
        print_hits(hits, as_json)
        return
    for h in hits:
        print_hits([h], as_json)
        if getattr(h, "ocr_text", None):
            click.echo(f"{'':>15}words: {printable(' '.join(h.ocr_text.split())[:120])}")


@click.command()
@click.argument("image")
@relevance_options
@search_options
@collection_options
@friendly
def similar(image, within, adaptive, order_by, candidates, where, params, limit, min_score,
            as_json, dsn, model, device):
    """Images most like IMAGE (a path or a row id), IMAGE itself excluded."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        hits = db.similar(_id_or_path(image), where=where, params=params, limit=limit,
                          min_score=min_score, within=within, adaptive=adaptive,
                          order_by=order_by, candidates=candidates)
    print_hits(hits, as_json)
    print_cutoff(hits, as_json)


@click.command("embed-text")
@click.argument("texts", nargs=-1, required=True)
@json_option("Print a JSON array only.")
@collection_options
@friendly
def embed_text(texts, as_json, dsn, model, device):
    """Embed TEXTS with the collection's model and store them for clipsql.text_embedding()."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        saved = db.store_texts(texts)
    if as_json:
        echo_json(saved)
        return
    for item in saved:
        state = "stored" if item["new"] else "already stored"
        click.echo(f"{state}: {printable(item['query'])}  ({item['dim']}-d)")
    click.echo(f"use it from SQL: ORDER BY embedding <=> {sql_call(saved[0]['query'])}"
               if len(saved) == 1 else "use them from SQL: ORDER BY embedding <=> "
               + ", or ".join(sql_call(item["query"]) for item in saved[:3])
               + (", ..." if len(saved) > 3 else ""), err=True)


def sql_call(text: str) -> str:
    """``clipsql.text_embedding('TEXT')`` with TEXT as a SQL string literal, printable.

    >>> sql_call("Bob's dog")
    "clipsql.text_embedding('Bob''s dog')"
    """
    return printable("clipsql.text_embedding('" + text.replace("'", "''") + "')")


@click.command()
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True,
              type=click.FloatRange(0, 1, min_open=True), help="Cosine similarity for near-duplicates.")
@click.option("--k", default=DEFAULT_K, show_default=True, type=click.IntRange(1, 1000),
              help="Nearest neighbours looked at per image.")
@json_option()
@collection_options
@friendly
def duplicates(threshold, k, as_json, dsn, model, device):
    """Groups of byte-identical and near-duplicate images."""
    with clipsql.connect(dsn, model=model, device=device) as db:
        groups = db.duplicates(threshold, k)
    if as_json:
        echo_json([g.to_dict() for g in groups])
        return
    if not groups:
        click.echo("no duplicates", err=True)
    for n, g in enumerate(groups, start=1):
        kind = "exact" if g.exact else f"similarity {g.min_similarity:.4f}-{g.max_similarity:.4f}"
        click.echo(f"group {n} ({len(g.ids)} images, {kind}):")
        for i, p in zip(g.ids, g.paths):
            click.echo(f"  {i:>7}  {printable(p)}")


COMMANDS = [search, similar, embed_text, duplicates]
