"""Reembed: switch a collection to another model without downtime (docs/reembed.md).

The whole feature lives here: :func:`reembed` (``Collection.reembed``, ``clipsql
reembed``) orchestrates; :mod:`~clipsql.reembed.switch` adds the new column, fills it and
swaps it in one short transaction; :mod:`~clipsql.reembed.rows` embeds the rows;
:mod:`~clipsql.reembed.texts` computes and moves the labels' and stored texts' embeddings.
Every surface follows the switch through its query service (:mod:`clipsql.service`).
"""

from __future__ import annotations

from clipsql import config
from clipsql.database import binding
from clipsql.errors import QueryError
from clipsql.reembed.switch import ReembedReport, drop_old_data, progress

__all__ = ["ReembedReport", "progress", "reembed"]


def reembed(conn, service, model_spec: str | None = None, *, drop_old: bool = False,
            batch_size: int = config.BATCH_SIZE, workers: int | None = None,
            processes: bool = False, progress=None, cancel: bool = False,
            steps=None) -> ReembedReport:
    """Switch the collection on ``conn`` to the model ``model_spec``; ``service`` (the
    collection's :class:`~clipsql.service.QueryService`) opens it and uses it from then on.

    The new embeddings are built beside the current ones (searches keep the current model
    meanwhile), then one short transaction switches images, labels and stored texts. A
    killed run resumes when run again with the same model. The replaced vectors are kept
    in ``clipsql.reembed_old`` unless ``drop_old``; with no ``model_spec``,
    ``drop_old=True`` removes those kept before. ``cancel=True`` gives up an unfinished
    reembed (its new column is dropped). ``progress(done, total)`` follows the rows;
    ``steps(what)`` is told each step before and after them (the new model's one-time
    export included). The new model is prepared before anything is written: a model that
    cannot be had (offline) leaves no unfinished reembed behind.

    >>> db.reembed("ViT-L-14/openai")                                # doctest: +SKIP
    """
    from clipsql.reembed import switch

    if cancel:
        return switch.cancel(conn)
    if model_spec is None:
        if not drop_old:
            raise QueryError("name the model to reembed with (or drop the old vectors)")
        report = ReembedReport(model=binding.bound_model(conn), previous=None, state="dropped")
        report.old_dropped = drop_old_data(conn)
        return report
    model = service.open(model_spec)
    report = switch.run(conn, model, drop_old=drop_old, batch_size=batch_size,
                        workers=workers, processes=processes, progress=progress, steps=steps)
    service.pin(model)
    return report
