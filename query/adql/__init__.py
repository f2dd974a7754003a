"""The ADQL 2.1 front end: ADQL text -> DMS's canonical SQL (a PostgreSQL-dialect sqlglot AST).

`parse` returns the AST the query engine plans from; `translate` renders it for PostgreSQL or DuckDB.
"""

from dms.query.adql.errors import AdqlError, AdqlSyntaxError, AdqlUnsupportedError
from dms.query.adql.translate import DIALECTS, parse, translate

__all__ = ["DIALECTS", "AdqlError", "AdqlSyntaxError", "AdqlUnsupportedError", "parse", "translate"]
