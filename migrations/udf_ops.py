"""Install and drop the UDFs of `udfs/` from inside a revision, in the dialect of the database migrated.

The SQL sources use CREATE OR REPLACE, so a later revision that changes a function simply installs again.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op

from dms import udfs

# dialect name -> (install script, drop script)
_SCRIPTS: dict[str, tuple[Callable[[], str], Callable[[], str]]] = {
    "postgresql": (udfs.postgres_install_sql, udfs.postgres_drop_sql),
    "duckdb": (lambda: udfs.duckdb_install_sql(temporary=False), udfs.duckdb_drop_sql),
}


def install_udfs() -> None:
    op.execute(_SCRIPTS[op.get_bind().dialect.name][0]())


def drop_udfs() -> None:
    op.execute(_SCRIPTS[op.get_bind().dialect.name][1]())
