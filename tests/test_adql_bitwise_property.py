"""Bitwise expressions as a space (hypothesis): random trees of &, |, ^, ~, + and - over decimal and
hexadecimal literals, written in ADQL with only the brackets the documented levels need (README,
adql21.lark), evaluate on PostgreSQL and on DuckDB to what Python's integers (two's complement) give."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms.query.adql import translate
from tests.catalog_fixtures import new_database

BITWISE = {"&": int.__and__, "|": int.__or__, "^": int.__xor__}
ARITHMETIC = {"+": int.__add__, "-": int.__sub__}


@dataclass(frozen=True)
class Literal:
    value: int
    hexadecimal: bool


@dataclass(frozen=True)
class Binary:
    operator: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Invert:
    operand: Node


Node = Literal | Binary | Invert

literals = st.builds(Literal, st.integers(0, 255), st.booleans())
trees = st.recursive(
    literals,
    lambda inner: st.one_of(
        st.builds(Binary, st.sampled_from([*BITWISE, *ARITHMETIC]), inner, inner),
        st.builds(Invert, inner),
    ),
    max_leaves=12,
)


def value(node: Node) -> int:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Invert):
        return ~value(node.operand)
    operators = {**BITWISE, **ARITHMETIC}
    return operators[node.operator](value(node.left), value(node.right))


def adql(node: Node, place: str = "top") -> str:
    """`node` in ADQL, bracketed only where its place needs it: &, |, ^ alike and from the left, below + and
    -; ~ takes the arithmetic after it and may not follow + or -."""
    if isinstance(node, Literal):
        return f"0x{node.value:X}" if node.hexadecimal else str(node.value)
    if isinstance(node, Invert):
        text = "~" + adql(node.operand, "invert")
        return f"({text})" if place.startswith("arithmetic") else text
    if node.operator in BITWISE:
        text = f"{adql(node.left, 'bitwise left')} {node.operator} {adql(node.right, 'bitwise right')}"
        return text if place in ("top", "bitwise left") else f"({text})"
    text = f"{adql(node.left, 'arithmetic left')} {node.operator} {adql(node.right, 'arithmetic right')}"
    return f"({text})" if place == "arithmetic right" else text


@pytest.fixture(scope="module")
def backends(pg_server: object) -> Iterator[dict[str, Any]]:
    duck = duckdb.connect()
    duck.execute("CREATE TABLE t (x INTEGER)")
    duck.execute("INSERT INTO t VALUES (1)")
    with psycopg.connect(new_database(pg_server), autocommit=True) as pg:
        pg.execute("CREATE TABLE t (x INTEGER)")
        pg.execute("INSERT INTO t VALUES (1)")
        yield {"duckdb": duck, "postgres": pg}
    duck.close()


def test_the_brackets_are_minimal_and_mean_the_levels() -> None:
    a, b, c = Literal(6, False), Literal(3, False), Literal(8, True)
    assert adql(Binary("|", Binary("&", a, b), c)) == "6 & 3 | 0x8"
    assert adql(Binary("&", a, Binary("|", b, c))) == "6 & (3 | 0x8)"
    assert adql(Invert(Binary("+", a, b))) == "~6 + 3"
    assert adql(Binary("+", a, Invert(b))) == "6 + (~3)"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_bitwise_expressions_evaluate_as_python_integers(backends: dict[str, Any], tree: Node) -> None:
    query = f"SELECT {adql(tree)} AS v FROM t"
    expected = value(tree)
    for dialect, conn in backends.items():
        (got,) = conn.execute(translate(query, dialect)).fetchone()
        assert got == expected, (dialect, query, translate(query, dialect))
