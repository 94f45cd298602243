"""Relevance: the names and defaults of the cutoffs and orderings a search takes.

The rules themselves live once, in SQL: ``clipsql.relevant_ranking``
(``migrations/0020_one_home.sql``), which every surface calls (the Python API through
:func:`clipsql.query.search.find`, the CLI, the web server, psycopg, SQLAlchemy, psql).
A fixed cosine threshold means different things for different queries and models, so
besides ``min_score`` (absolute) there are rules relative to the query's own scores:

* ``within=D``: keep hits scoring at least ``best - D``;
* ``adaptive="gap"``: among the top 100 scores, cut at the largest drop between two
  neighbours when that drop is at least 3 times the median drop; no clear break, no cut;
* ``adaptive="zscore"``: keep scores at least one standard deviation above the mean of the
  top 100 scores.

Rules combine: a hit is kept only if every given rule keeps it; what is kept is always a
prefix of the ranking. ``order_by="COLUMN [asc|desc]"`` then orders the relevant set
(NULLs last, ties by score then id).
"""

from __future__ import annotations

ADAPTIVE = ("gap", "zscore")
#: How many of the best hits a relative cutoff or an ordering looks at by default (the
#: default of ``clipsql.relevant_ranking``'s and ``clipsql.relevant_images``' ``candidates``).
CANDIDATES = 200
