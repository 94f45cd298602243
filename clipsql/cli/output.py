"""How commands print: JSON, hit lists, and one-line errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import sys
import threading
import time

import click

from clipsql.config import ENV_MODEL
from clipsql.errors import ClipsqlError, ReembedUnfinishedError, WeightsUnavailableError


def friendly(f):
    """Turn library errors into :class:`click.ClickException` (one line, exit status 1)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ClipsqlError as exc:
            raise click.ClickException(printable(next_step(exc))) from None
        except Exception as exc:
            # Safety net: a driver error the library did not translate is still one line.
            import psycopg

            if isinstance(exc, psycopg.Error):
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise click.ClickException(f"database error: {first}") from None
            raise
    return wrapper


def next_step(exc: ClipsqlError) -> str:
    """The message of ``exc``, with the way on said in this command's terms where the library
    said it in its own (a checkpoint given with this command's ``--model`` and its
    environment variable; ``reembed --cancel``)."""
    ctx = click.get_current_context(silent=True)
    where = " ".join(["clipsql", *(ctx.command_path.split()[1:] if ctx is not None else [])])
    if isinstance(exc, WeightsUnavailableError):
        local = f"{exc.arch}/PATH/TO/weights.bin"
        option = next((p for p in (ctx.command.params if ctx is not None else ())
                       if "--model" in getattr(p, "opts", ())), None)
        if option is None:
            return exc.naming(f"{ENV_MODEL}={local}")
        envvar = option.envvar if isinstance(option.envvar, str) else None
        return exc.naming(f"`{where} --model {local}`"
                          + (f" (or {envvar}={local})" if envvar else ""))
    if isinstance(exc, ReembedUnfinishedError):
        return exc.naming("`clipsql reembed --cancel`", f"`clipsql reembed --model {exc.target}`")
    return str(exc)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text) -> str:
    """``text`` safe for a terminal line: control characters, newlines and bidi overrides in
    file names (or labels) are shown escaped (``\\n``, ``\\x1b``, ``\\u202e``), so a name
    cannot forge output lines or terminal escape sequences.

    >>> printable("a\\nb\\x1b[31mred")
    'a\\\\nb\\\\x1b[31mred'
    """
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


#: Seconds of silence after which a long step says it is still running (then twice as long,
#: up to :data:`STILL_MAX_S`): no command is silent for more than 2 s without saying why.
STILL_S = 2.0
STILL_MAX_S = 30.0
#: Off a terminal (a log, ``clipsql serve`` under a service manager), the progress is a line
#: at the start, then at most every so many seconds, and at the end.
PROGRESS_LINE_S = 10.0


class Activity:
    """What a long command is doing, on stderr: ``steps(what)`` lines (``clipsql: what [12.3
    s]``, the seconds since the command started) and ``progress(done, total)`` as a bar with
    its rate and estimate on a terminal, else as lines; while it runs (``with``), a step
    that takes longer than :data:`STILL_S` is followed by ``clipsql: still ...`` lines.
    Nothing at all when ``quiet`` (``--json``: stdout stays one document; stderr clean).

    Callable as ``steps``: ``activity("opening the collection")``.
    """

    def __init__(self, label: str = "working", quiet: bool = False, unit: str = "images"):
        self.label, self.quiet, self.unit = label, quiet, unit
        self.started = self._last = time.perf_counter()
        self._what: str | None = None
        self._gap = STILL_S
        self._lock = threading.RLock()
        self._bar = None
        self._counts: tuple[int, int] | None = None
        self._first: tuple[float, int] | None = None   # (time, done) of the first progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tty = not quiet and sys.stderr.isatty()

    def _seconds(self) -> str:
        return f"[{time.perf_counter() - self.started:.1f} s]"

    def _line(self, text: str) -> None:
        click.echo(f"clipsql: {text} {self._seconds()}", err=True)
        self._last, self._gap = time.perf_counter(), STILL_S

    def __call__(self, what: str) -> None:
        self.step(what)

    def step(self, what: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._what = printable(what)
            if self._bar is not None:  # a step while a bar is drawn: on its own line
                click.echo("", err=True)
            self._line(self._what)

    def rate(self) -> float | None:
        """Units per second since the first progress report (None before two)."""
        if self._first is None or self._counts is None:
            return None
        seconds = time.perf_counter() - self._first[0]
        done = self._counts[0] - self._first[1]
        return done / seconds if seconds > 0 and done > 0 else None

    def describe(self) -> str:
        """``embedding: 64 of 1,000 images (12.3/s, about 76 s left)``."""
        if self._counts is None:
            return f"{self.label}..."
        done, total = self._counts
        rate = self.rate()
        pace = ""
        if rate:
            left = (total - done) / rate
            pace = f" ({rate:.2f} {self.unit}/s, about {left:.0f} s left)" if done < total \
                else f" ({rate:.2f} {self.unit}/s)"
        return f"{self.label}: {done:,} of {total:,} {self.unit}{pace}"

    def progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        with self._lock:
            now = time.perf_counter()
            if self._first is None:
                self._first = (now, done)
            first = self._counts is None
            self._counts = (done, total)
            if self.tty:
                if self._bar is None:
                    self._bar = click.progressbar(length=max(total, 1), label=self.label,
                                                  file=sys.stderr, show_eta=True,
                                                  item_show_func=lambda item: item)
                self._bar.length = max(total, 1)
                rate = self.rate()
                self._bar.update(done - self._bar.pos,
                                 f"{rate:.2f} {self.unit}/s" if rate else None)
                self._last = now
            elif first or done >= total or now - self._last >= PROGRESS_LINE_S:
                self._line(self.describe())

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                silent = time.perf_counter() - self._last
                if self._bar is not None or silent < self._gap:
                    continue
                gap = self._gap
                what = self.describe() if self._counts is not None else \
                    (self._what or self.label)
                self._line(f"still {what.rstrip('.')}...")
                self._gap = min(2 * gap, STILL_MAX_S)

    def __enter__(self) -> Activity:
        if not self.quiet and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="clipsql-activity",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the heartbeat and finish the bar (a later :meth:`progress` starts a new one)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._bar is not None:
                self._bar.render_finish()
                self._bar = None
            self._counts = self._first = None


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool = False, activity: Activity | None = None,
                 unit: str = "images"):
    """A ``progress(done, total)`` callback for ``with``: a bar with rate and estimate on a
    terminal's stderr, progress lines elsewhere, nothing when ``quiet``; with ``activity``
    (a :func:`step_printer`), its steps and this progress share one clock and one heartbeat
    (:class:`Activity`). The bar is finished on exit."""
    own = activity is None
    activity = activity or Activity(label, quiet, unit)
    activity.label, activity.unit = label, unit
    with activity:
        yield activity.progress
    if own:
        return


def step_printer(quiet: bool = False) -> Activity:
    """A ``steps(what)`` callback printing ``clipsql: what`` with the seconds since it was
    made, on stderr (nothing when ``quiet``): what a long command is doing before its bar.
    An :class:`Activity`: ``with`` it, a long step also says it is still running."""
    return Activity(quiet=quiet)


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
