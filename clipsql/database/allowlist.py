"""The first wall for untrusted SQL filters: PostgreSQL's own parser, and an allowlisted grammar.

A ``WHERE`` fragment from an untrusted surface (the web page and its JSON API) is parsed by
libpg_query (through ``pglast``), the parser of PostgreSQL itself, as ``SELECT 1 WHERE
<fragment>``, and accepted only if that is one statement holding nothing but the condition,
made of: the columns of ``clipsql.images`` but the vector (:data:`COLUMNS`, from
:mod:`clipsql.database.images`), ``exif -> 'key'``/``->>`` with literal keys; literals;
:data:`OPERATORS`, ``AND``/``OR``/``NOT``, ``IN`` lists of literals, ``BETWEEN``, ``IS [NOT]
NULL``, ``CASE``; ``LIKE``/``ILIKE`` and ``~`` with bounded literal patterns; casts to
:data:`CAST_TYPES`; :data:`FUNCTIONS`, :data:`EXPRESSIONS` and the clock values
(:data:`CLOCKS`). Anything else (subqueries, other functions such as ``pg_sleep`` or
``set_config``, parameters, catalogs, system columns) is refused with one
:class:`~clipsql.errors.QueryError` naming what was found and what is allowed. The text
(:data:`MAX_CHARS`) and the expression's depth (:data:`MAX_DEPTH`) are bounded.

:func:`check` returns the condition as the parser read it, printed back: that text, without
comments, is what runs, so what runs is exactly what was checked. Trusted code (the Python
API, the local command line) keeps full SQL; both run under the filter role and the deadline
of :mod:`clipsql.database.user_sql` (docs/security-filters.md, "Two modes").

>>> check("path LIKE '%dog%' AND width > 1000 -- big ones")
"path LIKE '%dog%' AND width > 1000"
>>> check("pg_sleep(1) IS NULL")  # doctest: +ELLIPSIS
Traceback (most recent call last):
clipsql.errors.QueryError: this filter may not use the function pg_sleep; allowed: ...
"""

from __future__ import annotations

import re

from clipsql.database import images
from clipsql.errors import QueryError

#: Longest fragment accepted, in characters.
MAX_CHARS = 4000
#: Deepest expression tree accepted (``a = 1 AND (b = 2 OR c = 3)`` is 4 deep).
MAX_DEPTH = 32
#: Longest ``LIKE``/``ILIKE`` pattern, and longest regular expression, in characters.
MAX_PATTERN_CHARS = 200
MAX_REGEX_CHARS = 100

#: The columns a filter may name: every column of ``clipsql.images`` but the vector.
COLUMNS = tuple(c.name for c in images.COLUMNS if c.group != "vector")
#: The jsonb column whose keys ``->``/``->>`` may read.
JSON_COLUMN = "exif"
#: Functions (pure or stable, cheap, bounded output), called by name or through pg_catalog.
FUNCTIONS = ("abs", "ceil", "date_part", "date_trunc", "extract", "floor", "length", "lower",
             "now", "round", "upper")
#: Function-like expressions of the grammar itself.
EXPRESSIONS = ("coalesce", "greatest", "least", "nullif")
#: Cast targets: the parser's name of each type, and how the docs and messages write it.
CAST_TYPES = {"text": "text", "int4": "int", "int8": "bigint", "numeric": "numeric",
              "float8": "float", "date": "date", "timestamp": "timestamp",
              "timestamptz": "timestamptz", "bool": "boolean", "interval": "interval"}
#: Binary operators (and unary ``-``/``+``) besides the pattern and JSON ones.
OPERATORS = ("=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||")
LIKE_OPERATORS = ("~~", "~~*", "!~~", "!~~*")  # LIKE, ILIKE, NOT LIKE, NOT ILIKE
REGEX_OPERATORS = ("~", "~*", "!~", "!~*")
JSON_OPERATORS = ("->", "->>")
#: ``CURRENT_DATE`` and the other clock values (not ``CURRENT_USER`` and its kind).
CLOCKS = ("CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "LOCALTIME", "LOCALTIMESTAMP")

_PREFIX = "SELECT 1 WHERE "
_BACKREF = re.compile(r"\\[1-9]")
_NAMES = {"SubLink": "a subquery", "ParamRef": "a parameter", "A_ArrayExpr": "an array",
          "A_Indirection": "a subscript or field selection", "RowExpr": "a row constructor",
          "CollateClause": "COLLATE", "XmlExpr": "an XML expression", "A_Star": "*",
          "XmlSerialize": "an XML expression", "GroupingFunc": "GROUPING",
          "SetToDefault": "DEFAULT", "MultiAssignRef": "a multiple assignment"}
_CLAUSES = {"distinctClause": "DISTINCT", "intoClause": "INTO", "fromClause": "FROM",
            "groupClause": "GROUP BY", "groupDistinct": "GROUP BY DISTINCT",
            "havingClause": "HAVING", "windowClause": "WINDOW", "sortClause": "ORDER BY",
            "limitOffset": "OFFSET", "limitCount": "LIMIT", "limitOption": "LIMIT",
            "lockingClause": "FOR UPDATE/SHARE", "withClause": "WITH", "valuesLists": "VALUES"}


def allowed(kind: str | None = None) -> str:
    """The allowed grammar in one line, with the full list of one ``kind`` (``column``,
    ``function``, ``cast``): the second half of every refusal."""
    lists = {"column": ("columns", COLUMNS), "function": ("functions", FUNCTIONS + EXPRESSIONS),
             "cast": ("casts to", tuple(CAST_TYPES.values()))}
    grammar = (f"columns of {images.TABLE}, literals, comparisons, {' '.join(OPERATORS[7:])}, "
               "AND OR NOT, IN (literals), BETWEEN, IS [NOT] NULL, [I]LIKE, ~, "
               f"{JSON_COLUMN}->>'key', CASE, casts and functions")
    if kind not in lists:
        return grammar
    label, names = lists[kind]
    return f"{grammar}; {label}: {', '.join(sorted(names))}"


def refuse(what: str, kind: str | None = None):
    """Raise the one refusal: ``what`` was found (a ``kind`` of thing); the allowed set follows."""
    what = what if len(what) <= 80 else what[:80] + "..."
    raise QueryError(f"this filter may not use {what}; allowed: {allowed(kind)}")


def check(where: str) -> str:
    """``where`` as PostgreSQL's parser read it, printed back, if it is one condition in the
    allowed grammar; else a :class:`QueryError` naming what is not allowed."""
    from pglast import parse_sql
    from pglast.parser import ParseError
    from pglast.stream import RawStream

    if not isinstance(where, str):
        raise QueryError(f"the WHERE fragment must be text, not {type(where).__name__}")
    if len(where) > MAX_CHARS:
        raise QueryError(f"the WHERE fragment is longer than {MAX_CHARS} characters")
    if "\x00" in where:
        raise QueryError("the WHERE fragment contains a NUL character")
    try:
        statements = parse_sql(_PREFIX + where)
    except ParseError as exc:
        message, at = (exc.args + (None, None))[:2]
        where_at = f" (at character {at - len(_PREFIX) + 1})" if isinstance(at, int) else ""
        raise QueryError(f"bad WHERE fragment {_clip(where)!r}: {message}{where_at}") from None
    except Exception as exc:  # the parser's own trouble is still the fragment's
        raise QueryError(f"bad WHERE fragment {_clip(where)!r}: {exc}") from None
    if len(statements) != 1:
        refuse("a second statement (;)")
    condition = _only_condition(statements[0].stmt)
    _walk(condition)
    return RawStream()(condition)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _only_condition(stmt):
    """The WHERE clause of ``SELECT 1 WHERE ...``; any other clause is refused."""
    from pglast import ast

    if not isinstance(stmt, ast.SelectStmt):
        refuse(f"a {type(stmt).__name__} statement")
    if stmt.op:
        refuse(stmt.op.name.removeprefix("SETOP_"))
    for name in stmt:
        if name not in ("targetList", "whereClause") and getattr(stmt, name):
            refuse(_CLAUSES.get(name, name))
    if stmt.whereClause is None or len(stmt.targetList) != 1:
        refuse("a clause other than the condition")
    return stmt.whereClause


def _walk(root) -> None:
    """Refuse the first node outside the grammar, or a tree deeper than :data:`MAX_DEPTH`."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            refuse(f"an expression nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in _children(node) if child is not None)


def _children(node) -> list:
    """The sub-expressions of an allowed node (refusing any other node)."""
    from pglast import ast

    kind = type(node).__name__
    if isinstance(node, (ast.BoolExpr, ast.CoalesceExpr, ast.MinMaxExpr)):
        return list(node.args)
    if isinstance(node, ast.A_Expr):
        return _operator(node)
    if isinstance(node, (ast.NullTest, ast.BooleanTest)):
        return [node.arg]
    if isinstance(node, (ast.ColumnRef, ast.A_Const)):
        return _column(node) if isinstance(node, ast.ColumnRef) else []
    if isinstance(node, ast.TypeCast):
        _cast(node.typeName)
        return [node.arg]
    if isinstance(node, ast.FuncCall):
        return _function(node)
    if isinstance(node, ast.SQLValueFunction):
        name = node.op.name.removeprefix("SVFOP_").removesuffix("_N")
        if name not in CLOCKS:
            refuse(name)
        return []
    if isinstance(node, ast.CaseExpr):
        return [node.arg, *node.args, node.defresult]
    if isinstance(node, ast.CaseWhen):
        return [node.expr, node.result]
    refuse(_NAMES.get(kind, f"the construct {kind}"))


def _operator(node) -> list:
    from pglast.enums import A_Expr_Kind as K

    names = [n.sval for n in node.name]
    op = names[-1]
    if len(names) > 1:
        refuse(f"OPERATOR({'.'.join(names)})")
    if node.lexpr is None and not (node.kind == K.AEXPR_OP and op in ("-", "+")):
        refuse(f"the prefix operator {op}")
    if node.kind in (K.AEXPR_BETWEEN, K.AEXPR_NOT_BETWEEN, K.AEXPR_BETWEEN_SYM,
                     K.AEXPR_NOT_BETWEEN_SYM):
        return [node.lexpr, *node.rexpr]
    if node.kind in (K.AEXPR_DISTINCT, K.AEXPR_NOT_DISTINCT, K.AEXPR_NULLIF):
        return [node.lexpr, node.rexpr]
    if node.kind == K.AEXPR_IN:
        if not all(_literal(item) for item in node.rexpr):
            refuse("an IN list item that is not a literal")
        return [node.lexpr, *node.rexpr]
    if node.kind in (K.AEXPR_LIKE, K.AEXPR_ILIKE):
        _pattern(node.rexpr, MAX_PATTERN_CHARS, "LIKE pattern")
        return [node.lexpr]
    if node.kind == K.AEXPR_SIMILAR:
        refuse("SIMILAR TO")
    if node.kind in (K.AEXPR_OP_ANY, K.AEXPR_OP_ALL):
        refuse(f"{op} {'ANY' if node.kind == K.AEXPR_OP_ANY else 'ALL'} (...)")
    if node.kind != K.AEXPR_OP:
        refuse(f"the construct {node.kind.name}")
    if op in LIKE_OPERATORS:
        _pattern(node.rexpr, MAX_PATTERN_CHARS, "LIKE pattern")
        return [node.lexpr]
    if op in REGEX_OPERATORS:
        _pattern(node.rexpr, MAX_REGEX_CHARS, "regular expression")
        return [node.lexpr]
    if op in JSON_OPERATORS:
        if not _literal(node.rexpr, kinds=("String", "Integer")) or not _json_source(node.lexpr):
            refuse(f"{op} other than {JSON_COLUMN} {op} 'key'")
        return [node.lexpr]
    if op not in OPERATORS:
        refuse(f"the operator {op}")
    return [node.lexpr, node.rexpr]


def _column(node) -> list:
    from pglast import ast

    fields = node.fields
    if any(isinstance(f, ast.A_Star) for f in fields):
        refuse("*")
    name = ".".join(f.sval for f in fields)
    if len(fields) != 1:
        refuse(f"the qualified name {name}", "column")
    if name not in COLUMNS:
        refuse(f"the column {name}", "column")
    return []


def _cast(type_name) -> None:
    names = [n.sval for n in type_name.names]
    if names[0] == "pg_catalog":
        names = names[1:]
    shown = ".".join(names)
    if len(names) != 1 or names[0] not in CAST_TYPES:
        refuse(f"a cast to {shown}", "cast")
    if type_name.arrayBounds or type_name.setof or type_name.pct_type:
        refuse(f"a cast to an array or other form of {shown}")
    if any(not _literal(m, kinds=("Integer",)) for m in type_name.typmods or ()):
        refuse(f"a cast to {shown} with a modifier that is not a number")


def _function(node) -> list:
    names = [n.sval for n in node.funcname]
    name = ".".join(names)
    if names[0] == "pg_catalog":
        names = names[1:]
    if len(names) != 1 or names[0] not in FUNCTIONS:
        refuse(f"the function {name}", "function")
    if (node.agg_star or node.agg_distinct or node.agg_order or node.agg_filter or node.over
            or node.func_variadic or node.agg_within_group):
        refuse(f"{name} as an aggregate, window or variadic call")
    return list(node.args or ())


def _literal(node, kinds=None) -> bool:
    """A constant (of one of ``kinds``: ``String``, ``Integer``, ...), maybe signed or cast."""
    from pglast import ast

    while kinds is None and isinstance(node, (ast.TypeCast, ast.A_Expr)):
        if isinstance(node, ast.TypeCast):
            node = node.arg
        elif node.lexpr is None and [n.sval for n in node.name] in (["-"], ["+"]):
            node = node.rexpr
        else:
            return False
    if not isinstance(node, ast.A_Const):
        return False
    return kinds is None or (not node.isnull and type(node.val).__name__ in kinds)


def _pattern(node, limit: int, what: str) -> None:
    if not _literal(node, kinds=("String",)):
        refuse(f"a {what} that is not a string literal")
    if len(node.val.sval) > limit:
        refuse(f"a {what} longer than {limit} characters")
    if what == "regular expression" and _BACKREF.search(node.val.sval):
        refuse("a back-reference (\\1 ...) in a regular expression")


def _json_source(node) -> bool:
    """``exif``, or ``exif -> 'key'`` (a chain of ``->``)."""
    from pglast import ast

    if isinstance(node, ast.ColumnRef):
        return [getattr(f, "sval", None) for f in node.fields] == [JSON_COLUMN]
    return isinstance(node, ast.A_Expr) and [n.sval for n in node.name] == ["->"]
