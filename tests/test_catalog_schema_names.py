"""Names that are ADQL (issue 17): tables load into `cat` (or the schema `dms load --schema` names, a regular
ADQL identifier), migration c0024 renames the `catalog.*` tables of older deployments to `cat.*` keeping
their stored rows, and `catalog.x` still resolves, with a deprecation warning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import write_parquet
from dms.query.adql.frames import collect_notes
from dms.query.engine import QueryEngine
from dms.schema.catalog import CatalogError, new_table_name
from tests.pg_support import control_database, drop_database, seed_default_shard


@pytest.fixture()
def deployment(tmp_path: Path, pg_server: Any) -> Iterator[Deployment]:
    """Two DuckDB shards; the control database on the session's server (a copy at head, as is shard0)."""
    name = control_database(pg_server, "names")
    dep = Deployment.create(tmp_path / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(dep, pg_server)
    dep.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    migrate.upgrade(dep)
    yield dep
    dep.dispose()
    drop_database(pg_server, name)


def stars(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(seed * 10_000, seed * 10_000 + n, dtype=np.int64),
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "mag": rng.uniform(5, 20, n),
        }
    )


def query(deployment: Deployment, sql: str, lang: str = "sql") -> tuple[pa.Table, list[str]]:
    with collect_notes() as notes, QueryEngine(deployment) as engine:
        table = engine.execute(sql, lang=lang).table
    return table, [n.text for n in notes if n.warning]


def foreign_keys(deployment: Deployment) -> set[tuple[str, str]]:
    with deployment.engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'f' AND connamespace IN ('dms'::regnamespace, 'tap_schema'::regnamespace)"
            )
        )
        return {(r[0], r[1]) for r in rows}


def registry_names(deployment: Deployment) -> dict[str, list[str]]:
    with deployment.engine().connect() as conn:
        return {
            "tables": list(
                conn.execute(sa.text("SELECT name FROM dms.catalog_table ORDER BY name")).scalars()
            ),
            "columns": sorted(
                set(conn.execute(sa.text("SELECT table_name FROM dms.catalog_column")).scalars())
            ),
            "chunks": sorted(set(conn.execute(sa.text("SELECT table_name FROM dms.chunk")).scalars())),
            "tap": list(
                conn.execute(
                    sa.text("SELECT table_name FROM tap_schema.tables WHERE table_name LIKE '%.legacy%'")
                ).scalars()
            ),
        }


def test_new_names_must_be_regular_adql_identifiers() -> None:
    assert new_table_name("gaia") == "cat.gaia"
    assert new_table_name("gaia_source", "gaia_dr3") == "gaia_dr3.gaia_source"
    for name, schema in (
        ("x", "catalog"),
        ("catalog.x", None),
        ("x", "select"),
        ("x", "_private"),
        ("x", "1a"),
    ):
        with pytest.raises(CatalogError, match=r"schema|not valid"):
            new_table_name(name, schema)
    with pytest.raises(CatalogError, match="names its schema already"):
        new_table_name("dp1.x", "gaia_dr3")


def test_load_into_a_named_schema_and_query_it_in_strict_adql(deployment: Deployment, tmp_path: Path) -> None:
    path = write_parquet(stars(500, 1), tmp_path / "s.parquet")
    runner = CliRunner()
    base = ["--data-dir", str(deployment.data_dir), "load", "--create", "-q"]
    columns = ["--ra", "ra", "--dec", "dec", "--id", "id", "--chunk-order", "1"]
    result = runner.invoke(main, [*base, "--schema", "gaia_dr3", "gaia_source", str(path), *columns])
    assert result.exit_code == 0, result.output
    table, warnings = query(deployment, "SELECT COUNT(*) AS n FROM gaia_dr3.gaia_source", "adql")
    assert table.column("n").to_pylist() == [500] and warnings == []
    refused = runner.invoke(main, [*base, "--schema", "catalog", "other", str(path), *columns])
    assert refused.exit_code != 0 and "ADQL reserved word" in refused.output
    assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1


def test_c0024_renames_catalog_tables_and_keeps_their_rows(deployment: Deployment, tmp_path: Path) -> None:
    first = stars(2_000, 2)
    load_files(
        deployment,
        "legacy",
        [write_parquet(first, tmp_path / "a.parquet")],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=1),
    )
    keys = foreign_keys(deployment)
    # A deployment from before schema 1.18.0: the table was catalog.legacy. c0024's downgrade turns a table it
    # renamed back into that state, so mark cat.legacy as renamed from catalog.legacy and go down.
    with deployment.engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE dms.catalog_table SET storage_name = 'catalog.legacy' WHERE name = 'cat.legacy'")
        )
    migrate.downgrade(deployment, "c0020")
    old = registry_names(deployment)
    assert old["tables"] == ["catalog.legacy"] and old["chunks"] == ["catalog.legacy"]
    assert old["tap"] == ["catalog.legacy"] and foreign_keys(deployment) == keys

    migrate.upgrade(deployment)
    assert registry_names(deployment) == {k: ["cat.legacy"] for k in old}
    assert foreign_keys(deployment) == keys  # every foreign key is back, as it was
    with deployment.engine().connect() as conn:
        storage = conn.execute(sa.text("SELECT storage_name FROM dms.catalog_table")).scalar_one()
    assert storage == "catalog.legacy"

    ids = sorted(first.column("id").to_pylist())
    table, warnings = query(deployment, "SELECT id FROM cat.legacy ORDER BY id")
    assert table.column("id").to_pylist() == ids and warnings == []
    # the old spelling resolves, said as a deprecation, in SQL and in ADQL (regular and delimited)
    for sql, lang in (
        ("SELECT id FROM catalog.legacy ORDER BY id", "sql"),
        ("SELECT id FROM catalog.legacy ORDER BY id", "adql"),
        ('SELECT id FROM "catalog".legacy ORDER BY id', "adql"),
    ):
        table, warnings = query(deployment, sql, lang)
        assert table.column("id").to_pylist() == ids, sql
        assert len(warnings) == 1 and "catalog.legacy is now cat.legacy" in warnings[0], sql

    # the renamed table takes more rows (stored beside the old ones) and answers with all of them
    second = stars(700, 3)
    load_files(deployment, "catalog.legacy", [write_parquet(second, tmp_path / "b.parquet")], progress=False)
    table, _ = query(deployment, "SELECT COUNT(*) AS n, SUM(id) AS s FROM cat.legacy")
    assert table.to_pylist() == [{"n": 2_700, "s": sum(ids) + sum(second.column("id").to_pylist())}]

    runner = CliRunner()
    result = runner.invoke(
        main, ["--data-dir", str(deployment.data_dir), "query", "SELECT COUNT(*) AS n FROM catalog.legacy"]
    )
    assert result.exit_code == 0 and "2700" in result.output
    assert "warning: table catalog.legacy is now cat.legacy" in result.output


def test_c0024_refuses_a_name_clash(deployment: Deployment, tmp_path: Path) -> None:
    path = write_parquet(stars(100, 4), tmp_path / "c.parquet")
    for name in ("twin", "twin_b"):
        load_files(
            deployment,
            name,
            [path],
            progress=False,
            create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=1),
        )
    with deployment.engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE dms.catalog_table SET storage_name = 'catalog.twin' WHERE name = 'cat.twin'")
        )
    migrate.downgrade(deployment, "c0020")  # catalog.twin beside cat.twin_b
    with deployment.engine().begin() as conn:  # now a cat.twin appears beside catalog.twin
        conn.execute(
            sa.text(
                "INSERT INTO dms.catalog_table (name, role, id_column, ra_column, dec_column, chunk_order, "
                "storage_kind, replicas, row_count, overlap_arcsec, created_at) "
                "SELECT 'cat.twin', role, id_column, ra_column, dec_column, chunk_order, storage_kind, "
                "replicas, 0, overlap_arcsec, now() FROM dms.catalog_table WHERE name = 'catalog.twin'"
            )
        )
    with pytest.raises(Exception, match=r"cat\.twin exist already"):
        migrate.upgrade(deployment)
