"""The zero-shot part of :class:`clipsql.Collection`: label sets, classify, flag, label
search and duplicates (the work is done in :mod:`clipsql.query`)."""

from __future__ import annotations

from collections.abc import Sequence

from clipsql.query import duplicates, search, zeroshot
from clipsql.query import labels as labelsets


class LabelsMixin:
    """Methods of :class:`~clipsql.Collection` that use ``self.conn`` and ``self.model``."""

    def add_labels(self, labels: Sequence[str], label_set: str = labelsets.DEFAULT_SET,
                   templates: Sequence[str] | None = None) -> labelsets.LabelSet:
        """Add labels to a named set (created if new), embedded through the prompt templates.

        >>> db.add_labels(["cat", "dog", "car"], templates=["a photo of a {}."])  # doctest: +SKIP
        """
        return labelsets.add(self.conn, self.model, labels, label_set, templates)

    def remove_labels(self, labels: Sequence[str] | None = None,
                      label_set: str = labelsets.DEFAULT_SET) -> int:
        """Remove labels from a set, or the whole set when ``labels`` is None."""
        return labelsets.remove(self.conn, label_set, labels)

    def label_sets(self) -> list[dict]:
        """Every label set: name, labels, templates, model, version, stored result rows."""
        return labelsets.sets(self.conn)

    def classify(self, labels_or_set: str | Sequence[str] = labelsets.DEFAULT_SET, *,
                 where: str | None = None, params: Sequence = (), top: int | None = 1,
                 store: bool = False,
                 templates: Sequence[str] | None = None) -> zeroshot.Classification:
        """Zero-shot classify images by a set name or a list of labelsets.

        >>> for r in db.classify(["cat", "dog"], where="format = %s", params=["PNG"]):  # doctest: +SKIP
        ...     print(r.path, r.labels)
        """
        chosen = labelsets.resolve(self.conn, self.model, labels_or_set, templates)
        return zeroshot.classify(self.conn, chosen, where=where, params=params, top=top,
                                 store=store)

    def label_search(self, label: str, label_set: str = labelsets.DEFAULT_SET,
                     **kwargs) -> search.Results:
        """Images closest to a stored label's embedding (``where``, ``limit``... as in search)."""
        return search.rank(self.conn, labelsets.vector(self.conn, self.model, label, label_set),
                           **kwargs)

    def flag(self, label_set: str, threshold: float = 0.8, *,
             neutral: Sequence[str] | None = None, where: str | None = None,
             params: Sequence = ()) -> list[zeroshot.ImageLabels]:
        """Images whose probability for any label of ``label_set`` reaches ``threshold``,
        scored together with a neutral background class (``zeroshot.NEUTRAL_PROMPTS``)."""
        chosen = labelsets.resolve(self.conn, self.model, label_set)
        background = zeroshot.neutral_embedding(self.model, neutral or zeroshot.NEUTRAL_PROMPTS)
        return zeroshot.flag(self.conn, chosen, threshold, neutral=background, where=where,
                             params=params)

    def duplicates(self, threshold: float = duplicates.DEFAULT_THRESHOLD,
                   k: int = duplicates.DEFAULT_K) -> list[duplicates.DuplicateGroup]:
        """Groups of exact (same sha256) and near-duplicate images (HNSW k-nearest, union-find)."""
        return duplicates.find(self.conn, threshold, k)
