"""Deployments end to end through the `dms` command line: embedded and external, bad input, reuse."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from psycopg import sql

from dms.cli import main
from dms.deployment import Deployment
from dms.embedded import PGDATA_DIR, EmbeddedServer
from dms.schema import SCHEMA_VERSION


def dms(*args: str, data_dir: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run the real `dms` command in-process and return its result."""
    prefix = ["--data-dir", str(data_dir)] if data_dir else []
    return CliRunner().invoke(main, [*prefix, *args], env=env, catch_exceptions=False)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh deployment directory; any embedded server started in it is stopped afterwards."""
    path = tmp_path / "dep"
    yield path
    EmbeddedServer(path / PGDATA_DIR).stop()


def test_init_creates_an_embedded_deployment(data_dir: Path) -> None:
    # `--data-dir` after the command name, as `dms init [--data-dir DIR]` is usually written.
    result = CliRunner().invoke(main, ["init", "--data-dir", str(data_dir)], env={"DMS_DATABASE_URL": ""})
    assert result.exit_code == 0, result.output
    assert "Created an embedded deployment" in result.output
    deployment = Deployment.open(data_dir)
    assert deployment.config.mode == "embedded"
    assert deployment.embedded is not None and deployment.embedded.is_running()
    with deployment.engine().connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "dms"
        assert conn.execute(sa.text("SHOW server_version")).scalar_one().startswith("16.")
        available = conn.execute(
            sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar_one()
        assert available == 1


def test_second_init_refuses_and_keeps_data(data_dir: Path) -> None:
    assert dms("init", data_dir=data_dir).exit_code == 0
    deployment = Deployment.open(data_dir)
    with deployment.engine().begin() as conn:
        conn.execute(sa.text("CREATE TABLE keep_me (x int)"))
        conn.execute(sa.text("INSERT INTO keep_me VALUES (42)"))
    deployment.dispose()
    config_before = (data_dir / "deployment.yaml").read_text()

    again = dms("init", data_dir=data_dir)
    assert again.exit_code == 1
    assert "already exists" in again.output and "left unchanged" in again.output
    assert (data_dir / "deployment.yaml").read_text() == config_before
    assert dms("init", "--exist-ok", data_dir=data_dir).exit_code == 0
    with Deployment.open(data_dir).engine().connect() as conn:
        assert conn.execute(sa.text("SELECT x FROM keep_me")).scalar_one() == 42


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = dms("init", data_dir=blocker / "dep")
    assert result.exit_code == 1
    assert "not writable" in result.output and str(blocker) in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/test", "DMS needs PostgreSQL"),
        ("this is not a url", "not a database URL"),
        ("postgresql://postgres@127.0.0.1:1/dms", "cannot connect to the control database"),
        ("postgresql://postgres:s3cret@127.0.0.1:1/dms", "***"),
        ("postgresql://postgres@127.0.0.1:5432", "names no database"),
    ],
)
def test_bad_database_url_is_a_clear_error(tmp_path: Path, url: str, message: str) -> None:
    result = dms("init", "--database-url", url, data_dir=tmp_path / "dep")
    assert result.exit_code == 1
    assert message in result.output
    assert "s3cret" not in result.output
    assert not (tmp_path / "dep" / "deployment.yaml").exists()


def test_commands_without_a_deployment_say_how_to_create_one(tmp_path: Path) -> None:
    result = dms("status", data_dir=tmp_path / "nothing")
    assert result.exit_code == 1
    assert "no deployment" in result.output and "dms init" in result.output


def test_corrupt_config_names_the_file_and_field(data_dir: Path) -> None:
    assert dms("init", data_dir=data_dir).exit_code == 0
    config = data_dir / "deployment.yaml"
    config.write_text(config.read_text().replace("kind: duckdb", "kind: oracle"))
    result = dms("status", data_dir=data_dir)
    assert result.exit_code == 1
    assert str(config) in result.output and "shards.0.kind" in result.output
    assert "'postgres' or 'duckdb'" in result.output


def test_stop_and_restart_keeps_data(data_dir: Path) -> None:
    assert dms("init", data_dir=data_dir).exit_code == 0
    deployment = Deployment.open(data_dir)
    with deployment.engine().begin() as conn:
        conn.execute(sa.text("CREATE TABLE survive (x int)"))
        conn.execute(sa.text("INSERT INTO survive VALUES (7)"))
    stopped = dms("stop", data_dir=data_dir)
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert deployment.embedded is not None and not deployment.embedded.is_running()
    assert "stopped" in dms("status", data_dir=data_dir).output
    assert dms("start", data_dir=data_dir).exit_code == 0
    with Deployment.open(data_dir).engine().connect() as conn:
        assert conn.execute(sa.text("SELECT x FROM survive")).scalar_one() == 7


def test_two_deployments_run_side_by_side(tmp_path: Path) -> None:
    first, second = Deployment.create(tmp_path / "one"), Deployment.create(tmp_path / "two")
    try:
        with first.engine().begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_first (x int)"))
        with second.engine().connect() as conn:
            names = sa.inspect(conn).get_table_names()
        assert "only_in_first" not in names
        assert first.embedded is not None and second.embedded is not None
        assert first.embedded.is_running() and second.embedded.is_running()
        assert first.control_url() != second.control_url()
    finally:
        first.stop()
        second.stop()


@pytest.fixture()
def external_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL service (127.0.0.1:5432), dropped afterwards."""
    admin = os.environ.get("DMS_TEST_EXTERNAL_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):  # CI machines run this service: its absence is a failure there
            pytest.fail(f"no external PostgreSQL service at {admin}: {exc}")
        pytest.skip(f"no external PostgreSQL service at {admin}: {exc}")
    name = f"dms_ext_{os.getpid()}"
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)


@pytest.mark.external
def test_external_deployment_through_database_url(tmp_path: Path, external_url: str) -> None:
    data_dir = tmp_path / "ext"
    env = {"DMS_DATABASE_URL": external_url}
    created = dms("init", data_dir=data_dir, env=env)
    assert created.exit_code == 0, created.output
    assert "external" in created.output
    assert not (data_dir / "postgres").exists()  # no embedded server for an external deployment
    upgraded = dms("db", "upgrade", data_dir=data_dir, env=env)
    assert upgraded.exit_code == 0, upgraded.output
    status = dms("status", data_dir=data_dir, env=env)
    assert status.exit_code == 0, status.output
    assert "PostgreSQL" in status.output or "15." in status.output
    assert status.output.count("up to date") == 2  # control + default shard
    with psycopg.connect(external_url) as conn:
        version = conn.execute("SELECT value FROM dms.schema_info WHERE key = 'schema_version'").fetchone()
        assert version is not None and version[0] == SCHEMA_VERSION
        has_pgvector = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        recorded = conn.execute("SELECT value FROM dms.schema_info WHERE key = 'extension.vector'").fetchone()
    if has_pgvector == (0,):  # e.g. Debian's PostgreSQL 15, which has no pgvector package
        assert recorded == ("unavailable",) and "pgvector: not installed on this server" in status.output
    else:
        assert recorded == ("created",) and "vector" in status.output
    downgraded = dms("db", "downgrade", "base", data_dir=data_dir, env=env)
    assert downgraded.exit_code == 0, downgraded.output
    with psycopg.connect(external_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema IN "
            "('dms', 'apdb', 'ivoa', 'cdb_lsstcam', 'cdb_lsstcomcam', 'cdb_lsstcomcamsim', 'cdb_latiss', "
            "'efd_lsstcam')"
        ).fetchone()
        assert left == (0,)
