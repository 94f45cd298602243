"""Relevance: cutoffs that carry across queries and models (with a report of where they
cut), and the ordering of the relevant set by a column ("my beach photos, newest first").

A fixed cosine threshold means different things for different queries and models, so
besides ``min_score`` (absolute) there are rules relative to the query's own scores:

* ``within=D``: keep hits scoring at least ``best - D``;
* ``adaptive="gap"``: among the top ``window`` scores, cut at the largest drop between two
  neighbours when that drop is at least ``GAP_FACTOR`` times the median drop (a clear
  break between what matches and what does not); no clear break, no cut;
* ``adaptive="zscore"``: keep scores at least ``Z`` standard deviations above the mean of
  the top ``window`` scores.

Rules combine: a hit is kept only if every given rule keeps it. Each rule applies to the
candidates in score order, so what is kept is always a prefix of the ranking.

>>> c = Cutoff(within=0.05)
>>> c.apply([0.31, 0.30, 0.27, 0.20])
(3, {'rule': 'within', 'threshold': 0.26, 'kept': 3, 'candidates': 4})
>>> Cutoff(adaptive="gap").apply([0.32, 0.31, 0.305, 0.30, 0.21, 0.205, 0.20])[0]
4
>>> parse_order("taken_at desc")
('taken_at', True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clipsql.database import images
from clipsql.errors import QueryError

ADAPTIVE = ("gap", "zscore")
GAP_FACTOR = 3.0
Z = 1.0
WINDOW = 100
#: How many of the best hits a relative cutoff or an ordering looks at by default; also
#: ``clipsql.relevant_images``'s default (migrations 0012, 0014: the same ``min_score`` and
#: ``within`` rules, run beside these by tests/integration/test_sql_parity.py).
CANDIDATES = 200


@dataclass(frozen=True)
class Cutoff:
    min_score: float | None = None
    within: float | None = None
    adaptive: str | None = None
    window: int = WINDOW

    def __post_init__(self):
        for name in ("min_score", "within"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise QueryError(f"{name} must be a number, not {value!r}")
        if self.within is not None and self.within < 0:
            raise QueryError(f"within must be >= 0, not {self.within!r}")
        if self.adaptive is not None and self.adaptive not in ADAPTIVE:
            raise QueryError(f"adaptive must be one of {', '.join(ADAPTIVE)}, not {self.adaptive!r}")

    @property
    def relative(self) -> bool:
        """Whether a rule needs the query's own score distribution (more candidates)."""
        return self.within is not None or self.adaptive is not None

    def apply(self, scores) -> tuple[int, dict | None]:
        """How many of ``scores`` (best first) to keep, and the report of the rule that cut."""
        scores = [float(s) for s in scores]
        keep, report = len(scores), None
        for rule, threshold in self._thresholds(scores):
            n = sum(1 for s in scores if s >= threshold - 1e-12)
            if n < keep or report is None:
                keep = min(keep, n)
                report = {"rule": rule, "threshold": round(threshold, 6), "kept": keep,
                          "candidates": len(scores)}
        return keep, report

    def _thresholds(self, scores):
        if self.min_score is not None:
            yield "min_score", float(self.min_score)
        if not scores:
            return
        if self.within is not None:
            yield "within", scores[0] - float(self.within)
        top = np.asarray(scores[:self.window])
        if self.adaptive == "zscore" and len(top) > 2 and top.std() > 0:
            yield "zscore", float(top.mean() + Z * top.std())
        if self.adaptive == "gap" and len(top) > 2:
            drops = top[:-1] - top[1:]
            i = int(np.argmax(drops))
            if drops[i] > 0 and drops[i] >= GAP_FACTOR * float(np.median(drops)):
                yield "gap", float(top[i])


#: Columns a search can be ordered by: a hit's columns (``score`` too).
ORDERABLE = ("score", *(c.name for c in images.HIT))


def parse_order(order_by: str) -> tuple[str, bool]:
    """``"COLUMN [asc|desc]"`` as (column, descending); QueryError for anything else."""
    words = str(order_by).split()
    if not words or len(words) > 2 or words[0] not in ORDERABLE \
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
        raise QueryError(f"order_by must be 'COLUMN [asc|desc]' with a column of "
                         f"{', '.join(ORDERABLE)}; not {order_by!r}")
    return words[0], len(words) == 2 and words[1].lower() == "desc"


def ordered(hits, order_by: str):
    """``hits`` ordered by a column (NULLs last, ties by score then id)."""
    column, descending = parse_order(order_by)
    by_score = sorted(hits, key=lambda h: (-h.score, h.id))
    present = [h for h in by_score if getattr(h, column) is not None]
    missing = [h for h in by_score if getattr(h, column) is None]
    present.sort(key=lambda h: getattr(h, column), reverse=descending)  # stable: ties keep score order
    return present + missing
