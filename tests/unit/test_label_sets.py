"""Label math without a database or model: softmax, template averaging, result shapes,
and union-find connected components."""

import itertools

import numpy as np
import pytest

from clipsql.errors import LabelError
from clipsql.query.duplicates import UnionFind, components
from clipsql.query.label_sets import (
    LabelSet,
    average_templates,
    clean_labels,
    clean_templates,
    probabilities,
    softmax,
)
from clipsql.query.zeroshot import Classification


def test_softmax_rows_sum_to_one_and_match_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)) * 5
    p = softmax(logits)
    assert np.allclose(p.sum(axis=1), 1)
    manual = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(p, manual)


def test_softmax_is_stable_for_large_logits():
    p = softmax(np.array([[1000.0, 1001.0, 999.0]]))
    assert np.isfinite(p).all() and np.isclose(p.sum(), 1)
    assert np.allclose(p, softmax(np.array([[1.0, 2.0, 0.0]])))


def test_average_templates_normalises_each_then_the_mean():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3 * 4, 8)).astype(np.float32)  # 3 labels x 4 templates, label-major
    out = average_templates(vecs, n_templates=4)
    assert out.shape == (3, 8)
    for i in range(3):
        block = vecs[i * 4:(i + 1) * 4]
        block = block / np.linalg.norm(block, axis=1, keepdims=True)
        mean = block.mean(axis=0)
        assert np.allclose(out[i], mean / np.linalg.norm(mean), atol=1e-6)
    # One template: just the normalised vector.
    assert np.allclose(average_templates(vecs[:2], 1), vecs[:2] / np.linalg.norm(vecs[:2], axis=1, keepdims=True))


def test_probabilities_use_the_logit_scale_and_cosine():
    labels = np.eye(3, dtype=np.float32)
    ls = LabelSet("s", ["a", "b", "c"], ["{}"], labels, 100.0, "m")
    images = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.5]])  # not normalised on purpose
    p = probabilities(images, ls)
    assert np.allclose(p.sum(axis=1), 1)
    assert p[0].argmax() == 0 and p[1].argmax() == 2 and p[0, 0] > 0.999
    cold = probabilities(images, LabelSet("s", ["a", "b", "c"], ["{}"], labels, 1.0, "m"))
    assert np.allclose(cold[0], softmax(np.array([1.0, 0.0, 0.0])))


def test_label_and_template_validation():
    assert clean_labels([" cat", "dog", "cat"]) == ["cat", "dog"]
    assert clean_labels("a screenshot") == ["a screenshot"]
    for bad in ([], [""], ["  "], [None], ["a\x00b"]):
        with pytest.raises(LabelError):
            clean_labels(bad)
    assert clean_templates(["a photo of a {}.", "art of {}"]) == ["a photo of a {}.", "art of {}"]
    for bad in (["no placeholder"], ["{} and {}"], []):
        with pytest.raises(LabelError, match="template"):
            clean_templates(bad)


def test_classification_iterates_best_labels_per_image():
    c = Classification("s", 3, ["cat", "dog"], np.array([4, 9]), ["/a.png", "/b.png"],
                       np.array([[1, 0], [0, 1]]), np.array([[0.7, 0.3], [0.6, 0.4]], np.float32))
    rows = list(c)
    assert [r.id for r in rows] == [4, 9] and c.computed == 2
    assert rows[0].labels[0][0] == "dog" and rows[0].labels[0][1] == pytest.approx(0.7)
    assert rows[1].to_dict()["labels"][1] == {"label": "dog", "probability": pytest.approx(0.4)}


def _bfs_components(nodes, edges):
    adj = {n: set() for n in nodes}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, out = set(), []
    for n in sorted(nodes):
        if n in seen:
            continue
        stack, comp = [n], []
        seen.add(n)
        while stack:
            x = stack.pop()
            comp.append(x)
            for y in adj[x] - seen:
                seen.add(y)
                stack.append(y)
        out.append(sorted(comp))
    return sorted(out, key=lambda g: (-len(g), g[0]))


def test_components_small_cases():
    assert components([]) == []
    assert components([(1, 2), (3, 4), (2, 3), (9, 8)]) == [[1, 2, 3, 4], [8, 9]]
    assert components([(5, 5)]) == [[5]]
    uf = UnionFind()
    uf.union("a", "b")
    assert uf.find("a") == uf.find("b") != uf.find("c")


def test_components_match_breadth_first_search_on_random_graphs():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        edges = [tuple(int(x) for x in rng.integers(0, n, 2)) for _ in range(int(rng.integers(0, n)))]
        nodes = set(itertools.chain.from_iterable(edges))
        assert components(edges) == _bfs_components(nodes, edges)
