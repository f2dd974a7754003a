"""A load becomes visible: its chunks, replicas, files and row counts registered in one control-database
transaction (and TAP_SCHEMA rewritten in it), and the rule that places a chunk's copies on the shards."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from dms.deployment import Deployment
from dms.loaders.partition import nuniq
from dms.schema.catalog import CatalogTable
from dms.shards import ChunkFile


def replica_offset(chunk: np.ndarray | int, shard_index: int, shards: int) -> np.ndarray | int:
    """Which copy of a chunk a shard holds: 0 for the primary (shard chunk NUNIQ mod the number of shards, the
    same rule for every table, so a director and its children, and tables loaded --like each other, have
    their chunks together), 1.. for the replicas on the following shards."""
    return (shard_index - chunk) % shards


def commit_load(
    deployment: Deployment,
    table: CatalogTable,
    load_id: int,
    files: dict[str, list[ChunkFile]],
    index_path: str | None,
    rows: int,
    supersedes: list[str] | None = None,
) -> None:
    """Make the load visible: one control-database transaction. `supersedes`: the index files of earlier
    loads that the load's own index file holds too (merged into it); they stop being named in it."""
    with deployment.connect() as conn:
        if supersedes:
            conn.execute(
                sa.text(
                    "UPDATE dms.catalog_load SET index_path = NULL WHERE table_name = :t "
                    "AND state = 'committed' AND index_path = ANY(:p)"
                ),
                {"t": table.name, "p": supersedes},
            )
        register_load(conn, deployment, table, load_id, files, index_path, rows)
        conn.commit()


def register_load(
    conn: sa.Connection,
    deployment: Deployment,
    table: CatalogTable,
    load_id: int,
    files: dict[str, list[ChunkFile]],
    index_path: str | None,
    rows: int,
) -> None:
    """Register a load's chunks, replicas and files and mark it committed, in the caller's transaction (a
    release commits several tables' loads in one)."""
    for shard in deployment.shards():
        conn.execute(
            sa.text(
                "INSERT INTO dms.shard (name, kind, state, location, registered_at, state_changed_at) "
                "VALUES (:n, :k, 'active', :l, now(), now()) ON CONFLICT (name) DO NOTHING"
            ),
            {"n": shard.name, "k": shard.kind, "l": shard.location()},
        )
    names = sorted(files)
    if table.partitioned:  # the shard order that placed the chunks (see replica_offset)
        names = sorted(s.name for s in deployment.shards() if s.kind == table.storage_kind)
    chunks, file_rows = [], []
    for shard_name, chunk_files in files.items():
        for f in chunk_files:
            if f.chunk_order >= 0:
                uniq = int(nuniq(f.chunk_order, f.chunk_id))
                primary = replica_offset(uniq, names.index(shard_name), len(names)) == 0
                chunks.append(_chunk_params(table, shard_name, f, primary))
            file_rows.append(
                {
                    "l": load_id,
                    "t": table.name,
                    "s": shard_name,
                    "o": f.chunk_order,
                    "c": f.chunk_id,
                    "p": f.path,
                    "r": f.row_count,
                    "v": f.overlap_row_count,
                    "k": f.checksum,
                }
            )
    # one executemany per statement (psycopg pipelines them): a few round trips, not three per chunk file
    if chunks:
        conn.execute(sa.text(_CHUNK_SQL), chunks)
        conn.execute(sa.text(_REPLICA_SQL), chunks)
    if file_rows:
        conn.execute(
            sa.text(
                "INSERT INTO dms.chunk_file (load_id, table_name, shard, chunk_order, chunk_id, "
                "path, row_count, overlap_row_count, checksum) "
                "VALUES (:l, :t, :s, :o, :c, :p, :r, :v, :k)"
            ),
            file_rows,
        )
    conn.execute(
        sa.text(
            "UPDATE dms.catalog_load SET state = 'committed', committed_at = now(), row_count = :r, "
            "index_path = :i WHERE load_id = :l"
        ),
        {"r": rows, "i": index_path, "l": load_id},
    )
    conn.execute(
        sa.text("UPDATE dms.catalog_table SET row_count = row_count + :r WHERE name = :t"),
        {"r": rows, "t": table.name},
    )
    from dms.services.vo.catalog_tables import publish

    publish(conn)  # TAP_SCHEMA describes the table as soon as queries can see it


def _chunk_params(table: CatalogTable, shard: str, f: ChunkFile, primary: bool) -> dict[str, object]:
    return {
        "p": primary,
        "t": table.name,
        "o": f.chunk_order,
        "c": f.chunk_id,
        "r": f.row_count,
        "v": f.overlap_row_count,
        "s": shard,
    }


_CHUNK_SQL = (
    "INSERT INTO dms.chunk (table_name, chunk_order, chunk_id, healpix_29_min, healpix_29_max, "
    "row_count, overlap_row_count, created_at, updated_at) VALUES (:t, :o, :c, "
    "CAST(:c AS bigint) << (2 * (29 - :o)), ((CAST(:c AS bigint) + 1) << (2 * (29 - :o))) - 1, "
    "CASE WHEN :p THEN :r ELSE 0 END, CASE WHEN :p THEN :v ELSE 0 END, now(), now()) "
    "ON CONFLICT (table_name, chunk_order, chunk_id) DO UPDATE SET "
    "row_count = dms.chunk.row_count + CASE WHEN :p THEN :r ELSE 0 END, "
    "overlap_row_count = dms.chunk.overlap_row_count + CASE WHEN :p THEN :v ELSE 0 END, "
    "updated_at = now()"
)
_REPLICA_SQL = (
    "INSERT INTO dms.chunk_replica (table_name, chunk_order, chunk_id, shard, is_primary, state, "
    "version, row_count, updated_at) VALUES (:t, :o, :c, :s, :p, 'ready', 1, :r, now()) "
    "ON CONFLICT (table_name, chunk_order, chunk_id, shard) DO UPDATE SET "
    "row_count = coalesce(dms.chunk_replica.row_count, 0) + :r, "
    "version = dms.chunk_replica.version + 1, "
    "updated_at = now()"
)
