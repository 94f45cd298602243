"""The zero-shot part of :class:`clipsql.Collection`: label sets, classify, flag and label
search (the work is done in :mod:`clipsql.query`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clipsql.query import label_sets, search
from clipsql.query.label_sets import DEFAULT_SET, LabelSet

if TYPE_CHECKING:
    import psycopg

    from clipsql.models.openclip import ClipModel
    from clipsql.query import zeroshot


class LabelsMixin:
    """Methods of :class:`~clipsql.Collection` on its connection and model."""

    conn: psycopg.Connection
    model: ClipModel

    def add_labels(self, labels: Sequence[str], label_set: str = DEFAULT_SET,
                   templates: Sequence[str] | None = None) -> LabelSet:
        """Add labels to a named set (created if new), embedded through the prompt templates.

        >>> db.add_labels(["cat", "dog", "car"], templates=["a photo of a {}."])  # doctest: +SKIP
        """
        return label_sets.add(self.conn, self.model, labels, label_set, templates)

    def remove_labels(self, labels: Sequence[str] | None = None,
                      label_set: str = DEFAULT_SET) -> int:
        """Remove labels from a set, or the whole set when ``labels`` is None."""
        return label_sets.remove(self.conn, label_set, labels)

    def label_sets(self) -> list[dict]:
        """Every label set: name, labels, templates, model, version, stored result rows."""
        return label_sets.sets(self.conn)

    def classify(self, labels_or_set: str | Sequence[str] = DEFAULT_SET, *,
                 where: str | None = None, params: Sequence = (), top: int | None = 1,
                 store: bool = False,
                 templates: Sequence[str] | None = None) -> zeroshot.Classification:
        """Zero-shot classify images by a set name or a list of labels.

        >>> for r in db.classify(["cat", "dog"], where="format = %s", params=["PNG"]):  # doctest: +SKIP
        ...     print(r.path, r.labels)
        """
        from clipsql.query import zeroshot

        chosen = label_sets.resolve(self.conn, self.model, labels_or_set, templates)
        return zeroshot.classify(self.conn, chosen, where=where, params=params, top=top,
                                 store=store)

    def label_search(self, label: str, label_set: str = DEFAULT_SET,
                     **kwargs) -> search.Results:
        """Images closest to a stored label's embedding (``where``, ``limit``... as in search)."""
        return search.rank(self.conn, label_sets.vector(self.conn, self.model, label, label_set),
                           **kwargs)

    def flag(self, label_set: str, threshold: float = 0.8, *,
             neutral: Sequence[str] | None = None, where: str | None = None,
             params: Sequence = ()) -> list[zeroshot.ImageLabels]:
        """Images whose probability for any label of ``label_set`` reaches ``threshold``,
        scored together with a neutral background class (``zeroshot.NEUTRAL_PROMPTS``)."""
        from clipsql.query import zeroshot

        chosen = label_sets.resolve(self.conn, self.model, label_set)
        background = zeroshot.neutral_embedding(self.model, neutral or zeroshot.NEUTRAL_PROMPTS)
        return zeroshot.flag(self.conn, chosen, threshold, neutral=background, where=where,
                             params=params)
