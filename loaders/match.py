"""Match tables (Qserv's "ref-match" tables, e.g. RefSrcMatch): rows relating an object of one director table
to an object of another, stored in the chunk of both objects.

Both directors must share one chunk layout (load the second `--like` the first) and the same replica count, so
a chunk of the match table sits on the shards holding that chunk of both directors. Each row is written once
in its first object's chunk (`_overlap` false) and, when its second object is in another chunk, once more
there (`_overlap` true), as Qserv's sph-partition-matches writes a match pair once per distinct chunk. A join
from either director through the match table then finds every pair in the director row's own chunk, and the
other director's row in that chunk or its overlap: every matched pair must be closer than the smaller of the
two directors' overlap radii, which the load checks (it is the table's overlap_arcsec, Qserv's ang_sep).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import healpy
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from dms.deployment import Deployment
from dms.schema.catalog import CatalogTable, Column, get_table, qualified_name

ORDER_29_NSIDE = 1 << 29
Pick = Callable[[str | None, str, bool], str | None]


def define_match(
    conn: sa.Connection, name: str, columns: tuple[Column, ...], options: object, pick: Pick
) -> CatalogTable:
    """The registry entry of a new match table, or a LoadError saying what the two directors lack."""
    from dms.loaders.catalog import LoadError

    first_name = getattr(options, "director", None)
    second_name = getattr(options, "director2", None)
    if first_name is None or second_name is None:
        raise LoadError("a match table needs --director and --director2 naming the two director tables")
    first, second = (get_table(conn, qualified_name(n)) for n in (first_name, second_name))
    for table in (first, second):
        if table.role != "director":
            raise LoadError(f"{table.name} is a {table.role} table; a match table relates two directors")
    same_layout = (
        first.name == second.name
        or first.name in (second.like_table, second.name)
        or (second.name == first.like_table)
    )
    if not same_layout or first.storage_kind != second.storage_kind or first.replicas != second.replicas:
        raise LoadError(
            f"{first.name} and {second.name} must share one chunk layout, storage and replica count for a "
            f"match table: load {second.name} with `--like {first.name}`"
        )
    return CatalogTable(
        name=name,
        role="match",
        columns=columns,
        storage_kind=first.storage_kind,
        chunk_order=first.chunk_order,
        overlap_arcsec=min(first.overlap_arcsec, second.overlap_arcsec),
        director_table=first.name,
        director_key_column=pick(getattr(options, "director_key", None), "director-key", True),
        director_table2=second.name,
        director_key2_column=pick(getattr(options, "director_key2", None), "director-key2", True),
        replicas=first.replicas,
        description=getattr(options, "description", None),
    )


def _positions(
    deployment: Deployment, director: str, keys: pa.ChunkedArray, key_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """The order-29 index and chunk of each key's object, from the director index of its committed loads."""
    from dms.loaders.catalog import LoadError, committed_index_files

    with deployment.connect() as conn:
        files: list[Path] = committed_index_files(deployment, conn, director)
    if not files:
        raise LoadError(f"director table {director} has no rows yet: load it before the match table")
    if keys.null_count:
        raise LoadError(f"{keys.null_count} rows have no {key_column}; a match row names both objects")
    index = pa.concat_tables([pq.read_table(p) for p in files]).sort_by("id")
    ids = index["id"].to_numpy()
    wanted = keys.cast(pa.int64()).to_numpy()
    at = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
    found = ids[at] == wanted
    if not found.all():
        raise LoadError(
            f"{int((~found).sum())} rows refer to objects that are not in {director} "
            f"(first {key_column} = {int(wanted[~found][0])})"
        )
    return index["healpix_29"].to_numpy()[at], index["chunk"].to_numpy()[at]


def _separation_arcsec(h29_a: np.ndarray, h29_b: np.ndarray) -> np.ndarray:
    a = np.stack(healpy.pix2vec(ORDER_29_NSIDE, h29_a, nest=True), axis=1)
    b = np.stack(healpy.pix2vec(ORDER_29_NSIDE, h29_b, nest=True), axis=1)
    return np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0))) * 3600.0


def match_rows(
    deployment: Deployment, table: CatalogTable, data: pa.Table
) -> tuple[pa.Table, np.ndarray, None]:
    """The rows to store (one copy per distinct chunk of the two objects) and each input row's first chunk."""
    from dms.loaders.catalog import LoadError

    assert table.director_table and table.director_table2
    assert table.director_key_column and table.director_key2_column
    h29_a, chunk_a = _positions(
        deployment, table.director_table, data[table.director_key_column], table.director_key_column
    )
    h29_b, chunk_b = _positions(
        deployment, table.director_table2, data[table.director_key2_column], table.director_key2_column
    )
    # the order-29 pixels are ~0.4 mas across: a pair is refused only when clearly beyond the overlap
    separation = _separation_arcsec(h29_a, h29_b)
    too_far = separation > table.overlap_arcsec + 0.001
    if too_far.any():
        first = int(np.flatnonzero(too_far)[0])
        raise LoadError(
            f"{int(too_far.sum())} matched pairs are farther apart than the directors' overlap of "
            f"{table.overlap_arcsec:g} arcsec, so they cannot be joined chunk by chunk (first: "
            f"{table.director_key_column} = {data[table.director_key_column][first]}, "
            f"{table.director_key2_column} = {data[table.director_key2_column][first]}, "
            f"{separation[first]:.3f} arcsec)"
        )
    elsewhere = np.flatnonzero(chunk_b != chunk_a)
    first_copies = _with_partitioning(data, h29_a, chunk_a, overlap=False)
    second_copies = _with_partitioning(
        data.take(pa.array(elsewhere)), h29_b[elsewhere], chunk_b[elsewhere], overlap=True
    )
    rows = pa.concat_tables([first_copies, second_copies])
    return rows.sort_by([("_chunk", "ascending"), ("_healpix_29", "ascending")]), chunk_a, None


def _with_partitioning(data: pa.Table, h29: np.ndarray, chunk: np.ndarray, *, overlap: bool) -> pa.Table:
    return (
        data.append_column("_healpix_29", pa.array(h29, pa.int64()))
        .append_column("_chunk", pa.array(chunk, pa.int64()))
        .append_column("_overlap", pa.array(np.full(len(h29), overlap, bool)))
    )
