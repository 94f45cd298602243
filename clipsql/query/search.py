"""Ranked search over ``clipsql.images``: a query embedding plus an optional SQL filter.

Every ranking rule lives once, in SQL (``migrations/0020_one_home.sql``):
``clipsql.rank_images`` chooses the plan (exact or index scan by the planner's estimate of
the filter, the binary index's candidates, iterative scans, the ef_search rule, an index scan
that comes back short completed exactly) and ``clipsql.relevant_ranking`` adds the relevance
cutoffs and the ordering. This module only builds the call and reads the rows back as
:class:`Hit`.

The filter is a user-written ``WHERE`` fragment with ``%s`` placeholders and bound
parameters: the parameters are bound here, on the client (psycopg's own quoting), and the
fragment is passed as text to the SQL function, which runs it with ``EXECUTE`` as the caller.
The call runs through :mod:`clipsql.database.user_sql` (logged in as ``clipsql_filter``,
read-only, rolled back, with a deadline), so a filter can filter and join but never write.

A row whose vector is all zeros has no cosine similarity and is left out of every ranking;
a query vector of zeros or non-finite values is a :class:`QueryError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, make_dataclass
from datetime import datetime

from clipsql.database import images, user_sql
from clipsql.database.queries import SQL
from clipsql.errors import QueryError
from clipsql.query.relevance import ADAPTIVE, CANDIDATES


def _to_dict(self) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


def _field(c: images.Column):
    return (c.name, c.python | None if c.nullable else c.python)


#: One result: the ``clipsql.images`` columns of :data:`clipsql.database.images.HIT` plus
#: ``score`` (cosine similarity, higher is better) after ``path``. File facts are None for
#: rows imported without a file.
Hit = make_dataclass(
    "Hit", [_field(images.HIT[0]), _field(images.HIT[1]), ("score", float),
            *(_field(c) for c in images.HIT[2:])],
    namespace={"to_dict": _to_dict, "__module__": __name__,
               "__doc__": "One search result: the image row's columns plus ``score`` "
                          "(cosine similarity, higher is better)."})


class Results(list):
    """A list of :class:`Hit`, best first, that renders as a thumbnail grid in Jupyter.

    ``strategy`` says how it was ranked: ``index``, ``exact``, or ``index+exact`` (an index
    scan that came back short, completed by an exact scan).
    """

    strategy: str | None = None
    #: Which relevance rule cut the ranking, where: ``{"rule", "threshold", "kept",
    #: "candidates"}`` (``clipsql.relevant_ranking``, :mod:`clipsql.query.relevance`), or None.
    cutoff: dict | None = None
    #: How many candidates of the binary index were re-ranked (index kind ``binary``, an
    #: index scan), or None: ``clipsql.rank_images``' rule, fewer under a filter.
    candidates: int | None = None

    def to_json(self) -> str:
        return json.dumps([h.to_dict() for h in self], ensure_ascii=False)

    def _repr_html_(self) -> str:
        from clipsql.query.display import results_html

        return results_html(self)


#: The filter as the text the SQL functions take (:func:`user_sql.bind`).
filter_sql = user_sql.bind


def hits_sql(function: str, extra: str = "") -> str:
    """A SELECT of :class:`Hit` rows (then the ``extra`` columns) from a ranking function's
    rows ``r`` (an ``id``, a ``score`` and its ordinality ``n``), joined to the image rows,
    in the function's order (``queries.sql``'s ``hits``)."""
    first, second, rest = images.select_list(images.HIT, "i.").split(", ", 2)
    return SQL["hits"].format(first=first, second=second, rest=rest, extra=extra,
                              ranking=function)


#: The ranking :func:`find` runs: ``clipsql.relevant_ranking``'s rows as hits.
RELEVANT_SQL = hits_sql(SQL["relevant_ranking"])


def _check_limit(limit, name="limit"):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise QueryError(f"{name} must be a positive integer, not {limit!r}")


def _number(name, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise QueryError(f"{name} must be a number, not {value!r}")
    return None if value is None else float(value)


def rank(conn, query, *, where=None, params=(), limit=10, min_score=None, exclude_id=None,
         strategy="auto") -> Results:
    """The top ``limit`` rows by cosine similarity to ``query`` (a numpy vector):
    ``clipsql.rank_images``. ``strategy`` is ``auto``, ``index`` or ``exact``."""
    return find(conn, query, where=where, params=params, limit=limit, min_score=min_score,
                exclude_id=exclude_id, strategy=strategy, candidates=1)


def find(conn, query, *, limit=10, min_score=None, within=None, adaptive=None, order_by=None,
         candidates=CANDIDATES, where=None, params=(), exclude_id=None,
         strategy="auto") -> Results:
    """The relevant set of ``query`` (a numpy vector): ``clipsql.relevant_ranking``, the
    ranking with its relevance cutoffs and ordering; ``results.cutoff`` says which rule cut
    where, ``results.strategy`` how the rows were ranked."""
    from pgvector import HalfVector

    _check_limit(limit)
    _check_limit(candidates, "candidates")
    if strategy not in ("auto", "index", "exact"):
        raise QueryError(f"unknown strategy {strategy!r}")
    if adaptive is not None and adaptive not in ADAPTIVE:
        raise QueryError(f"adaptive must be one of {', '.join(ADAPTIVE)}, not {adaptive!r}")
    min_score, within = _number("min_score", min_score), _number("within", within)
    if order_by is not None and not isinstance(order_by, str):
        raise QueryError(f"order_by must be 'COLUMN [asc|desc]', not {order_by!r}")
    with user_sql.filtered(conn, where, params) as (ro, bound_filter):
        rows = ro.execute(RELEVANT_SQL, [HalfVector(query), limit, bound_filter, within,
                                         min_score, adaptive, order_by, candidates,
                                         exclude_id, strategy]).fetchall()
        plan, cutoff, binary = ro.execute(SQL["ranking_settings"]).fetchone()
    results = Results(Hit(*r) for r in rows)
    results.strategy = plan or None
    results.cutoff = json.loads(cutoff) if cutoff else None
    results.candidates = int(binary) if binary else None
    return results

