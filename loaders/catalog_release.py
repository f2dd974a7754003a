"""Several tables loaded as one: a data release's Object, Source, ForcedSource, Visit and CcdVisit become
visible to queries in one control-database transaction, replacing what the same tables held before.

Each table's rows are conformed, partitioned and written to the shards as an uncommitted load (as `dms
load` does); directors come first, so their children are placed by the director index this very release
writes. Then one transaction registers every new load, and removes the tables' earlier loads from the
registry: a query sees the old release or the new one, never a mixture. The earlier loads' shard files are
deleted afterwards (nothing names them any more). A failure before the commit discards the new loads and
leaves the old release in place.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from dms.deployment import Deployment
from dms.loaders.catalog import (
    LoadResult,
    TableOptions,
    _begin_load,
    _discard_load,
    _discard_stale_loads,
    _ensure_table,
    _index_path,
    _index_relative,
    _layout_and_index,
    _Placer,
    _stores,
)
from dms.loaders.catalog_commit import register_load, replica_offset
from dms.loaders.catalog_drop import load_lock_key
from dms.loaders.catalog_errors import LoadError
from dms.loaders.catalog_stream import IndexSpool, PositionSpool, conform_batch
from dms.loaders.orphans import DEFAULT_ORPHANS
from dms.loaders.partition import ChunkLayout
from dms.schema.catalog import CatalogTable, qualified_name
from dms.shards import ChunkFile

log = logging.getLogger(__name__)


@dataclass
class TablePart:
    """One table of a release: its name, rows, and how to create it the first time."""

    name: str
    data: pa.Table
    options: TableOptions


class _InMemory:
    """A release table's rows (already in memory) as the loader's streaming source: one batch."""

    def __init__(self, data: pa.Table) -> None:
        self.data = data

    def batches(self, table: CatalogTable, columns: list[str] | None = None) -> Iterator[pa.Table]:
        wanted = [c for c in table.columns if columns is None or c.name in columns]
        by_lower = {n.lower(): n for n in self.data.column_names}
        missing = [c.name for c in wanted if c.name.lower() not in by_lower]
        if missing:
            raise LoadError(f"the rows for {table.name} lack the columns {missing}")
        yield conform_batch(wanted, self.data.select([by_lower[c.name.lower()] for c in wanted]))


@dataclass
class _Prepared:
    table: CatalogTable
    load_id: int
    files: dict[str, list[ChunkFile]] = field(default_factory=dict)
    index_path: str | None = None
    rows: int = 0
    layout: ChunkLayout | None = None


def load_release(deployment: Deployment, parts: list[TablePart], *, tag: str) -> list[LoadResult]:
    """Load `parts` so that all become visible together, replacing the tables' earlier rows. `tag` names
    the release version (it goes into each load's checksum, so a repeated release is a new load)."""
    names = sorted(qualified_name(p.name) for p in parts)
    if len(set(names)) != len(names):
        raise LoadError(f"a release names a table twice: {names}")
    engine = deployment.engine()
    with engine.connect() as lock_conn:
        for name in names:
            lock_conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": load_lock_key(name)})
        prepared: list[_Prepared] = []
        try:
            for part in sorted(parts, key=lambda p: p.options.role != "director"):
                prepared.append(_prepare(deployment, part, prepared, tag))
            old = _commit_all(deployment, prepared)
        except Exception:
            for p in prepared:
                _discard_load(deployment, p.table, p.load_id)
            raise
        finally:
            for name in names:
                lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": load_lock_key(name)})
            lock_conn.commit()
    for p in prepared:
        for load_id in old.get(p.table.name, []):
            _remove_files(deployment, p.table, load_id)
    return [
        LoadResult(p.table.name, p.load_id, p.rows, chunks=sum(len(f) for f in p.files.values()))
        for p in prepared
    ]


def _prepare(deployment: Deployment, part: TablePart, done: list[_Prepared], tag: str) -> _Prepared:
    name = qualified_name(part.name)
    table, _ = _ensure_table(deployment, name, part.data, part.options)
    source = _InMemory(part.data)
    data = next(source.batches(table))
    digest = hashlib.sha256(f"release:{tag}:{table.name}:{data.num_rows}".encode())
    load_id, state = _begin_load(deployment, table, digest.hexdigest(), [])
    if state == "committed":
        raise LoadError(f"release {tag!r} of {table.name} is already loaded; name the new version anew")
    _discard_stale_loads(deployment, table, keep=load_id)
    result = _Prepared(table, load_id)
    spool_root = deployment.data_dir / "catalog" / "_spool"
    spool_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool_root, prefix=f"release{load_id}-") as spool_dir:
        with deployment.connect() as conn:
            layout, index_files = _layout_and_index(
                deployment, conn, table, source, PositionSpool(Path(spool_dir) / "_positions")
            )
        if table.role == "child":
            director = next((p for p in done if p.table.name == table.director_table), None)
            if director is None:
                raise LoadError(
                    f"{table.name}: its director {table.director_table} is not part of the release"
                )
            # children follow this release's director rows, not the ones it replaces
            index_files = [_index_path(deployment, director.table, director.load_id)]
            if director.layout is not None:
                layout = director.layout
        result.layout = layout
        placed = _Placer(deployment, table, layout, index_files, DEFAULT_ORPHANS).place(data)
        rows = placed.rows
        shards = _stores(deployment, table)
        chunk = rows["_chunk"].to_numpy() if table.partitioned else None
        for shard_index, store in enumerate(shards):
            part_rows = rows
            if table.partitioned and len(shards) > 1:
                assert chunk is not None
                part_rows = rows.filter(
                    pa.array(replica_offset(chunk, shard_index, len(shards)) < table.replicas)
                )
            if table.partitioned and part_rows.num_rows == 0:
                continue
            result.files[store.name] = store.write_load(table, load_id, part_rows)
            store.close()
        index = IndexSpool(Path(spool_dir) / "_index", unique=table.role == "director")
        index.add(placed.index)
        if index.write(_index_path(deployment, table, load_id), table.id_column or "id"):
            result.index_path = str(_index_relative(table, load_id))
    result.rows = placed.row_count
    return result


def _commit_all(deployment: Deployment, prepared: list[_Prepared]) -> dict[str, list[int]]:
    """One transaction: the new loads registered, the tables' earlier loads unregistered."""
    old: dict[str, list[int]] = {}
    with deployment.connect() as conn:
        for p in prepared:
            ids = conn.execute(
                sa.text(
                    "SELECT load_id FROM dms.catalog_load WHERE table_name = :t AND state = 'committed' "
                    "AND load_id <> :l"
                ),
                {"t": p.table.name, "l": p.load_id},
            ).scalars()
            old[p.table.name] = [int(i) for i in ids]
            if old[p.table.name]:
                conn.execute(
                    sa.text("DELETE FROM dms.chunk_file WHERE load_id = ANY(:ids)"),
                    {"ids": old[p.table.name]},
                )
                conn.execute(
                    sa.text("DELETE FROM dms.catalog_load WHERE load_id = ANY(:ids)"),
                    {"ids": old[p.table.name]},
                )
            conn.execute(
                sa.text("UPDATE dms.catalog_table SET row_count = 0 WHERE name = :t"), {"t": p.table.name}
            )
            register_load(conn, deployment, p.table, p.load_id, p.files, p.index_path, p.rows)
        conn.commit()
    return old


def _remove_files(deployment: Deployment, table: CatalogTable, load_id: int) -> None:
    for store in _stores(deployment, table):
        try:
            store.discard_load(table, load_id)
        except Exception as exc:  # the release is committed; a leftover file is only wasted space
            log.warning(
                "could not remove replaced load %s of %s on %s: %s", load_id, table.name, store.name, exc
            )
        finally:
            store.close()
    Path(_index_path(deployment, table, load_id)).unlink(missing_ok=True)
