"""The layout of a DuckDB/Parquet shard's chunk files for small queries: rows sorted by `_healpix_29` in
row groups with min/max statistics (a cone reads the groups its ranges touch), and a Bloom filter on the
id column (ids are not ordered within a chunk, so an id lookup could otherwise skip no row group).

Checked with DuckDB's own reading of the files (`parquet_metadata`, EXPLAIN ANALYZE) on real Gaia DR3 rows,
and the lookups' answers against pyarrow's filter of the input rows."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dms.config import ShardConfig
from dms.loaders.partition import healpix_29, nuniq
from dms.loaders.samples import gaia_table
from dms.schema.catalog import CatalogTable, Column, column_type_name
from dms.shards.parquet.backend import DuckDBShard
from dms.shards.parquet.transfer import ROW_GROUP_ROWS

CHUNK_ORDER = 0


def _rows() -> pa.Table:
    gaia = gaia_table().select(["source_id", "ra", "dec", "phot_g_mean_mag"])
    hp = healpix_29(gaia["ra"].to_numpy(), gaia["dec"].to_numpy())
    chunk = nuniq(np.full(len(hp), CHUNK_ORDER), hp >> (2 * (29 - CHUNK_ORDER)))
    rows = gaia.append_column("_healpix_29", pa.array(hp, pa.int64()))
    rows = rows.append_column("_chunk", pa.array(chunk, pa.int64()))
    rows = rows.append_column("_overlap", pa.array(np.zeros(len(hp), bool)))
    return rows.take(pa.array(np.lexsort((hp, chunk))))


def test_an_id_lookup_skips_the_row_groups_without_the_id(tmp_path: Path) -> None:
    rows = _rows()
    table = CatalogTable(
        name="t.gaia",
        role="director",
        columns=tuple(
            Column(f.name, column_type_name(f.type)) for f in rows.schema if not f.name.startswith("_")
        ),
        storage_kind="duckdb",
        chunk_order=CHUNK_ORDER,
        id_column="source_id",
        ra_column="ra",
        dec_column="dec",
    )
    shard = DuckDBShard(ShardConfig(name="d", kind="duckdb", path="d.duckdb"), tmp_path)
    files = shard.write_load(table, 1, rows)
    biggest = max(files, key=lambda f: f.row_count)
    path = str(shard.root / biggest.path)
    groups = pq.ParquetFile(path).metadata.num_row_groups
    assert biggest.row_count > 2 * ROW_GROUP_ROWS and groups >= 3
    conn = duckdb.connect()
    blooms = conn.execute(
        "SELECT path_in_schema, bloom_filter_length FROM parquet_metadata(?)", [path]
    ).fetchall()
    assert {p for p, n in blooms if n} == {"source_id"}  # the id column only, in every group
    assert sum(1 for p, n in blooms if p == "source_id" and n) == groups
    ids = pq.read_table(path, columns=["source_id"])["source_id"].to_numpy()
    rng = np.random.default_rng(4)
    ordered = np.sort(ids)
    absent = int(ordered[np.flatnonzero(np.diff(ordered) > 1)[0]] + 1)  # within every group's min/max
    for wanted in [*rng.choice(ids, 5).tolist(), absent]:
        sql = f"SELECT source_id, ra, dec FROM read_parquet('{path}') WHERE source_id = {wanted}"
        expected = rows.filter(pc.equal(rows["source_id"], wanted)).select(["source_id", "ra", "dec"])
        assert conn.execute(sql).to_arrow_table().to_pylist() == expected.to_pylist()
        profile = conn.execute("EXPLAIN ANALYZE " + sql).fetchall()[0][1]
        scanned = re.search(r"Row Groups Scanned: (\d+) / (\d+)", profile)
        assert scanned is not None, profile
        # min/max skip nothing (ids are spread over every group); the Bloom filters skip the others
        assert int(scanned.group(2)) == groups and int(scanned.group(1)) <= 1 + (groups - 1) // 4
