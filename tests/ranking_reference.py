"""Independent references of the ranking rules, for the tests only: the library has one
implementation of each, in SQL (migrations/0020_one_home.sql); these are what the tests
compare it with (worked out in numpy / plain Python, as a reader would)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from clipsql.errors import QueryError

RRF_K = 60


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K, weights=None):
    """Reciprocal rank fusion of ranked key lists (best first, each key once per list), each
    list's terms times its weight (default 1).

    Returns ``(key, score, ranks)`` best first (ties by key), ``ranks`` one 1-based rank or
    None per ranking.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise QueryError(f"rrf_k must be an integer of 0 or more, not {k!r}")
    weights = [1.0] * len(rankings) if weights is None else [float(w) for w in weights]
    ranks: dict = {}
    for n, ranking in enumerate(rankings):
        for position, key in enumerate(ranking, start=1):
            slot = ranks.setdefault(key, [None] * len(rankings))
            if slot[n] is None:
                slot[n] = position
    fused = []
    for key, found in ranks.items():
        score = 0.0
        for r, w in zip(found, weights):
            if r is not None:
                score += w / (k + r)
        fused.append((key, score, tuple(found)))
    fused.sort(key=lambda item: (-item[1], item[0]))
    return fused


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
