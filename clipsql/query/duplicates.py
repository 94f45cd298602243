"""Exact and near-duplicate images, grouped.

Byte-identical files are grouped by ``sha256`` first and stand in with one representative
each. The near pairs come from the SQL function ``clipsql.near_duplicates(k, threshold)``
(migrations/0020_one_home.sql), the one home of the neighbour query and of its scan rules
(the HNSW probe per representative, the binary index's candidates, ``clipsql.ef_search_for``):
pairs with cosine similarity at or above ``threshold`` are edges, and the groups are the
connected components (union-find), here.

>>> components([(1, 2), (2, 3), (7, 8)])
[[1, 2, 3], [7, 8]]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from clipsql.database import binding
from clipsql.database.queries import SQL
from clipsql.errors import QueryError

DEFAULT_THRESHOLD = 0.97
DEFAULT_K = 10
#: The near pairs (id, other, similarity) of every representative: parameters (k, threshold).
NEAR_PAIRS_SQL = SQL["near_pairs"]


@dataclass
class DuplicateGroup:
    """Images that are copies of each other; similarities are over the edges that joined them.

    ``exact`` is True when all of them are byte-identical.
    """

    ids: list
    paths: list
    max_similarity: float
    min_similarity: float
    exact: bool

    def to_dict(self) -> dict:
        return asdict(self)


class UnionFind:
    """Disjoint sets over hashable items, with path halving and union by size."""

    def __init__(self):
        self.parent: dict = {}
        self.size: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        self.size.setdefault(x, 1)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> list[list]:
        out: dict = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return sorted((sorted(g) for g in out.values()), key=lambda g: (-len(g), g[0]))


def components(pairs) -> list[list]:
    """Connected components (each sorted) of the graph given by ``pairs`` of nodes."""
    uf = UnionFind()
    for a, b in pairs:
        uf.union(a, b)
    return uf.groups()


def find(conn, threshold: float = DEFAULT_THRESHOLD, k: int = DEFAULT_K) -> list[DuplicateGroup]:
    """Groups of duplicates in the collection, largest first."""
    import psycopg

    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise QueryError(f"the similarity threshold must be in (0, 1], not {threshold!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise QueryError(f"k (neighbours per image) must be an integer from 1 to 1000, not {k!r}")
    binding.require_model(conn)
    uf, edges, rep = UnionFind(), {}, {}
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            exact = conn.execute(SQL["duplicates_exact"]).fetchall()
            for (ids,) in exact:
                for other in ids[1:]:
                    uf.union(ids[0], other)
                    rep[other] = ids[0]
            with conn.cursor(name="clipsql_duplicates") as cur:
                cur.execute(NEAR_PAIRS_SQL, (k, float(threshold)))
                for a, b, sim in cur:
                    b = rep.get(b, b)
                    if a != b:
                        uf.union(a, b)
                        key = (min(a, b), max(a, b))
                        edges[key] = max(edges.get(key, -1.0), float(sim))
    except psycopg.Error as exc:
        raise QueryError(f"duplicate search failed: {exc.diag.message_primary or exc}") from None
    return _groups(conn, uf, edges, rep)


def _groups(conn, uf: UnionFind, edges: dict, rep: dict) -> list[DuplicateGroup]:
    groups = uf.groups()
    wanted = [i for g in groups for i in g]
    paths = dict(conn.execute(SQL["duplicates_paths"], (wanted,)).fetchall()) if wanted else {}
    root_edges: dict = {}
    for (a, _), sim in edges.items():
        root_edges.setdefault(uf.find(a), []).append(sim)
    out = []
    for g in groups:
        sims = root_edges.get(uf.find(g[0]), [])
        exact = not sims
        if any(i in rep for i in g):
            sims = sims + [1.0]
        out.append(DuplicateGroup(g, [paths.get(i) for i in g], round(max(sims), 6),
                                  round(min(sims), 6), exact))
    return out
