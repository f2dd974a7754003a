"""Composing PostgreSQL statements that name tables and columns: the one way DMS puts a name into SQL text.

A statement is a literal template whose ``{placeholders}`` are filled only with ``psycopg.sql`` objects:
names become `psycopg.sql.Identifier` (always quoted, embedded quotes doubled), SQL types must be one of the
spellings DMS itself uses (`sql_type` refuses anything else), and values never enter the text at all (pass
them as query parameters). Nothing here accepts a ready-made SQL fragment as a plain string, so a name that
holds `"a"" integer); DROP ...` stays a name. ``tests/test_security_sql.py`` checks that no module of the
query engine, the loaders or the VO executor builds SQL with an f-string, ``%`` or ``str.format``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import LiteralString

from psycopg import sql

Name = str | tuple[str, ...]
"""A name, or a dotted name given part by part (``("catalog", "gaia")`` is ``"catalog"."gaia"``)."""

# The SQL types DMS writes: a base type name, an optional (n) or (p, s), optionally an array ([]).
_TYPE = re.compile(r"^[a-z][a-z0-9_]*( [a-z][a-z0-9_]*)*( ?\(\d+( ?, ?\d+)?\))?(\[\])*$")


def ident(name: Name) -> sql.Identifier:
    """A quoted (possibly dotted) identifier."""
    parts = (name,) if isinstance(name, str) else name
    if not parts or any(not isinstance(p, str) or not p or "\x00" in p for p in parts):
        raise ValueError(f"not a valid SQL name: {name!r}")
    return sql.Identifier(*parts)


def sql_type(spelling: str) -> sql.Composable:
    """A column type such as ``double precision``, ``varchar(64)`` or ``bigint[]``; others are refused."""
    if not _TYPE.match(spelling):
        raise ValueError(f"not a SQL type DMS writes: {spelling!r}")
    return sql.SQL(spelling)  # checked against _TYPE just above


def names(items: Iterable[Name]) -> sql.Composed:
    """A comma-separated list of quoted identifiers (column lists)."""
    return sql.SQL(", ").join(ident(item) for item in items)


def column_definitions(columns: Iterable[tuple[str, str]]) -> sql.Composed:
    """``"name" type, ...`` for CREATE TABLE, from (name, type spelling) pairs."""
    return sql.SQL(", ").join(sql.SQL("{} {}").format(ident(n), sql_type(t)) for n, t in columns)


def statement(template: LiteralString, **parts: Name | sql.Composable) -> sql.Composed:
    """The template with each ``{placeholder}`` replaced: a str or tuple as a quoted identifier, a
    `psycopg.sql` object as itself. Values are never parts: pass them as parameters (``%s``)."""
    return sql.SQL(template).format(
        **{key: part if isinstance(part, sql.Composable) else ident(part) for key, part in parts.items()}
    )


def setting(name: LiteralString, value: str | int) -> sql.Composed:
    """``SET LOCAL name = 'value'`` for a fixed setting name and a value quoted as a literal."""
    return sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(str(value)))
