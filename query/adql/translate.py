"""ADQL 2.1 grammar -> parse -> check the statement -> lower functions, geometry and bitwise operators ->
check the functions.

Each step is an AST -> AST function (or a check) on sqlglot expressions; the result is DMS's canonical
SQL: a PostgreSQL-dialect sqlglot AST calling only functions that exist on both backends.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from dms.query.adql import grammar
from dms.query.adql.bitwise import lower_bitwise
from dms.query.adql.dialect import Adql
from dms.query.adql.errors import AdqlError, AdqlSyntaxError
from dms.query.adql.functions import UnitOf, check_functions, lower_functions
from dms.query.adql.geometry import RegionOf, lower_geometry
from dms.query.limits import check_depth, check_nesting, too_complex

DIALECTS = ("postgres", "duckdb")
QUERY_NODES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
# Constructs sqlglot accepts from PostgreSQL that are no part of a read-only ADQL query.
FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.Into,
    exp.Lock,
    exp.Placeholder,
    exp.Parameter,
    exp.Command,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Merge,
    exp.Set,
    exp.TruncateTable,
)


def parse(
    text: str, *, unit_of: UnitOf | None = None, region_of: RegionOf | None = None, strict: bool = True
) -> exp.Expression:
    """Parse ADQL 2.1 into one SELECT (or set operation) in DMS's canonical SQL form.

    `unit_of` resolves column units for IN_UNIT, `region_of` which columns are region columns (by default
    those named s_region; dms.query.adql.geometry). Raises AdqlSyntaxError (with line and column) for text
    that is not one valid ADQL query, and AdqlUnsupportedError for valid ADQL that DMS cannot evaluate.
    `strict=False` skips the ADQL 2.1 grammar check: only for DMS's own canonical SQL, read again.
    """
    try:
        tree = _parse_one(text, strict)
        tree = lower_functions(tree, unit_of)
        tree = lower_geometry(tree, region_of)
        tree = lower_bitwise(tree)
        check_functions(tree)
    except AdqlError as exc:
        if exc.line is None and exc.token:
            line, column = locate(text, exc.token)
            raise type(exc)(exc.message, line, column, token=exc.token) from exc
        raise
    return tree


def translate(
    text: str,
    dialect: str = "postgres",
    *,
    unit_of: UnitOf | None = None,
    region_of: RegionOf | None = None,
    strict: bool = True,
) -> str:
    """ADQL -> SQL text for `dialect` (postgres or duckdb)."""
    if dialect not in DIALECTS:
        raise AdqlError(f"unknown dialect {dialect!r}; valid: {', '.join(DIALECTS)}")
    return parse(text, unit_of=unit_of, region_of=region_of, strict=strict).sql(
        dialect=dialect, normalize_functions=False
    )


def _parse_one(text: str, strict: bool = True) -> exp.Expression:
    if not text or not text.strip():
        raise AdqlSyntaxError("the query is empty", 1, 1)
    check_nesting(text, Adql)
    if strict:
        grammar.check_once(text)
    try:
        statements = [s for s in sqlglot.parse(text, read=Adql) if s is not None]
    except RecursionError as exc:
        raise too_complex(exc) from None
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise AdqlSyntaxError(
            _describe(first.get("description", str(exc)), first.get("highlight")),
            first.get("line") or 1,
            first.get("col") or 1,
        ) from exc
    except TokenError as exc:
        raise AdqlSyntaxError(f"cannot read the query: {exc}", 1, 1) from exc
    if len(statements) != 1:
        line, column = locate(text, ";")
        raise AdqlSyntaxError(f"expected one query, got {len(statements)} statements", line, column)
    tree = statements[0]
    check_depth(tree)  # before the lowering steps, which recurse over the tree
    if not isinstance(tree, QUERY_NODES):
        word = text.split()[0]
        raise AdqlSyntaxError(
            f"expected SELECT (or WITH ... SELECT), got {word.upper()}", *locate(text, word)
        )
    for node in tree.walk():
        if isinstance(node, FORBIDDEN_NODES):
            word = node.key.upper()
            raise AdqlSyntaxError(f"{word} is not allowed in a query", *locate(text, word.split("_")[0]))
    return tree


def _describe(description: str, highlight: str | None) -> str:
    # sqlglot's messages name its own classes ("Required keyword: 'expression' missing for <class ...EQ'>").
    description = re.sub(r"<class '[\w.]+\.(\w+)'>", r"\1", description)
    return f"{description} (near {highlight!r})" if highlight else description


def locate(text: str, token: str) -> tuple[int, int]:
    """1-based line and column of the first occurrence of `token` (case-insensitive), else 1, 1."""
    match = re.search(re.escape(token), text, re.IGNORECASE)
    if match is None:
        return 1, 1
    before = text[: match.start()]
    return before.count("\n") + 1, match.start() - (before.rfind("\n") + 1) + 1
