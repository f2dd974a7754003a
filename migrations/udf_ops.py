"""Install and drop the UDFs of `udfs/` from inside a revision, in the dialect of the database migrated.

The SQL sources use CREATE OR REPLACE, so a later revision that changes a function simply installs again.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op

from dms import udfs


def _duckdb_drop_sql() -> str:
    return udfs.duckdb_drop_sql()


_INSTALL: dict[str, Callable[[], str]] = {
    "postgresql": udfs.postgres_install_sql,
    "duckdb": lambda: udfs.duckdb_install_sql(temporary=False),
}
_DROP: dict[str, Callable[[], str]] = {
    "postgresql": udfs.postgres_drop_sql,
    "duckdb": _duckdb_drop_sql,
}


def install_udfs() -> None:
    op.execute(_INSTALL[op.get_bind().dialect.name]())


def drop_udfs() -> None:
    op.execute(_DROP[op.get_bind().dialect.name]())
