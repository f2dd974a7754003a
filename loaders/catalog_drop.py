"""`dms catalog drop`: remove a catalog table everywhere it lives.

The registry rows go first, in one control-database transaction (the table, its columns, loads, chunk
files, chunks, replicas and director-index rows; the statement triggers bump the registry generation, so
every engine's cached plan and snapshot sees the table gone at once). Then its data goes from every shard
(Parquet chunk files of every load and replica, PostgreSQL shard tables) and its director-index files. A
director with child tables is refused unless the children are dropped with it.
"""

from __future__ import annotations

import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from dms.deployment import Deployment
from dms.loaders.catalog_errors import LoadError
from dms.schema.catalog import CatalogError, CatalogTable, get_table, list_tables, qualified_name


class DropError(LoadError):
    """A table that cannot be dropped, or data a drop could not remove."""


@dataclass
class DropResult:
    tables: list[str]  # dropped, children first
    shards: list[str] = field(default_factory=list)  # shards whose data was removed


def load_lock_key(name: str) -> int:
    """The advisory lock loads and drops of one table hold, so they never run at the same time."""
    return zlib.crc32(f"dms.load:{name}".encode()) - 2**31


def index_dir(deployment: Deployment, table: CatalogTable) -> Path:
    """Where the director-index (and orphan-index) files of a table's loads live."""
    return deployment.data_dir / "catalog" / "_index" / table.storage_schema / table.storage_table


def dependents(conn: sa.Connection, table: CatalogTable) -> list[CatalogTable]:
    """The child tables placed by a director table."""
    return [t for t in list_tables(conn) if t.director_table == table.name]


def drop_table(deployment: Deployment, name: str, *, with_children: bool = False) -> DropResult:
    """Drop a catalog table (and, with `with_children`, the child tables of a director)."""
    name = qualified_name(name)
    with deployment.connect() as conn:
        table = get_table(conn, name)
        children = dependents(conn, table)
    if children and not with_children:
        listed = ", ".join(c.name for c in children)
        raise DropError(
            f"{table.name} is the director of {listed}: drop {'it' if len(children) == 1 else 'them'} first, "
            "or give --with-children to drop them too"
        )
    result = DropResult([])
    with deployment.engine().connect() as lock_conn:
        for victim in [*children, table]:
            key = {"k": load_lock_key(victim.name)}
            lock_conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), key)
            try:
                with deployment.connect() as conn:
                    current = get_table(conn, victim.name)  # as it is now that no load runs
                result.shards = remove_table(deployment, current)
                result.tables.append(victim.name)
            finally:
                lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), key)
                lock_conn.commit()
    return result


def shards_holding(deployment: Deployment, table: CatalogTable) -> set[str]:
    """The shards that hold something under the table's name."""
    held = set()
    for shard in deployment.shards():
        store = shard
        try:
            if store.has_table(table):
                held.add(store.name)
        finally:
            store.close()
    return held


def remove_table(
    deployment: Deployment, table: CatalogTable, *, spare: frozenset[str] = frozenset()
) -> list[str]:
    """Remove a table's registry rows and then its data on every shard but the `spare` ones (the caller
    holds its load lock). Returns the shards cleaned; raises DropError naming what could not be removed."""
    _unregister(deployment, table)
    cleaned, failures = [], []
    for shard in deployment.shards():
        store = shard
        if store.name in spare:
            continue
        try:
            store.drop_table(table)
            cleaned.append(store.name)
        except Exception as exc:  # clean the other shards all the same, then say what is left
            failures.append(f"shard {store.name}: {str(exc).splitlines()[0]}")
        finally:
            store.close()
    shutil.rmtree(index_dir(deployment, table), ignore_errors=True)
    if failures:
        raise DropError(
            f"{table.name} is no longer registered (queries cannot see it), but its data could not be "
            f"removed from {'; '.join(failures)}"
        )
    return cleaned


def _unregister(deployment: Deployment, table: CatalogTable) -> None:
    from dms.services.vo.catalog_tables import publish

    with deployment.connect() as conn:
        children = dependents(conn, table)
        if children:
            raise CatalogError(f"{table.name} still has child tables {[c.name for c in children]}")
        # tables that copied this one's layout keep their own chunks; the link would only mislead
        conn.execute(
            sa.text("UPDATE dms.catalog_table SET like_table = NULL WHERE like_table = :t"), {"t": table.name}
        )
        # columns, loads, chunk files, chunks, replicas and director-index rows go by ON DELETE CASCADE
        conn.execute(sa.text("DELETE FROM dms.catalog_table WHERE name = :t"), {"t": table.name})
        publish(conn, forget=[table.schema_name])  # TAP_SCHEMA stops describing it in the same transaction
        conn.commit()
