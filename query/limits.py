"""Limits on how deeply a query may nest, checked before and right after parsing.

The parser, the binder and the SQL generators recurse over the expression tree, so a query nested too
deeply (50 parentheses or ABS() calls, a chain of 1,000 ORs or a sum of 1,000 terms, 200 nested IN
subqueries) would exhaust Python's stack or DuckDB's ``max_expression_depth`` and fail as an internal
error. Such queries are refused up front with the limit named:

* `MAX_NESTING` levels of parentheses (function calls and subqueries included), counted on the tokens,
  so the parser never recurses deeper;
* `MAX_DEPTH` levels of the parsed expression tree: a chain of ANDs, ORs or ``+`` is as deep as it is long,
  so this bounds such chains to about `MAX_DEPTH` - 10 terms (a list of values belongs in ``IN (...)``).
"""

from __future__ import annotations

from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from dms.query.errors import QueryRefused

MAX_NESTING = 32
MAX_DEPTH = 256


class QueryTooComplex(QueryRefused):
    """The query nests deeper than the engine evaluates safely."""


def check_nesting(text: str, dialect: Any = "postgres") -> None:
    """Refuse text nesting more than MAX_NESTING parentheses (before it reaches the parser)."""
    try:
        tokens = sqlglot.tokenize(text, read=dialect)
    except SqlglotError:
        return  # the parser reports the error in its usual form
    depth = deepest = 0
    for token in tokens:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
    if deepest > MAX_NESTING:
        raise QueryTooComplex(
            f"the query nests {deepest} levels of parentheses (function calls and subqueries included); "
            f"the limit is {MAX_NESTING}"
        )


def check_depth(tree: exp.Expr) -> None:
    """Refuse a parsed query whose expression tree is deeper than MAX_DEPTH (walked without recursion)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryTooComplex(
                f"the query's expressions nest more than {MAX_DEPTH} levels deep (a chain of AND, OR or "
                f"arithmetic operators counts one level per term); the limit is {MAX_DEPTH}: "
                "write a list of values as IN (...) or split the query"
            )
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.iter_expressions())


def too_complex(exc: RecursionError) -> QueryTooComplex:
    """The error for a query that still exhausted the stack (a last line of defence)."""
    return QueryTooComplex(
        f"the query is nested too deeply to evaluate; keep parentheses within {MAX_NESTING} levels and "
        f"chains of AND, OR or arithmetic within {MAX_DEPTH - 10} terms"
    )
