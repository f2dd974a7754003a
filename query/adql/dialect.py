"""ADQL 2.1 as a sqlglot dialect: PostgreSQL syntax plus `SELECT TOP n` and ADQL's natural `LOG`.

ADQL is a subset of SQL-92 whose remaining differences from PostgreSQL are lexical: `TOP n` after
SELECT (parsed as a LIMIT) and `LOG(x)`, which is the natural logarithm in ADQL but base 10 in
PostgreSQL. Everything else (geometry, `IN_UNIT`, the `ivo_*` functions) is parsed as ordinary function
calls and lowered afterwards by :mod:`dms.query.adql.functions` and :mod:`dms.query.adql.geometry`.
"""

from __future__ import annotations

from sqlglot.dialects.postgres import Postgres
from sqlglot.parsers.postgres import PostgresParser
from sqlglot.tokens import TokenType


class Adql(Postgres):
    """The ADQL 2.1 dialect (reading only; DMS writes PostgreSQL or DuckDB)."""

    class Tokenizer(Postgres.Tokenizer):
        KEYWORDS = {**Postgres.Tokenizer.KEYWORDS, "TOP": TokenType.TOP}  # noqa: RUF012 (sqlglot API)

    class Parser(PostgresParser):
        LOG_DEFAULTS_TO_LN = True
        # CONTAINS is ADQL's geometry predicate, not sqlglot's string CONTAINS.
        FUNCTIONS = {name: f for name, f in PostgresParser.FUNCTIONS.items() if name != "CONTAINS"}  # noqa: RUF012
