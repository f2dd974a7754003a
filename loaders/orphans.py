"""Child rows without a director row ("orphans"): a NULL director key, or a key the director does not hold.

Qserv partitions a child table by the position of its director row, "or by a fall-back position if an
associated Object is not guaranteed to have been assigned" (Qserv's partitioning notes). DMS offers that as
the default (`place-by-position`: the child's own `--ra`/`--dec` choose the chunk, in the director's layout),
and two stricter choices: `refuse` fails the load, `skip` leaves those rows out. Every policy reports the
count.

Placed orphans stay correct in queries: having no director row, they never join one; a query on the child
finds them by position; a query on the child by director key finds them through the child's own index of
orphans (written as the load's index file, next to the director index). A later director load that would
give an orphan its director is refused, since the orphan sits in the chunk of its own position and the join
would miss it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from dms.deployment import Deployment
from dms.loaders.catalog_errors import LoadError
from dms.loaders.partition import ChunkLayout, healpix_29, nuniq
from dms.schema.catalog import CatalogTable

ORPHAN_POLICIES = ("place-by-position", "refuse", "skip")
DEFAULT_ORPHANS = "place-by-position"


class OrphanError(LoadError):
    """Child rows without a director row that the chosen policy cannot load."""


def check_policy(policy: str) -> None:
    if policy not in ORPHAN_POLICIES:
        raise OrphanError(f"orphan policy {policy!r} is not one of {', '.join(ORPHAN_POLICIES)}")


@dataclass
class ChildPlacement:
    """Where each (kept) child row goes: its director's chunk, or for an orphan the chunk of its position."""

    rows: pa.Table  # the child rows that are loaded (without the skipped orphans)
    healpix_29: np.ndarray
    chunk: np.ndarray
    orphans: int  # rows without a director row (placed, or skipped)
    orphan_index: pa.Table | None  # (id, chunk, healpix_29) of placed orphans with a key, sorted by id


def director_index(table: CatalogTable, index_files: list[Path]) -> pa.Table:
    """The committed director index of a child table's director, sorted by id, read once per child load."""
    if not index_files:
        raise OrphanError(
            f"director table {table.director_table} has no rows yet: load it before {table.name}"
        )
    return pa.concat_tables([pq.read_table(p) for p in index_files]).sort_by("id")


def place_children(
    table: CatalogTable, data: pa.Table, index: pa.Table, layout: ChunkLayout, policy: str
) -> ChildPlacement:
    """The chunk of every child row, following `policy` for rows without a director row (`index`: the
    director's, from `director_index`)."""
    key = table.director_key_column
    assert key is not None
    ids = index["id"].to_numpy()
    no_key = np.asarray(data[key].is_null().to_numpy(zero_copy_only=False), bool)
    keys = data[key].cast(pa.int64()).fill_null(0).to_numpy()
    at = np.clip(np.searchsorted(ids, keys), 0, len(ids) - 1)
    orphan = ~((ids[at] == keys) & ~no_key)
    count = int(orphan.sum())
    positioned = bool(table.ra_column and table.dec_column)
    if count and (policy == "refuse" or (policy == "place-by-position" and not positioned)):
        raise OrphanError(_refusal(table, keys, no_key, orphan, policy, positioned))
    if count and policy == "skip":
        keep = ~orphan
        data = data.filter(pa.array(keep))
        keys, no_key, at, orphan = keys[keep], no_key[keep], at[keep], orphan[keep]
    h29 = index["healpix_29"].to_numpy()[at]
    chunk = index["chunk"].to_numpy()[at].copy()
    if positioned:
        h29 = healpix_29(
            data[table.ra_column].to_numpy(zero_copy_only=False),
            data[table.dec_column].to_numpy(zero_copy_only=False),
        )
    orphan_index = None
    if orphan.any():  # only with place-by-position: the chunk of the row's own position
        orders, pixels = layout.assign(h29[orphan])
        chunk[orphan] = nuniq(orders, pixels)
        keyed = orphan & ~no_key
        orphan_index = pa.table(
            {"id": pa.array(keys[keyed], pa.int64()), "chunk": chunk[keyed], "healpix_29": h29[keyed]}
        ).sort_by("id")
    return ChildPlacement(data, h29, chunk, count, orphan_index)


def _refusal(
    table: CatalogTable,
    keys: np.ndarray,
    no_key: np.ndarray,
    orphan: np.ndarray,
    policy: str,
    positioned: bool,
) -> str:
    key = table.director_key_column
    missing = orphan & ~no_key
    parts = []
    if missing.any():
        first = int(keys[np.flatnonzero(missing)[0]])
        parts.append(
            f"{int(missing.sum())} rows refer to objects that are not in {table.director_table} "
            f"(first {key} = {first})"
        )
    if no_key.any():
        parts.append(f"{int(no_key.sum())} rows have no {key} (NULL)")
    text = f"{table.name}: " + " and ".join(parts)
    if policy == "refuse":
        return text + (
            "; with --orphans refuse the load stops: load their director rows first, or give --orphans "
            "place-by-position (placed by their own position) or --orphans skip (left out)"
        )
    return text + (
        f"; --orphans place-by-position places them by their own position, but {table.name} has no position "
        "columns (create it with --ra and --dec), so load their director rows first or give --orphans skip"
    )


def refuse_placed_orphans(
    deployment: Deployment, conn: sa.Connection, director: CatalogTable, ids: pa.ChunkedArray
) -> None:
    """Refuse a director load that holds the key of a child row already placed as an orphan: that row sits in
    the chunk of its own position, so a chunk-local join with its new director row could miss it."""
    paths = conn.execute(
        sa.text(
            "SELECT l.table_name, l.index_path FROM dms.catalog_load l JOIN dms.catalog_table t "
            "ON t.name = l.table_name WHERE t.director_table = :d AND l.state = 'committed' "
            "AND l.index_path IS NOT NULL ORDER BY l.load_id"
        ),
        {"d": director.name},
    ).all()
    if not paths:
        return
    new_ids = pc.drop_null(ids.cast(pa.int64())).to_numpy()
    for child, path in paths:
        placed = pq.read_table(deployment.data_dir / path, columns=["id"])["id"].to_numpy()
        clash = np.intersect1d(new_ids, placed)
        if len(clash):
            raise OrphanError(
                f"{len(clash)} objects of this load (first {director.id_column} = {int(clash[0])}) are the "
                f"directors of rows of {child} that were loaded without them and placed by their own "
                f"position, where joins with their director would miss them: drop {child} "
                f"(`dms catalog drop {child} --yes`), load {director.name}, then load {child} again"
            )
