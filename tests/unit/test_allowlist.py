"""The allowlisted grammar of untrusted filters (clipsql.database.allowlist), without a
database: the payloads of issue 22 refused by name, ordinary filters accepted and printed
back, the bounds, the docs' list, and a property-based test over random fragments built from
allowed and disallowed pieces, each accepted tree walked here independently of the module."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipsql.database import allowlist, images
from clipsql.errors import QueryError
from tests.conftest import ROOT

# --- refused, by name ---------------------------------------------------------------------

PAYLOADS = [
    ("CAST(repeat('x',300000000) AS int)=1", "the function repeat"),
    ("EXISTS (SELECT 1 FROM pg_stat_activity)", "a subquery"),
    ("(SELECT count(*) FROM pg_stat_activity) > 0", "a subquery"),
    ("pg_stat_activity.query IS NOT NULL", "the qualified name pg_stat_activity.query"),
    ("pg_terminate_backend(pid) IS NOT NULL", "the function pg_terminate_backend"),
    ("pg_catalog.pg_terminate_backend(1234)", "the function pg_catalog.pg_terminate_backend"),
    ("pg_advisory_lock(4242) IS NOT NULL", "the function pg_advisory_lock"),
    ("pg_sleep(1) IS NOT NULL", "the function pg_sleep"),
    ("set_config('role','none',true) = 'x'", "the function set_config"),
    ("CAST(set_config('role','none',true) || query_to_xml('select card from public.customers',"
     "true,true,'')::text AS int) = 1", "the function"),
    ("query_to_xml('select 1', true, true, '') IS NOT NULL", "the function query_to_xml"),
    ("id IN (SELECT id FROM clipsql.images)", "a subquery"),
    ("id IN (SELECT oid FROM pg_class)", "a subquery"),
    ("'pg_class'::regclass IS NOT NULL", "a cast to regclass"),
    ("xmin::text = '1'", "the column xmin"),
    ("ctid IS NOT NULL", "the column ctid"),
    ("tableoid > 0", "the column tableoid"),
    ("embedding IS NULL", "the column embedding"),
    ("relname = 'x'", "the column relname"),
    ("true; DELETE FROM clipsql.images", "a second statement"),
    ("true; SELECT pg_sleep(10)", "a second statement"),
    ("true UNION SELECT 1", "UNION"),
    ("true ORDER BY 1", "ORDER BY"),
    ("true GROUP BY 1", "GROUP BY"),
    ("true LIMIT 1", "LIMIT"),
    ("true FOR UPDATE", "FOR UPDATE"),
    ("$1 = 1", "a parameter"),
    ("current_user = 'postgres'", "CURRENT_USER"),
    ("session_user = 'clipsql_filter'", "SESSION_USER"),
    ("id = ANY('{1,2}')", "= ANY"),
    ("path SIMILAR TO 'x%'", "SIMILAR TO"),
    ("path LIKE 'a!%' ESCAPE '!'", "LIKE pattern that is not a string literal"),
    ("path LIKE path", "LIKE pattern that is not a string literal"),
    ("path LIKE '" + "%" * 201 + "'", "LIKE pattern longer than 200"),
    ("path ~ '" + "a" * 101 + "'", "regular expression longer than 100"),
    ("path ~ '(a*)*\\1'", "back-reference"),
    ("path COLLATE \"C\" = 'a'", "COLLATE"),
    ("ARRAY[1] IS NOT NULL", "an array"),
    ("ROW(1, 2) IS NOT NULL", "a row constructor"),
    ("count(*) > 1", "the function count"),
    ("lower(path ORDER BY 1) = 'a'", "aggregate"),
    ("exif -> path IS NULL", "-> other than exif -> 'key'"),
    ("path -> 'a' IS NULL", "-> other than exif -> 'key'"),
    ("id OPERATOR(pg_catalog.=) 1", "OPERATOR(pg_catalog.=)"),
    ("width # 1 = 0", "the operator #"),
    ("CAST(id AS int[]) IS NULL", "array"),
    ("NOT " * (allowlist.MAX_DEPTH + 1) + "true", f"deeper than {allowlist.MAX_DEPTH}"),
]


@pytest.mark.parametrize(("fragment", "named"), PAYLOADS, ids=range(len(PAYLOADS)))
def test_payloads_are_refused_with_one_message_naming_them(fragment, named):
    from clipsql.web.schemas import MAX_DETAIL

    with pytest.raises(QueryError) as refused:
        allowlist.check(fragment)
    message = str(refused.value)
    assert named in message and message.startswith("this filter may not use "), message
    assert "allowed:" in message and len(message) <= MAX_DETAIL, (len(message), message)


@pytest.mark.parametrize("trick", [
    "true /* ) OR (xmin > 0",                    # an unterminated comment
    "true) OR (true",                            # leaving the parentheses clipsql adds
    "true)) UNION SELECT 1 FROM pg_class WHERE ((true",
    "width >",
    "",
    "-- only a comment",
    "'unterminated",
])
def test_syntax_tricks_are_refused_by_the_parser(trick):
    with pytest.raises(QueryError, match="bad WHERE fragment|may not use"):
        allowlist.check(trick)


def test_comments_are_gone_from_what_runs():
    assert allowlist.check("true -- ) OR (xmin > 0") == "TRUE"
    assert allowlist.check("width > 1 /* ) OR (true */ AND height > 2") == "width > 1 AND height > 2"
    assert allowlist.check("width > 1 /* nested /* ) OR ( */ true */") == "width > 1"


def test_size_nul_and_type_are_bounded():
    with pytest.raises(QueryError, match=f"longer than {allowlist.MAX_CHARS}"):
        allowlist.check("true" + " " * allowlist.MAX_CHARS)
    assert allowlist.check("true" + " " * (allowlist.MAX_CHARS - 4)) == "TRUE"
    with pytest.raises(QueryError, match="NUL"):
        allowlist.check("path = 'a\x00'")
    with pytest.raises(QueryError, match="must be text"):
        allowlist.check(1)
    # Parentheses add no depth; operators do.
    assert allowlist.check("(" * 500 + "true" + ")" * 500) == "TRUE"
    assert allowlist.check("NOT " * (allowlist.MAX_DEPTH - 1) + "true").count("NOT") == \
        allowlist.MAX_DEPTH - 1
    with pytest.raises(QueryError, match="deeper"):
        allowlist.check("1" + "+1" * 1900 + " = 1")


# --- accepted, printed back ---------------------------------------------------------------

@pytest.mark.parametrize(("fragment", "runs"), [
    ("path LIKE '%dog%' AND id % 2 = 0", "path LIKE '%dog%' AND id % 2 = 0"),
    ("format = 'PNG' -- the trailing comment goes", "format = 'PNG'"),
    ("taken_at >= date '2020-01-01' AND taken_at < '2021-01-01'::timestamp",
     "taken_at >= CAST('2020-01-01' AS date) AND taken_at < CAST('2021-01-01' AS timestamp)"),
    ("exif->>'Make' ILIKE 'canon%' OR exif->'GPS'->>'Lat' IS NOT NULL",
     "exif ->> 'Make' ILIKE 'canon%' OR exif -> 'GPS' ->> 'Lat' IS NOT NULL"),
    ("extract(year FROM taken_at) BETWEEN 2019 AND 2021", "EXTRACT(YEAR FROM taken_at) BETWEEN 2019 AND 2021"),
    ("camera_make NOT IN ('Canon', 'NIKON') AND latitude IS NULL",
     "camera_make NOT IN ('Canon', 'NIKON') AND latitude IS NULL"),
    ("coalesce(width, 0) * height > 4e6 AND lower(format) <> 'gif'",
     "COALESCE(width, 0) * height > 4e6 AND lower(format) <> 'gif'"),
    ("mtime > now() - interval '7 days' AND path ~* '\\.jpe?g$'",
     "mtime > now() - CAST('7 days' AS interval) AND path ~* '\\.jpe?g$'"),
    ("date_trunc('month', taken_at) = '2021-06-01' AND id IN (1, -2, '3'::bigint)",
     "date_trunc('month', taken_at) = '2021-06-01' AND id IN (1, -2, CAST('3' AS bigint))"),
    ("CASE WHEN width > height THEN 'landscape' ELSE 'portrait' END = 'landscape'",
     "CASE WHEN width > height THEN 'landscape' ELSE 'portrait' END = 'landscape'"),
    ("updated_at >= CURRENT_DATE AND round(latitude::numeric, 1) = 48.1",
     "updated_at >= CURRENT_DATE AND round(CAST(latitude AS numeric), 1) = 48.1"),
])
def test_ordinary_filters_are_accepted_and_printed_back(fragment, runs):
    assert allowlist.check(fragment) == runs


def test_columns_come_from_the_images_row_without_the_vector():
    assert set(allowlist.COLUMNS) == {c.name for c in images.COLUMNS} - {"embedding"}
    for name in allowlist.COLUMNS:
        assert allowlist.check(f"{name} IS NOT NULL") == f"{name} IS NOT NULL"


def test_the_docs_list_exactly_the_allowed_grammar():
    text = (ROOT / "docs" / "security-filters.md").read_text(encoding="utf-8")
    section = text[text.index("## Two modes"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section

    def listed(label):
        line = next(li for li in section.splitlines() if li.startswith(f"* **{label}**"))
        return set(re.findall(r"`([^`]+)`", line))

    assert listed("Columns") == set(allowlist.COLUMNS)
    assert listed("Functions") == set(allowlist.FUNCTIONS + allowlist.EXPRESSIONS)
    assert listed("Casts") == set(allowlist.CAST_TYPES.values())
    assert listed("Operators") == set(allowlist.OPERATORS + allowlist.LIKE_OPERATORS
                                      + allowlist.REGEX_OPERATORS + allowlist.JSON_OPERATORS)
    for bound in (allowlist.MAX_CHARS, allowlist.MAX_DEPTH, allowlist.MAX_PATTERN_CHARS,
                  allowlist.MAX_REGEX_CHARS):
        assert f"{bound:,}" in section or str(bound) in section, bound


# --- property-based: random fragments of allowed and disallowed pieces --------------------

COLUMNS = [c.name for c in images.COLUMNS if c.name != "embedding"]  # the one home, read here
BAD_LEAVES = ["xmin", "ctid", "tableoid", "embedding", "relname", "pg_class.oid", "i.path",
              "$1", "(SELECT 1)", "(SELECT count(*) FROM pg_stat_activity)", "current_user",
              "session_user", "pg_sleep(1)", "repeat('x', 3)", "set_config('a', 'b', true)",
              "pg_advisory_lock(1)", "query_to_xml('select 1', true, true, '')",
              "pg_terminate_backend(1)", "ARRAY[1]", "ROW(1, 2)", "version()", "random()",
              "'pg_class'::regclass", "pg_catalog.pg_sleep(1)", "public.f(1)", "count(*)",
              "txid_current()", "pg_read_file('/etc/hostname')", "lo_import('/etc/passwd')",
              "EXISTS (SELECT 1)", "(ARRAY[1])[1]", "path COLLATE \"C\""]
OK_TYPES = ["text", "int", "integer", "bigint", "numeric", "numeric(10, 2)", "float",
            "double precision", "date", "timestamp", "timestamptz", "boolean", "interval"]
BAD_TYPES = ["regclass", "oid", "xml", "jsonb", "int[]", "regproc", "name", "bytea", "tsvector"]
OK_OPS = ["=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||"]
BAD_OPS = ["&&", "@>", "<->", "#", "^", "|", "<<", "OPERATOR(pg_catalog.=)", "@@", "?"]
OK_FUNCS = ["lower", "upper", "length", "abs", "floor", "ceil", "round", "coalesce"]
BAD_FUNCS = ["md5", "repeat", "lpad", "pg_sleep", "set_config", "to_char", "random", "concat",
             "pg_ls_dir", "dblink", "string_agg"]

# An expression: (text, bad, kind) with kind "lit" (literal), "str" (string literal) or "expr".
string_literals = st.text(alphabet="abc %_-.", max_size=8).map(
    lambda s: ("'" + s + "'", False, "str"))
literals = st.one_of(string_literals,
                     st.integers(-10**6, 10**6).map(lambda i: (str(i), False, "lit")),
                     st.sampled_from(["TRUE", "FALSE", "NULL", "1.5"]).map(lambda t: (t, False, "lit")))
leaves = st.one_of(
    literals,
    st.sampled_from(COLUMNS).map(lambda c: (c, False, "expr")),
    st.sampled_from(["now()", "CURRENT_DATE", "LOCALTIMESTAMP", "exif ->> 'Make'",
                     "exif -> 'GPS' ->> 'lat'"]).map(lambda t: (t, False, "expr")),
    st.sampled_from(BAD_LEAVES).map(lambda t: (t, True, "expr")))


def _compound(inner):
    pair = st.tuples(inner, inner)

    def binop(ab, op, bad):
        (a, abad, _), (b, bbad, _) = ab
        return (f"({a}) {op} ({b})", abad or bbad or bad, "expr")

    def in_list(a_items):
        (a, abad, _), items = a_items
        bad = abad or any(x[1] or x[2] == "expr" for x in items)
        return (f"({a}) IN ({', '.join(x[0] for x in items)})", bad, "expr")

    def like(a_pat):
        (a, abad, _), (p, pbad, kind), op = a_pat
        return (f"({a}) {op} {p}", abad or pbad or kind != "str", "expr")

    def cast(a_t):
        (a, abad, _), (t, tbad) = a_t
        return (f"CAST(({a}) AS {t})", abad or tbad, "expr")

    def call(a_f):
        (a, abad, _), (f, fbad) = a_f
        return (f"{f}(({a}))", abad or fbad, "expr")

    def comment(a_where):
        (a, abad, kind), at = a_where
        return ((f"/* ) OR (xmin > 0 */ {a}" if at else f"{a} -- ) OR (xmin > 0\n"), abad, kind)

    return st.one_of(
        st.tuples(pair, st.sampled_from(OK_OPS + ["AND", "OR", "IS DISTINCT FROM"])).map(
            lambda x: binop(x[0], x[1], False)),
        st.tuples(pair, st.sampled_from(BAD_OPS)).map(lambda x: binop(x[0], x[1], True)),
        inner.map(lambda a: (f"NOT ({a[0]})", a[1], "expr")),
        inner.map(lambda a: (f"({a[0]}) IS NULL", a[1], "expr")),
        inner.map(lambda a: (f"({a[0]}) IS NOT NULL", a[1], "expr")),
        st.tuples(inner, inner, inner).map(lambda x: (
            f"({x[0][0]}) BETWEEN ({x[1][0]}) AND ({x[2][0]})", x[0][1] or x[1][1] or x[2][1],
            "expr")),
        st.tuples(inner, st.lists(st.one_of(literals, leaves), min_size=1, max_size=4)).map(in_list),
        st.tuples(inner, st.one_of(string_literals, leaves),
                  st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "~", "~*"])).map(like),
        st.tuples(inner, st.one_of(st.sampled_from(OK_TYPES).map(lambda t: (t, False)),
                                   st.sampled_from(BAD_TYPES).map(lambda t: (t, True)))).map(cast),
        st.tuples(inner, st.one_of(st.sampled_from(OK_FUNCS).map(lambda f: (f, False)),
                                   st.sampled_from(BAD_FUNCS).map(lambda f: (f, True)))).map(call),
        st.tuples(inner, st.booleans()).map(comment),
    )


FRAGMENTS = st.recursive(leaves, _compound, max_leaves=8)
#: What an accepted tree may hold, written here (not read from the module).
NODES = {"BoolExpr", "A_Expr", "NullTest", "BooleanTest", "ColumnRef", "String", "A_Const",
         "Integer", "Float", "Boolean", "TypeCast", "TypeName", "FuncCall", "CoalesceExpr",
         "MinMaxExpr", "SQLValueFunction", "CaseExpr", "CaseWhen"}
FUNCTION_NAMES = {"abs", "ceil", "date_part", "date_trunc", "extract", "floor", "length",
                  "lower", "now", "round", "upper"}
TYPE_NAMES = {"text", "int4", "int8", "numeric", "float8", "date", "timestamp", "timestamptz",
              "bool", "interval"}


def _tree(text):
    from pglast import parse_sql

    return parse_sql("SELECT 1 WHERE " + text)[0].stmt.whereClause


def walk(node):
    """Every dict of the tree's plain form (``node(depth=None)``), depth first."""
    stack = [node(depth=None, skip_none=True)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def names(part):
    return [s["sval"] for s in part if s.get("@") == "String"]


def assert_only_allowed(tree):
    for item in walk(tree):
        kind = item.get("@")
        if kind is None:  # an enum value
            continue
        assert kind in NODES, kind
        if kind == "ColumnRef":
            assert names(item["fields"])[0] in COLUMNS and len(item["fields"]) == 1, item
        elif kind == "FuncCall":
            assert names(item["funcname"])[-1] in FUNCTION_NAMES, item
            assert names(item["funcname"])[:-1] in ([], ["pg_catalog"]), item
        elif kind == "TypeName":
            assert names(item["names"])[-1] in TYPE_NAMES and "arrayBounds" not in item, item
        elif kind == "SQLValueFunction":
            assert "USER" not in item["op"]["name"] and "CATALOG" not in item["op"]["name"]
        elif kind == "A_Expr":
            op = names(item["name"])
            assert len(op) == 1 and op[0] not in BAD_OPS, op


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(FRAGMENTS)
def test_random_fragments_accepted_only_from_allowed_pieces(fragment):
    text, bad, _ = fragment
    try:
        runs = allowlist.check(text)
    except QueryError as refused:
        assert bad, (text, str(refused))  # nothing made only of allowed pieces is refused
        return
    assert not bad, (text, runs)
    tree = _tree(runs)
    assert_only_allowed(tree)
    assert tree == _tree(text)  # what runs is what was checked
