"""Bit rot in catalog shards is detected (issue 11, item 10): one flipped byte in a chunk's Parquet file never
changes an answer. The chunk is read from an intact replica, or the query fails naming it; `dms catalog
verify` names the damaged file and exits 1; COUNT(*) from the registry fails when a chunk file is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.query.engine import QueryEngine
from dms.query.integrity import ChunkDamaged
from tests.answers_support import drop_databases, new_database
from tests.catalog_fixtures import Sample, make_sample
from tests.pg_support import seed_default_shard

SUM = "SELECT SUM(phot_g_mean_mag) AS s, COUNT(*) AS n FROM cat.gaia"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("sample"))


def _deployment(
    pg_server: Any, directory: Path, created: list[str], sample: Sample, replicas: int
) -> Deployment:
    deployment = Deployment.create(
        directory / "dep", database_url=new_database(pg_server, created, migrated=True)
    )
    seed_default_shard(deployment, pg_server)
    if replicas > 1:
        deployment.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    migrate.upgrade(deployment)
    options = TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2, replicas=replicas)
    load_files(deployment, "gaia", [sample.files["gaia"]], progress=False, create=options)
    return deployment


@pytest.fixture()
def deployments(pg_server: Any, tmp_path: Path, sample: Sample) -> Iterator[dict[str, Deployment]]:
    created: list[str] = []
    made = {}
    try:
        made["single"] = _deployment(pg_server, tmp_path / "one", created, sample, 1)
        made["replicated"] = _deployment(pg_server, tmp_path / "two", created, sample, 2)
        yield made
    finally:
        for deployment in made.values():
            deployment.dispose()
        drop_databases(pg_server, created)


def _a_chunk_file(deployment: Deployment, shard: str = "shard0") -> tuple[Path, str]:
    with deployment.connect() as conn:
        path = conn.execute(
            sa.text(
                "SELECT path FROM dms.chunk_file WHERE shard = :s AND chunk_order >= 0 "
                "ORDER BY row_count DESC LIMIT 1"
            ),
            {"s": shard},
        ).scalar_one()
    return deployment.data_dir / "catalog" / shard / path, str(path)


def _flip_a_byte(path: Path) -> None:
    """Bit rot: one byte in the middle of the file changes; the size and modification time do not."""
    status = path.stat()
    with open(path, "r+b") as stream:
        stream.seek(status.st_size // 2)
        byte = stream.read(1)
        stream.seek(status.st_size // 2)
        stream.write(bytes([byte[0] ^ 0x10]))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def _verify(deployment: Deployment) -> Any:
    return CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), "catalog", "verify", "-q"])


def test_checksums_are_recorded_and_verified(deployments: dict[str, Deployment]) -> None:
    for deployment in deployments.values():
        with deployment.connect() as conn:
            checksums = conn.execute(sa.text("SELECT checksum FROM dms.chunk_file")).scalars().all()
        assert checksums and all(c is not None and c.startswith("sha256:") for c in checksums)
        result = _verify(deployment)
        assert result.exit_code == 0 and "none missing or damaged" in result.output, result.output


def test_a_flipped_byte_is_an_error_naming_the_chunk(
    deployments: dict[str, Deployment], sample: Sample
) -> None:
    deployment = deployments["single"]
    path, relative = _a_chunk_file(deployment)
    _flip_a_byte(path)
    with QueryEngine(deployment) as engine, pytest.raises(ChunkDamaged, match=r"cannot be read") as caught:
        engine.execute(SUM)
    assert relative in str(caught.value) and "checksum" in str(caught.value)
    result = _verify(deployment)
    assert result.exit_code == 1 and relative in result.output and "1 missing or damaged" in result.output


def test_a_flipped_byte_is_read_from_the_replica(deployments: dict[str, Deployment], sample: Sample) -> None:
    deployment = deployments["replicated"]
    with QueryEngine(deployment) as engine:
        truth = engine.execute(SUM).table.to_pylist()
        path, relative = _a_chunk_file(deployment)
        _flip_a_byte(path)
        with QueryEngine(deployment) as fresh:
            after = fresh.execute(SUM)
    assert after.table.to_pylist() == truth
    assert truth[0]["n"] == sample.tables["gaia"].num_rows
    assert any(note.startswith("damaged:") and relative in note for note in after.plan)
    result = _verify(deployment)
    assert result.exit_code == 1 and relative in result.output


def test_count_from_the_registry_checks_the_files_exist(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["single"]
    path, relative = _a_chunk_file(deployment)
    with QueryEngine(deployment) as engine:
        assert engine.execute("SELECT COUNT(*) FROM cat.gaia").table.column(0)[0].as_py() > 0
        path.rename(path.with_name("moved-away"))
        with pytest.raises(ChunkDamaged, match="cannot be counted") as caught:
            engine.execute("SELECT COUNT(*) FROM cat.gaia")
    assert relative in str(caught.value)
