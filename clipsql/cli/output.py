"""How commands print: JSON, hit lists, and one-line errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import sys
import time

import click

from clipsql.errors import ClipsqlError


def friendly(f):
    """Turn library errors into :class:`click.ClickException` (one line, exit status 1)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ClipsqlError as exc:
            raise click.ClickException(printable(str(exc))) from None
        except Exception as exc:
            # Safety net: a driver error the library did not translate is still one line.
            import psycopg

            if isinstance(exc, psycopg.Error):
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise click.ClickException(f"database error: {first}") from None
            raise
    return wrapper


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text) -> str:
    """``text`` safe for a terminal line: control characters, newlines and bidi overrides in
    file names (or labels) are shown escaped (``\\n``, ``\\x1b``, ``\\u202e``), so a name
    cannot forge output lines or terminal escape sequences.

    >>> printable("a\\nb\\x1b[31mred")
    'a\\\\nb\\\\x1b[31mred'
    """
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool = False):
    """A ``progress(done, total)`` callback that draws a bar on a terminal's stderr (nothing
    when ``quiet`` or when stderr is not a terminal); the bar is finished on exit."""
    bar = None if quiet or not sys.stderr.isatty() else \
        click.progressbar(length=0, label=label, file=sys.stderr)

    def progress(done, total):
        if bar is not None:
            bar.length = total
            bar.update(done - bar.pos)

    yield progress
    if bar is not None:
        bar.render_finish()


def step_printer(quiet: bool = False):
    """A ``steps(what)`` callback printing ``clipsql: what`` with the seconds since it was
    made, on stderr (nothing when ``quiet``): what a long command is doing before its bar."""
    started = time.perf_counter()

    def steps(what: str) -> None:
        if not quiet:
            click.echo(f"clipsql: {printable(what)} [{time.perf_counter() - started:.1f} s]",
                       err=True)

    return steps


def echo_json(data) -> None:
    """Print ``data`` as one line of strict JSON: a NaN or an infinity, which JSON cannot
    hold, is a one-line error naming where it is, never printed as ``NaN``.

    >>> echo_json({"hits": [{"score": float("nan")}]})
    Traceback (most recent call last):
    click.exceptions.ClickException: cannot print the result as JSON: hits[0].score is nan, not a finite number
    """
    try:
        text = json.dumps(data, ensure_ascii=False, default=str, indent=None, allow_nan=False)
    except ValueError as exc:
        where = _not_finite(data)
        raise click.ClickException("cannot print the result as JSON: " + (
            f"{where[0]} is {where[1]}, not a finite number" if where else str(exc))) from None
    click.echo(text)


def _not_finite(data, where: str = ""):
    """(where, value) of the first float in ``data`` that is NaN or infinite, or None."""
    if isinstance(data, float):
        return None if math.isfinite(data) else (where or "the value", data)
    items = data.items() if isinstance(data, dict) else \
        enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        inner = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        found = _not_finite(value, inner)
        if found:
            return found
    return None


def print_hits(hits, as_json: bool) -> None:
    if as_json:
        echo_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("no results", err=True)
    for h in hits:
        taken = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else "-"
        click.echo(f"{h.score:.4f}  {h.id:>7}  {taken:10}  {located(h)}")


def counted(n, noun: str) -> str:
    """``1 label``, ``3 labels`` (``n``: a number or a sized collection)."""
    n = n if isinstance(n, int) else len(n)
    return f"{n} {noun}{'s' * (n != 1)}"


def located(hit) -> str:
    """A hit's path; a video moment's as ``PATH#t=SECONDS  (M:SS-M:SS)``, a key that
    ``similar`` takes."""
    start = getattr(hit, "start_s", None)
    if start is None:
        return printable(hit.path)
    return (f"{printable(hit.path)}#t={start:g}  "
            f"({clock(start)}-{clock(getattr(hit, 'end_s', None) or start)})")


def clock(seconds: float) -> str:
    """``75.5`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def print_cutoff(hits, as_json: bool) -> None:
    """Which relevance rule cut the ranking, on stderr (so ``--json`` stays one array)."""
    cut = getattr(hits, "cutoff", None)
    if cut and not as_json:
        click.echo(cutoff_line(cut), err=True)


def cutoff_line(cut: dict) -> str:
    """What a cutoff report (:mod:`clipsql.query.relevance`) says, with the option's name.

    ``--min-score`` is applied by the query itself, so its candidates are the hits that
    reached it: it says how many were kept, not "kept N of N candidates".

    >>> cutoff_line({"rule": "min_score", "threshold": 0.5, "kept": 0, "candidates": 0})
    'no hit reaches --min-score 0.5'
    >>> cutoff_line({"rule": "within", "threshold": 0.26, "kept": 3, "candidates": 200})
    'cut by --within at score 0.2600: kept 3 of the best 200 hits'
    """
    kept, option = cut["kept"], "--" + cut["rule"].replace("_", "-")
    hits = f"{kept} hit{'s' * (kept != 1)}"
    if cut["rule"] == "min_score":
        if not kept:
            return f"no hit reaches {option} {cut['threshold']:g}"
        return f"kept {hits} at or above {option} {cut['threshold']:g}"
    if cut["rule"] in ("gap", "zscore"):
        option = f"--adaptive {cut['rule']}"
    return (f"cut by {option} at score {cut['threshold']:.4f}: kept {kept} of the best "
            f"{cut['candidates']} hits")


def print_image_labels(rows) -> None:
    """Rows of (id, [(label, probability), ...], path), as classify and flag print them."""
    for r in rows:
        labels = "  ".join(f"{printable(label)} {p:.3f}" for label, p in r.labels)
        click.echo(f"{r.id:>7}  {labels}  {printable(r.path)}")
