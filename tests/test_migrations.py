"""Migrations on real databases: every database to head in one command, down to base and back, no drift."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner, Result

from dms import migrate
from dms.cli import main
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.errors import SchemaVersionError
from dms.schema import (
    CONTROL_NAMESPACES,
    SCHEMA_VERSION,
    SHARD_SCHEMA_VERSION,
    control_metadata,
    schema_info_rows,
)
from tests.pg_support import control_database, database, drop_database, seed_default_shard

DMS_NAMESPACES = ", ".join(f"'{n}'" for n in CONTROL_NAMESPACES)


def dms(deployment: Deployment, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args], catch_exceptions=False)
    return result


@pytest.fixture()
def embedded(tmp_path: Path, pg_database: str) -> Iterator[Deployment]:
    """An embedded deployment with three shards: the default DuckDB one, a second DuckDB one, and a
    PostgreSQL shard on another server (the session's pgserver)."""
    dep = Deployment.create(tmp_path / "dep")
    dep.add_shard(ShardConfig(name="wide1", kind="duckdb", path="catalog/wide1.duckdb"))
    dep.add_shard(ShardConfig(name="pg1", kind="postgres", url=pg_database))
    yield dep
    dep.stop()


@pytest.fixture()
def deployment(tmp_path: Path, pg_server: Any) -> Iterator[Deployment]:
    """The same three shards with an empty control database on the session's server (an embedded server of
    its own, started for each test, would only add its start-up: the embedded test above has one)."""
    with database(pg_server, "mig") as control, database(pg_server, "mig") as shard:
        dep = Deployment.create(tmp_path / "dep", database_url=control)
        dep.add_shard(ShardConfig(name="wide1", kind="duckdb", path="catalog/wide1.duckdb"))
        dep.add_shard(ShardConfig(name="pg1", kind="postgres", url=shard))
        yield dep
        dep.dispose()


def control_inventory(dep: Deployment) -> tuple[int, int, int]:
    """(tables, scisql/ivo functions, DMS namespaces) in the control database."""
    with dep.engine().connect() as conn:
        tables = conn.execute(
            sa.text(
                f"SELECT count(*) FROM information_schema.tables WHERE table_schema IN ({DMS_NAMESPACES})"
            )
        ).scalar_one()
        functions = conn.execute(
            sa.text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'scisql%' OR proname LIKE 'ivo\\_%'")
        ).scalar_one()
        namespaces = conn.execute(
            sa.text(f"SELECT count(*) FROM pg_namespace WHERE nspname IN ({DMS_NAMESPACES})")
        ).scalar_one()
    return tables, functions, namespaces


def shard_inventory(dep: Deployment) -> dict[str, tuple[str | None, int]]:
    """Per shard: (schema version, number of scisql/ivo functions or macros)."""
    result = {}
    for shard in dep.shards():
        engine = shard.engine()
        with engine.connect() as conn:
            has_info = sa.inspect(conn).has_table("schema_info", schema="dms")
            version = (
                conn.execute(
                    sa.text("SELECT value FROM dms.schema_info WHERE key = 'schema_version'")
                ).scalar()
                if has_info
                else None
            )
            if shard.kind == "postgres":
                query = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'scisql%' OR proname LIKE 'ivo\\_%'"
            else:
                query = (
                    "SELECT count(DISTINCT function_name) FROM duckdb_functions() "
                    "WHERE function_name LIKE 'scisql%' OR function_name LIKE 'ivo\\_%' ESCAPE '\\'"
                )
            functions = conn.execute(sa.text(query)).scalar_one()
        engine.dispose()
        result[shard.name] = (version, functions)
    return result


def test_upgrade_downgrade_upgrade_every_database(embedded: Deployment) -> None:
    deployment = embedded
    heads = migrate.heads()
    up = dms(deployment, "db", "upgrade")
    assert up.exit_code == 0, up.output
    assert f"control: base -> {heads['control']}" in up.output
    for name in ("shard0", "wide1", "pg1"):
        assert f"shard {name}: base -> {heads['shard']}" in up.output

    tables, functions, namespaces = control_inventory(deployment)
    assert tables == len(control_metadata().tables) and namespaces == len(CONTROL_NAMESPACES)
    assert functions >= 10
    shards = shard_inventory(deployment)
    assert all(version == SHARD_SCHEMA_VERSION and n >= 10 for version, n in shards.values()), shards

    current = dms(deployment, "db", "current")
    assert current.exit_code == 0
    assert current.output.count("(head)") == 4, current.output
    report = json.loads(dms(deployment, "status", "--json").output)
    assert report["server"] == "running" and report["control"]["up_to_date"] is True
    assert report["control"]["extensions"]["vector"]  # pgvector enabled on the embedded server
    assert {s["name"]: s["up_to_date"] for s in report["shards"]} == {
        "shard0": True,
        "wide1": True,
        "pg1": True,
    }

    again = dms(deployment, "db", "upgrade")
    assert again.output.count("unchanged") == 4

    down = dms(deployment, "db", "downgrade", "base")
    assert down.exit_code == 0, down.output
    assert control_inventory(deployment) == (0, 0, 0)
    assert all(v == (None, 0) for v in shard_inventory(deployment).values()), shard_inventory(deployment)
    assert dms(deployment, "db", "current").output.count(": base") == 4

    up_again = dms(deployment, "db", "upgrade")
    assert up_again.exit_code == 0, up_again.output
    assert control_inventory(deployment) == (tables, functions, namespaces)
    assert shard_inventory(deployment) == shards


def test_migrated_database_matches_felis_definitions(deployment: Deployment) -> None:
    migrate.upgrade(deployment)
    from dms.migrations.versions.control import c0001_control_tables as c0001
    from dms.migrations.versions.control import c0004_efd_qc as c0004
    from dms.migrations.versions.control import c0005_vo as c0005
    from dms.migrations.versions.control import c0014_apdb_spatial as c0014
    from dms.migrations.versions.control import c0016_minibroker as c0016
    from dms.migrations.versions.control import c0018_obscore_widths as c0018
    from dms.migrations.versions.control import c0020_batch as c0020
    from dms.migrations.versions.control import c0023_obscore_regions as c0023

    extra_indexes = {s.split(" INDEX ", 1)[1].split()[0] for s in c0001.EXTRA_INDEXES + c0004.EXTRA_INDEXES}
    extra_indexes |= set(c0014.EXTRA_INDEXES) | set(c0016.EXTRA_INDEXES) | set(c0020.EXTRA_INDEXES)
    extra_indexes.add(c0023.MOC_INDEX)
    with deployment.engine().connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "compare_type": True,
                "include_name": lambda name, kind, parents: (
                    name in CONTROL_NAMESPACES if kind == "schema" else True
                ),
            },
        )
        differences = compare_metadata(context, control_metadata())
        recorded = {k: v for k, v in conn.execute(sa.text("SELECT key, value FROM dms.schema_info"))}
    # The versions recorded at head are those of the Felis definitions installed with this DMS.
    assert {k: v for k, v in recorded.items() if k != "extension.vector"} == schema_info_rows()
    drift = [d for d in differences if not _explained(d, extra_indexes)]
    assert drift == []
    # two folded constraints per ConsDB schema, the ObsCore 1.1 columns the VO revision adds to ivoa.ObsCore,
    # and the APDB's _healpix_29 columns
    consdb_schemas = sum(1 for namespace in CONTROL_NAMESPACES if namespace.startswith("cdb_"))
    assert len(differences) - len(drift) == (
        len(extra_indexes)
        + 2 * consdb_schemas
        + len(c0005.OBSCORE_EXTRA_COLUMNS)
        + len(c0023.REGION_COLUMNS)  # s_region_shape and s_region_moc beside s_region
        + len(c0014.SPATIAL_TABLES)
        + len(c0018.WIDENED)  # ivoa.ObsCore s_region and lsst_filter are TEXT (Felis: 512 and 10)
    )


def _explained(difference: Any, extra_indexes: set[str]) -> bool:
    """Differences that are not drift: indexes Felis cannot express (added by the revision on purpose), and
    UNIQUE constraints identical to the primary key, which PostgreSQL folds into the key."""
    if isinstance(difference, list):  # column changes: only the ObsCore widths migration c0018 made
        from dms.migrations.versions.control.c0018_obscore_widths import WIDENED

        return all(
            d[0] == "modify_type" and (d[1], d[2]) == ("ivoa", "ObsCore") and d[3] in WIDENED
            for d in difference
        )
    kind, obj = difference[0], difference[1]
    if kind == "remove_index" and obj.name in extra_indexes:
        return True
    if kind == "remove_column" and (difference[1], difference[2]) == ("ivoa", "ObsCore"):
        from dms.migrations.versions.control.c0005_vo import OBSCORE_EXTRA_COLUMNS
        from dms.migrations.versions.control.c0023_obscore_regions import REGION_COLUMNS

        return difference[3].name in OBSCORE_EXTRA_COLUMNS or difference[3].name in REGION_COLUMNS
    if kind == "remove_column" and difference[1] == "apdb":
        from dms.migrations.versions.control.c0014_apdb_spatial import EXTRA_COLUMN, SPATIAL_TABLES

        return difference[2] in SPATIAL_TABLES and difference[3].name == EXTRA_COLUMN
    if kind == "add_constraint" and isinstance(obj, sa.UniqueConstraint):
        table = control_metadata().tables[f"{obj.table.schema}.{obj.table.name}"]
        return {c.name for c in obj.columns} == {c.name for c in table.primary_key.columns}
    return False


def test_data_survives_a_repeated_upgrade(deployment: Deployment) -> None:
    migrate.upgrade(deployment)
    with deployment.engine().begin() as conn:
        conn.execute(
            sa.text("INSERT INTO dms.qc_metric (name, unit, description) VALUES ('psf_fwhm', 'arcsec', 'x')")
        )
    migrate.upgrade(deployment)
    with deployment.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT unit FROM dms.qc_metric WHERE name = 'psf_fwhm'")).scalar_one()
            == "arcsec"
        )


@pytest.mark.parametrize(
    ("recorded", "expected_words"),
    [
        ("0.9.0", ["0.9.0", SCHEMA_VERSION, "dms db upgrade"]),
        ("99.0.0", ["99.0.0", SCHEMA_VERSION, "newer DMS"]),
    ],
)
def test_unknown_schema_version_is_refused_naming_both(
    deployment: Deployment, recorded: str, expected_words: list[str]
) -> None:
    migrate.upgrade(deployment)
    with deployment.engine().begin() as conn:
        conn.execute(
            sa.text("UPDATE dms.schema_info SET value = :v WHERE key = 'schema_version'"), {"v": recorded}
        )
    with pytest.raises(SchemaVersionError) as caught, deployment.connect():
        pass
    assert caught.value.found == recorded and caught.value.expected == SCHEMA_VERSION
    assert all(word in str(caught.value) for word in expected_words)
    result = dms(deployment, "demo")
    assert result.exit_code == 1 and recorded in result.output and SCHEMA_VERSION in result.output


def test_unmigrated_database_is_refused(deployment: Deployment) -> None:
    with pytest.raises(SchemaVersionError, match=r"no DMS schema.*dms db upgrade"), deployment.connect():
        pass


def test_unknown_revision_is_a_clear_error(deployment: Deployment) -> None:
    result = dms(deployment, "db", "upgrade", "zz9999")
    assert result.exit_code == 1 and "unknown revision 'zz9999'" in result.output


def test_database_at_an_unknown_revision_is_reported(deployment: Deployment) -> None:
    migrate.upgrade(deployment)
    with deployment.engine().begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'c9999'"))
    result = dms(deployment, "db", "upgrade")
    assert result.exit_code == 1
    assert "control" in result.output and "c9999" in result.output


def test_duckdb_connections_get_the_udfs_without_migrations() -> None:
    import healpy

    from dms.udfs import register_duckdb

    conn = duckdb.connect()
    register_duckdb(conn)
    expected = int(healpy.ang2pix(2**12, 266.4, -29.0, nest=True, lonlat=True))
    assert conn.execute("SELECT ivo_healpix_index(12, 266.4, -29.0)").fetchone() == (expected,)


def test_failed_migration_is_rolled_back_with_a_clear_error(deployment: Deployment) -> None:
    # A table squatting on a name the first revision creates makes it fail half-way.
    with deployment.engine().begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA efd_lsstcam"))
        conn.execute(sa.text("CREATE TABLE efd_lsstcam.exposure_efd (squatter int)"))
    result = dms(deployment, "db", "upgrade")
    assert result.exit_code == 1
    assert "control: migrating to head failed and was rolled back (still at base)" in result.output
    assert "exposure_efd" in result.output and "Traceback" not in result.output
    assert control_inventory(deployment)[0] == 1  # only the squatter: nothing half-created


def test_shard_connections_check_the_shard_schema_version(deployment: Deployment) -> None:
    shard = next(s for s in deployment.shards() if s.name == "wide1")
    with pytest.raises(SchemaVersionError, match=r"shard 'wide1' has no DMS schema"), shard.connect():
        pass
    migrate.upgrade(deployment)
    with shard.connect() as conn:
        assert conn.execute(sa.text("SELECT scisql_angSep(0, 0, 0, 1)")).scalar_one() == pytest.approx(1.0)
    with shard.engine().begin() as conn:
        conn.execute(sa.text("UPDATE dms.schema_info SET value = '7.0.0' WHERE key = 'schema_version'"))
    with (
        pytest.raises(SchemaVersionError, match=r"7\.0\.0.*" + re.escape(SHARD_SCHEMA_VERSION)),
        shard.connect(),
    ):
        pass


def test_unreachable_shard_is_named_and_the_rest_is_kept(deployment: Deployment) -> None:
    deployment.add_shard(ShardConfig(name="gone", kind="postgres", url="postgresql://postgres@127.0.0.1:1/x"))
    result = dms(deployment, "db", "upgrade")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "shard gone: cannot connect" in result.output
    assert control_inventory(deployment)[0] == len(control_metadata().tables)  # databases before it migrated
    current = dms(deployment, "db", "current")
    assert current.exit_code == 1 and "shard gone: cannot connect" in current.output
    status = dms(deployment, "status")
    assert status.exit_code == 0 and "unreachable" in status.output


def test_a_copy_of_the_session_template_is_a_database_migrated_from_base(
    deployment: Deployment, pg_server: Any, tmp_path: Path
) -> None:
    """The suites' control databases and default shards are copies of ones migrated once per session
    (tests/pg_support.py): a copy must be what migrating from base makes."""
    migrate.upgrade(deployment)
    name = control_database(pg_server, "copy")
    copy = Deployment.create(tmp_path / "copy", database_url=pg_server.get_uri(name))
    seed_default_shard(copy, pg_server)
    try:

        def schema(dep: Deployment) -> tuple[object, ...]:
            with dep.engine().connect() as conn:
                columns = conn.execute(
                    sa.text(
                        "SELECT table_schema, table_name, column_name, data_type, is_nullable "
                        f"FROM information_schema.columns WHERE table_schema IN ({DMS_NAMESPACES}) "
                        "ORDER BY 1, 2, 3"
                    )
                ).all()
                functions = conn.execute(
                    sa.text("SELECT proname, pg_get_function_arguments(oid) FROM pg_proc ORDER BY 1, 2")
                ).all()
                info = conn.execute(sa.text("SELECT key, value FROM dms.schema_info ORDER BY key")).all()
                version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            return columns, functions, info, version

        assert schema(copy) == schema(deployment)
        assert control_inventory(copy) == control_inventory(deployment)
        shards = shard_inventory(deployment)
        assert shard_inventory(copy) == {"shard0": shards["shard0"]}
        heads = migrate.heads()
        assert migrate.current(copy) == [("control", heads["control"]), ("shard shard0", heads["shard"])]
    finally:
        copy.dispose()
        drop_database(pg_server, name)


def test_an_upgrade_builds_no_felis_metadata(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only autogenerate compares against the Felis metadata, which takes seconds to build: `dms db upgrade`
    (run by every deployment the tests make) must not build it."""
    import dms.schema

    built: list[int] = []

    def counted() -> sa.MetaData:
        built.append(1)
        return control_metadata()

    monkeypatch.setattr(dms.schema, "control_metadata", counted)
    migrate.upgrade(deployment)
    migrate.upgrade(deployment)
    assert built == []
    assert control_inventory(deployment)[0] == len(control_metadata().tables)
