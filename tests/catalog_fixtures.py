"""Deployments with the same real data (a Gaia sample, Hipparcos, a synthetic child table) on different shard
layouts, and an unpartitioned DuckDB copy of that data: the independent answer every query is checked
against."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import sqlglot

from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, hipparcos_table, write_parquet
from dms.query.engine import QueryEngine
from dms.udfs import register_duckdb
from tests.pg_support import control_database, create_database, seed_default_shard, shard_database


@dataclass
class Sample:
    files: dict[str, Path]
    tables: dict[str, pa.Table]


def make_sample(directory: Path) -> Sample:
    gaia = gaia_table().take(pa.array(np.arange(0, 482_176, 12)))  # ~40k stars over the whole sky
    rng = np.random.default_rng(7)
    ids = gaia["source_id"].to_numpy()
    parent = np.repeat(ids, 2)
    obs = pa.table(
        {
            "obs_id": np.arange(len(parent), dtype=np.int64),
            "source_id": parent,
            "band": rng.choice(np.array(["g", "r", "i"]), len(parent)),
            "flux": rng.lognormal(5, 1, len(parent)),
            "visit": rng.integers(0, 50, len(parent)),
        }
    )
    hip = hipparcos_table().select(["hip", "ra", "dec", "hpmag", "plx", "pmra", "pmdec"])
    bands = pa.table({"band": ["g", "r", "i", "z"], "wavelength_nm": [480.0, 620.0, 750.0, 870.0]})
    tables = {"gaia": gaia, "obs": obs, "hip": hip, "bands": bands}
    files = {name: write_parquet(table, directory / f"{name}.parquet") for name, table in tables.items()}
    return Sample(files, tables)


def load_sample(deployment: Deployment, sample: Sample, *, chunk_order: int = 3) -> None:
    load_files(
        deployment,
        "gaia",
        [sample.files["gaia"]],
        progress=False,
        create=TableOptions(
            ra="ra", dec="dec", id="source_id", chunk_order=chunk_order, max_chunk_rows=2_000
        ),
    )
    load_files(
        deployment,
        "obs",
        [sample.files["obs"]],
        progress=False,
        create=TableOptions(role="child", director="gaia", director_key="source_id"),
    )
    load_files(
        deployment,
        "hip",
        [sample.files["hip"]],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="hip", like="gaia"),
    )
    load_files(
        deployment, "bands", [sample.files["bands"]], progress=False, create=TableOptions(role="replicated")
    )


def reference_connection(sample: Sample) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    register_duckdb(conn, temporary=False)
    conn.execute("CREATE SCHEMA cat")
    for name, table in sample.tables.items():
        conn.register(f"_{name}", table)
        conn.execute(f"CREATE TABLE cat.{name} AS SELECT * FROM _{name}")
    conn.execute("SET search_path = 'cat,main'")
    return conn


def reference(conn: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    duck_sql = sqlglot.transpile(sql, read="postgres", write="duckdb")[0]
    cursor = conn.cursor()
    cursor.execute("SET search_path = 'cat,main'")
    cursor.execute("SET integer_division = true")  # PostgreSQL semantics, as the engine uses
    return cursor.sql(duck_sql).to_arrow_table()


def canonical_rows(table: pa.Table, ordered: bool = False) -> list[tuple[object, ...]]:
    rows = [tuple(_canonical(v) for v in row.values()) for row in table.to_pylist()]
    return rows if ordered else sorted(rows, key=repr)


def _canonical(value: object) -> object:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        # 7 digits: float32 columns are stored as double on PostgreSQL shards, so float32 arithmetic in the
        # reference (e.g. MAX(mag) - MIN(mag)) differs from theirs after the 7th digit
        return float(f"{value:.7g}")
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value) if abs(value) < 2**53 else value
    return value


def add_postgres_shards(deployment: Deployment, uris: list[str]) -> None:
    from dms import migrate

    for i, uri in enumerate(uris):
        deployment.add_shard(ShardConfig(name=f"pg{i}", kind="postgres", url=uri))
    list(migrate.upgrade(deployment))


def new_database(server: object, *, migrated: bool = False, shard: bool = False) -> str:
    """A fresh database on the test PostgreSQL server (pgserver); its URI. With `migrated`, a control
    database already at head, with `shard` a PostgreSQL shard's (see tests/pg_support.py)."""
    if shard:
        name = shard_database(server, "t")
    else:
        name = control_database(server, "t") if migrated else create_database(server, "t")
    return server.get_uri(name)  # type: ignore[attr-defined,no-any-return]


def sample_deployment(server: object, directory: Path, sample: Sample) -> Deployment:
    """A deployment with one DuckDB and one PostgreSQL shard holding the sample, and its Gaia table again as
    gaia_pg on the PostgreSQL shard (the plan and shape-cache suites' world)."""
    from dms import migrate

    deployment = Deployment.create(directory, database_url=new_database(server, migrated=True))
    seed_default_shard(deployment, server)
    deployment.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    deployment.add_shard(ShardConfig(name="pg", kind="postgres", url=new_database(server, shard=True)))
    list(migrate.upgrade(deployment))
    load_sample(deployment, sample, chunk_order=3)
    load_files(
        deployment,
        "gaia_pg",
        [sample.files["gaia"]],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=3, storage="postgres"),
    )
    return deployment


def engines(deployment: Deployment) -> Iterator[QueryEngine]:
    engine = QueryEngine(deployment)
    try:
        yield engine
    finally:
        engine.close()
