"""The Qserv dialect: MySQL as Qserv accepts it (`--lang qserv`, TAP `LANG=QSERV` or `LANG=MYSQL`).

Read with sqlglot's MySQL dialect (backquoted names, `DIV`, `MOD()`, `&&`, `||` as OR, `<=>`, `^` as XOR,
NULLs first in ascending order); `mysql_semantics` then gives the bound query MySQL's meaning. Qserv's
extras are here too: the virtual `chunkId` and `subChunkId` columns of partitioned tables, and
`SHOW COLUMNS FROM t` / `DESCRIBE t` answered from the registry. Result columns without a name are named
as MySQL names them: by the text of their expression (`COUNT(*)`), in both SQL dialects.
"""

from __future__ import annotations

import re

import pyarrow as pa
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.postgres import Postgres
from sqlglot.generator import Generator

from dms.query.errors import QueryRefused
from dms.schema.catalog import CatalogTable

SUBCHUNK_ORDER = 12
"""DMS's sub-chunks: `subChunkId` is the row's nested HEALPix pixel at this order (about 52 arcsec)."""
VIRTUAL_COLUMNS = {"chunkid": "chunkId", "subchunkid": "subChunkId"}
_SHOW = re.compile(
    r"^\s*(?:SHOW\s+(?:FULL\s+)?(?:COLUMNS|FIELDS)\s+(?:FROM|IN)|DESC(?:RIBE)?|EXPLAIN)\s+"
    r"(`[^`]+`|[A-Za-z_][A-Za-z0-9_$]*)(?:\s*\.\s*(`[^`]+`|[A-Za-z_][A-Za-z0-9_$]*))?\s*;?\s*$",
    re.IGNORECASE,
)


def prepare(query: exp.Query) -> exp.Query:
    """MySQL's operators in the parsed tree: DIV and MOD by zero are NULL (not an error)."""
    for node in list(query.find_all(exp.IntDiv)):
        divisor = node.expression
        if not isinstance(divisor, exp.Nullif):
            divisor.replace(exp.Nullif(this=divisor.copy(), expression=exp.Literal.number(0)))
    return query


def name_outputs(query: exp.Query, text: str, dialect: str) -> None:
    """Name each unnamed, non-column result expression by its text in the query, as MySQL does
    (`SELECT COUNT(*)` -> a column `COUNT(*)`), instead of the optimizer's `_col_0`."""
    for select in query.find_all(exp.Select):
        for projection in list(select.expressions):
            if isinstance(projection, exp.Alias | exp.Column | exp.Star) or projection.is_star:
                continue
            projection.replace(
                exp.alias_(projection.copy(), _source_text(projection, text, dialect), quoted=True)
            )


def _source_text(node: exp.Expression, text: str, dialect: str) -> str:
    """The expression as written (from the token positions the parser records), else as sqlglot writes it."""
    spans = [(n.meta["start"], n.meta["end"]) for n in node.walk() if "start" in n.meta and "end" in n.meta]
    if not spans:
        return node.sql(dialect)
    start, end = min(s for s, _ in spans), max(e for _, e in spans) + 1
    written = text[start:end]
    while written.count("(") > written.count(")") and end < len(text):
        written += text[end]
        end += 1
    return written if written.count("(") == written.count(")") else node.sql(dialect)


def strip_decimal_div(query: exp.Query) -> exp.Query:
    """PostgreSQL's DIV(x, y) is read as CAST(x DIV y AS DECIMAL); the cast (DuckDB's DECIMAL(18,3)) loses
    large integers: keep the integer quotient."""
    for cast in list(query.find_all(exp.Cast)):
        if isinstance(cast.this, exp.IntDiv) and cast.to.this == exp.DataType.Type.DECIMAL:
            cast.replace(cast.this)
    return query


def _duckdb_int_div(generator: Generator, expression: exp.IntDiv) -> str:
    """DuckDB's `//` divides decimals and doubles exactly (7.5 // 2 = 3.75): DIV is the quotient truncated
    toward zero, as in MySQL and PostgreSQL."""
    quotient = exp.Div(this=expression.this.copy(), expression=expression.expression.copy())
    truncated = exp.Anonymous(this="TRUNC", expressions=[quotient])
    return generator.sql(exp.Cast(this=truncated, to=exp.DataType.build("bigint")))


def _postgres_int_div(generator: Generator, expression: exp.IntDiv) -> str:
    """PostgreSQL's DIV takes NUMERIC only (DIV(double, int) does not exist): the operands as NUMERIC."""
    operands = [exp.Cast(this=e.copy(), to=exp.DataType.build("numeric")) for e in expression.args.values()]
    return generator.sql(exp.Anonymous(this="DIV", expressions=operands))


# Extend sqlglot's generators: DIV has MySQL's meaning (the truncated quotient) on both shard kinds.
DuckDB.Generator.TRANSFORMS[exp.IntDiv] = _duckdb_int_div
Postgres.Generator.TRANSFORMS[exp.IntDiv] = _postgres_int_div


# ---- chunkId / subChunkId --------------------------------------------------------------------------------


def virtual_columns(table: CatalogTable) -> dict[str, str]:
    """The virtual columns a partitioned table has in the Qserv dialect (unless it has real ones)."""
    if not table.partitioned:
        return {}
    real = {c.name.lower() for c in table.columns}
    return {name: "bigint" for name in VIRTUAL_COLUMNS if name not in real}


def bind_virtual_columns(query: exp.Query, tables: dict[str, CatalogTable]) -> None:
    """`chunkId` is the row's chunk (its NUNIQ); `subChunkId` its order-12 HEALPix pixel."""
    for column in list(query.find_all(exp.Column)):
        table = tables.get(column.table)
        name = column.name.lower()
        if table is None or name not in virtual_columns(table):
            continue
        if name == "chunkid":
            value: exp.Expression = exp.column("_chunk", column.table)
        else:
            value = exp.BitwiseRightShift(
                this=exp.column("_healpix_29", column.table),
                expression=exp.Literal.number(2 * (29 - SUBCHUNK_ORDER)),
            )
        parent = column.parent
        if (
            isinstance(parent, exp.Alias)
            and parent.alias.lower() == name
            and parent.parent_select is not None
        ):
            parent.set("alias", exp.to_identifier(VIRTUAL_COLUMNS[name], quoted=True))
        column.replace(exp.paren(value) if not isinstance(value, exp.Column) else value)


# ---- SHOW COLUMNS / DESCRIBE -----------------------------------------------------------------------------

_MYSQL_TYPES = {
    "bool": "tinyint(1)",
    "int8": "tinyint",
    "int16": "smallint",
    "int32": "int",
    "int64": "bigint",
    "uint8": "tinyint unsigned",
    "uint16": "smallint unsigned",
    "uint32": "int unsigned",
    "float": "float",
    "double": "double",
    "string": "text",
    "binary": "blob",
}


def show_columns(text: str, tables: dict[str, CatalogTable]) -> pa.Table | None:
    """`SHOW COLUMNS FROM t` / `DESCRIBE t` (or MySQL's synonym `EXPLAIN t`) as MySQL's columns (Field,
    Type, Null, Key, Default, Extra),
    from the registry; None when the text is not such a statement."""
    match = _SHOW.match(text)
    if match is None:
        return None
    parts = [p.strip("`") for p in match.groups() if p]
    wanted = ".".join(parts).lower()
    found = [t for t in tables.values() if t.name.lower() == wanted or t.table_name.lower() == wanted]
    if len(found) != 1:
        known = ", ".join(sorted(t.name for t in tables.values()))
        problem = "is ambiguous; qualify it" if found else "is not a catalog table"
        raise QueryRefused(f"table {'.'.join(parts)!r} {problem} (catalog tables: {known or 'none'})")
    table = found[0]
    rows = [
        (c.name, _MYSQL_TYPES.get(c.datatype, c.datatype), "YES", "PRI" if c.name == table.id_column else "")
        for c in table.columns
    ]
    rows += [(VIRTUAL_COLUMNS[v], "bigint", "NO", "") for v in virtual_columns(table)]
    names = ["Field", "Type", "Null", "Key"]
    data = {n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)}
    data["Default"] = pa.array([None] * len(rows), pa.string())
    data["Extra"] = pa.array([""] * len(rows), pa.string())
    return pa.table(data)
