"""ADQL 2.1 as a sqlglot dialect: PostgreSQL syntax plus `SELECT TOP n`, ADQL's natural `LOG` and its bitwise
operators.

ADQL is a subset of SQL-92 whose remaining differences from PostgreSQL are lexical: `TOP n` after
SELECT (parsed as a LIMIT), `LOG(x)`, which is the natural logarithm in ADQL but base 10 in
PostgreSQL, and `^`, which is ADQL 2.1's bitwise XOR but PostgreSQL's power. Everything else (geometry,
`IN_UNIT`, the `ivo_*` functions) is parsed as ordinary function calls and lowered afterwards by
:mod:`dms.query.adql.functions` and :mod:`dms.query.adql.geometry`; hexadecimal literals (`0x1F`, read by
sqlglot as hex strings) become integers in :mod:`dms.query.adql.bitwise`.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.parsers.postgres import PostgresParser
from sqlglot.tokens import TokenType


class Adql(Postgres):
    """The ADQL 2.1 dialect (reading only; DMS writes PostgreSQL or DuckDB)."""

    class Tokenizer(Postgres.Tokenizer):
        # PostgreSQL's `~~` (LIKE), `~*` and `~~~` operators are no part of ADQL, where `~~a` is NOT NOT a.
        KEYWORDS = {  # noqa: RUF012 (sqlglot API)
            **{k: v for k, v in Postgres.Tokenizer.KEYWORDS.items() if not (k.startswith("~") and k != "~")},
            "TOP": TokenType.TOP,
        }

    class Parser(PostgresParser):
        LOG_DEFAULTS_TO_LN = True
        # CONTAINS is ADQL's geometry predicate, not sqlglot's string CONTAINS.
        FUNCTIONS = {name: f for name, f in PostgresParser.FUNCTIONS.items() if name != "CONTAINS"}  # noqa: RUF012
        # `^` is XOR (ADQL 2.1 section 2.4), at the level of & and |, not a power; PostgreSQL's `#` stays XOR
        # for DMS's canonical SQL read again.
        BITWISE = {**PostgresParser.BITWISE, TokenType.CARET: exp.BitwiseXor}  # noqa: RUF012
        EXPONENT = {}  # noqa: RUF012
        # `~` (an RLIKE token in PostgreSQL) applies to the arithmetic expression after it (`~a + b` is
        # `~(a + b)`), as in the grammar, PostgreSQL and DuckDB; sqlglot would bind it to `a` alone.
        UNARY_PARSERS = {  # noqa: RUF012
            **PostgresParser.UNARY_PARSERS,
            TokenType.RLIKE: lambda self: self.expression(exp.BitwiseNot(this=self._parse_term())),
        }
