"""Alembic environment: runs revisions on the connection DMS hands over, or on DMS_DATABASE_URL.

`dms db upgrade` passes a live connection in `config.attributes["connection"]`; the plain `alembic` command
(with the repository's alembic.ini) falls back to the deployment in DMS_DATA_DIR.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext

import dms.migrate  # noqa: F401  (registers the DuckDB implementation of alembic's DDL operations)
from dms.schema import control_metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    # The Felis metadata takes seconds to build and only autogenerate compares against it: `dms db upgrade`
    # and `downgrade` (dms.migrate, which sets "compare" False) skip it.
    compare = config.attributes.get("compare", True)
    context.configure(
        connection=connection,
        target_metadata=control_metadata() if compare else None,
        include_schemas=True,
        include_name=_include_name,
        compare_type=True,
        render_item=_render_item,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render Felis column types as their PostgreSQL variant alone: DMS runs on PostgreSQL only, and the
    MySQL/SQLite variants Felis attaches would bloat every generated revision."""
    variants = getattr(obj, "_variant_mapping", None)
    if type_ != "type" or not variants:
        return False
    from alembic.autogenerate.render import _repr_type

    if "postgresql" in variants:
        return str(_repr_type(variants["postgresql"], autogen_context))
    plain = copy.copy(obj)
    plain._variant_mapping = {}
    return str(_repr_type(plain, autogen_context))


def _include_name(name: str | None, type_: str, parent_names: MutableMapping[Any, str | None]) -> bool:
    # Only the namespaces DMS owns take part in autogenerate comparisons.
    if type_ == "schema":
        from dms.schema import CONTROL_NAMESPACES

        return name in CONTROL_NAMESPACES
    return True


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from dms.deployment import Deployment

    with Deployment.open().engine().connect() as conn:
        _run(conn)
        conn.commit()
