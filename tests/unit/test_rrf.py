"""The test oracle of reciprocal rank fusion (tests/ranking_reference.rrf) against scores
worked out by hand. The library's one implementation is SQL's, ``clipsql.hybrid_ranking``
(migrations/0020_one_home.sql): tests/integration/test_captions.py compares it with this
oracle, and tests/integration/test_sql_parity.py checks its fused scores (weights included)
from the Python API and from ``clipsql.hybrid_search``."""

from __future__ import annotations

import pytest

from clipsql.errors import QueryError
from tests.ranking_reference import rrf


def test_two_rankings_fuse_as_worked_out_by_hand():
    clip = ["a", "b", "c", "d"]
    text = ["c", "a", "e"]
    # k = 60: a = 1/61 + 1/62, c = 1/63 + 1/61, b = 1/62, e = 1/63, d = 1/64
    expected = [
        ("a", 1 / 61 + 1 / 62, (1, 2)),
        ("c", 1 / 63 + 1 / 61, (3, 1)),
        ("b", 1 / 62, (2, None)),
        ("e", 1 / 63, (None, 3)),
        ("d", 1 / 64, (4, None)),
    ]
    got = rrf([clip, text], k=60)
    assert [key for key, _, _ in got] == [key for key, _, _ in expected]
    for (key, score, ranks), (_, want, want_ranks) in zip(got, expected):
        assert score == pytest.approx(want, rel=1e-15), key
        assert ranks == want_ranks


def test_k_changes_the_weights_and_zero_is_allowed():
    # k = 0: x (rank 1 once), y (ranks 2 and 2) and z (rank 1 once) all score exactly 1.0,
    # ordered by key; w (rank 3) scores 1/3
    got = rrf([["x", "y"], ["z", "y", "w"]], k=0)
    assert got == [("x", 1.0, (1, None)), ("y", 1.0, (2, 2)), ("z", 1.0, (None, 1)),
                   ("w", 1 / 3, (None, 3))]
    # a large k flattens: rank 1 + rank 50 beats rank 2 + rank 2 at k = 60 but not at k = 0
    pair = [["a", "b"] + [f"f{i}" for i in range(47)] + ["c"], ["c", "b"]]
    at60 = {key: s for key, s, _ in rrf(pair, k=60)}
    at0 = {key: s for key, s, _ in rrf(pair, k=0)}
    assert at60["b"] > at60["c"] and at0["c"] > at0["b"]
    assert at60["c"] == pytest.approx(1 / 61 + 1 / 110)


def test_ties_are_ordered_by_key_and_missing_rankings_count_nothing():
    got = rrf([[3, 1], [1, 3]], k=60)
    assert [key for key, _, _ in got] == [1, 3]
    assert got[0][1] == got[1][1] == 1 / 61 + 1 / 62
    assert rrf([[], []]) == []
    assert rrf([[5], []], k=60) == [(5, 1 / 61, (1, None))]


def test_a_key_counts_once_per_ranking_at_its_best_rank():
    assert rrf([["a", "a", "b"]], k=60) == [("a", 1 / 61, (1,)), ("b", 1 / 63, (3,))]


def test_three_rankings():
    got = dict((key, score) for key, score, _ in rrf([["a"], ["b", "a"], ["a"]], k=10))
    assert got["a"] == pytest.approx(1 / 11 + 1 / 12 + 1 / 11)
    assert got["b"] == pytest.approx(1 / 11)


@pytest.mark.parametrize("k", [-1, 1.5, "60", True, None])
def test_k_must_be_a_non_negative_integer(k):
    with pytest.raises(QueryError, match="rrf_k"):
        rrf([["a"]], k=k)
