"""The call path of one text search passes through each clipsql module once (issue 29).

``Collection(...).search(text)`` on a loaded tiny collection is traced with
:func:`sys.setprofile`: the clipsql module of every Python call is recorded, consecutive
calls in the same module collapsed, and the sequence printed (``pytest -s`` shows it). A
module that comes back later in the sequence is a bounce: the call went down into a module,
back up, and down into it again (the binding read twice, a helper called from the wrong
layer). The model (already loaded by a first search) is traced from its public entry down:
its own modules are part of the path too.

Run it alone to see the path: ``pytest -s tests/integration/test_call_path.py``.
"""

from __future__ import annotations

import inspect
import sys

import clipsql
from clipsql.query import text_cache

#: The text searched (not embedded before: the model runs, and the vector is stored).
QUERY = "two dogs"


def _module(frame) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if name == "clipsql" or name.startswith("clipsql.") else None


def module_path(call) -> list[str]:
    """The clipsql modules ``call()`` enters, in order, consecutive repeats collapsed.

    A module is entered when a function of it is called from another module (the nearest
    clipsql frame below it is another module's, or there is none); a module calling its own
    functions stays in the same visit, and so does a generator of it resumed (a ``with``
    block's exit: the context manager was entered once).
    """
    seen: list[str] = []
    started: set[int] = set()
    alive: list = []  # keeps the generator frames, so that their ids stay theirs

    def profile(frame, event, arg):
        if event != "call" or (name := _module(frame)) is None:
            return
        if frame.f_code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE):
            if id(frame) in started:
                return
            started.add(id(frame))
            alive.append(frame)
        caller = frame.f_back
        while caller is not None and _module(caller) is None:
            caller = caller.f_back
        if (caller is None or _module(caller) != name) and (not seen or seen[-1] != name):
            seen.append(name)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return seen


def bounces(path: list[str]) -> list[str]:
    """The modules entered more than once in ``path``; the model's own modules
    (``clipsql.models.*``, whose inner path is theirs: the text tower asks the runtime for
    its session, the tokenizer for the tokens, the runtime again to normalise) count as one,
    the package ``clipsql.models``, which must be entered once too."""
    packages = [m if not m.startswith("clipsql.models.") else "clipsql.models" for m in path]
    packages = [m for i, m in enumerate(packages) if i == 0 or packages[i - 1] != m]
    return sorted({m for m in packages if packages.count(m) > 1})


def _traced(db, query: str) -> list[str]:
    """The path of a search for ``query`` (a text not seen before in this database) once a
    first search has opened the model."""
    db.search(f"a warm-up search before {query}, which opens the model")
    text_cache.clear()
    path = module_path(lambda: db.search(query, limit=5))
    assert len(db.search(query, limit=5)) == 5
    return path


def test_a_text_search_passes_through_each_module_once(dsn, tiny_model, photo_folder):
    with clipsql.connect(dsn, model=tiny_model) as db:
        db.load(photo_folder)
        requested = _traced(db, QUERY)
    with clipsql.connect(dsn) as db:  # the collection's own model, from its binding
        bound = _traced(db, "two cats")
        text_cache.clear()
        stored = module_path(lambda: db.search(QUERY, limit=5))  # in the table since the first
    print("\ncall path of a text search:\n  " + "\n  -> ".join(requested))
    for path in (requested, bound):
        assert path[0] == "clipsql.collection"
        for module in ("clipsql.service", "clipsql.database.binding", "clipsql.query.text_cache",
                       "clipsql.models.openclip", "clipsql.query.search"):
            assert module in path, (module, path)
        assert not bounces(path), f"modules entered more than once: {bounces(path)} in {path}"
    assert bound == requested
    print("a text stored before:\n  " + "\n  -> ".join(stored))
    assert not bounces(stored) and not any(m.startswith("clipsql.models") for m in stored), stored
