"""How commands print: JSON, hit lists, and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import json

import click

from clipsql.errors import ClipsqlError


def friendly(f):
    """Turn library errors into :class:`click.ClickException` (one line, exit status 1)."""
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


def echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=str, indent=None))


def print_hits(hits, as_json: bool) -> None:
    if as_json:
        echo_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("no results", err=True)
    for h in hits:
        taken = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else "-"
        click.echo(f"{h.score:.4f}  {h.id:>7}  {taken:10}  {h.path}")


def print_image_labels(rows) -> None:
    """Rows of (id, [(label, probability), ...], path), as classify and flag print them."""
    for r in rows:
        labels = "  ".join(f"{label} {p:.3f}" for label, p in r.labels)
        click.echo(f"{r.id:>7}  {labels}  {r.path}")
