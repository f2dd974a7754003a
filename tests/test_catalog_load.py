"""`dms load`: file formats, validation, idempotency, all-or-nothing visibility, resume after a crash, and the
partitioning itself (chunks, overlap margins, director index) checked against healpy and astropy."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import healpy
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from astropy.table import Table

from dms import migrate
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.errors import DMSError
from dms.loaders.catalog import LoadError, TableOptions, load_files
from dms.loaders.partition import PartitionError, adaptive_layout, healpix_29, nuniq, overlap_rows
from dms.loaders.readers import CatalogFileError
from dms.loaders.samples import gaia_table, write_parquet
from dms.query.engine import QueryEngine
from tests.pg_support import control_database, drop_database, seed_default_shard


@pytest.fixture()
def deployment(tmp_path: Path, pg_server: Any) -> Iterator[Deployment]:
    """Two DuckDB shards; the control database on the session's server (a copy at head, as is shard0)."""
    name = control_database(pg_server, "load")
    dep = Deployment.create(tmp_path / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(dep, pg_server)
    dep.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    migrate.upgrade(dep)
    yield dep
    dep.dispose()
    drop_database(pg_server, name)


def _stars(n: int, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "mag": rng.uniform(5, 20, n).astype(np.float32),
            "name": [f"star {i}" for i in range(n)],
        }
    )


def _count(deployment: Deployment, sql: str) -> int:
    with QueryEngine(deployment) as engine:
        return int(engine.execute(sql).table.column(0)[0].as_py())


def test_healpix_29_is_healpy_and_rejects_bad_positions() -> None:
    ra, dec = np.array([0.0, 359.999, 123.4, 10.0]), np.array([-90.0, 90.0, -12.5, 0.0])
    expected = healpy.ang2pix(2**29, ra, dec, nest=True, lonlat=True)
    assert healpix_29(ra, dec).tolist() == expected.tolist()
    with pytest.raises(PartitionError, match="no valid position"):
        healpix_29([1.0, np.nan], [0.0, 0.0])
    with pytest.raises(PartitionError, match="dec"):
        healpix_29([1.0], [91.0])


def test_overlap_holds_every_row_within_the_margin() -> None:
    stars = _stars(60_000)
    h29 = healpix_29(stars["ra"].to_numpy(), stars["dec"].to_numpy())
    layout = adaptive_layout(h29, 2, 200)
    assert layout.orders.max() > 2  # dense chunks were split
    orders, pixels = layout.assign(h29)
    own = nuniq(orders, pixels)
    rows, o_orders, o_pixels = overlap_rows(h29, own, layout, 60.0)
    copies = set(zip(rows.tolist(), nuniq(o_orders, o_pixels).tolist(), strict=True))
    coords = SkyCoord(stars["ra"].to_numpy(), stars["dec"].to_numpy(), unit="deg")
    for chunk in np.unique(own)[:: max(1, len(np.unique(own)) // 25)]:
        order, pixel = int(orders[own == chunk][0]), int(pixels[own == chunk][0])
        boundary = healpy.boundaries(2**order, pixel, step=400, nest=True)
        lon, lat = healpy.vec2ang(boundary.T, lonlat=True)
        _, separation, _ = coords.match_to_catalog_sky(SkyCoord(lon, lat, unit="deg"))
        near = np.flatnonzero((separation.arcsec < 59.0) & (own != chunk))
        assert all((int(i), int(chunk)) in copies for i in near), chunk


def test_formats_load_and_agree(deployment: Deployment, tmp_path: Path) -> None:
    stars = _stars(3_000)
    parquet = write_parquet(stars, tmp_path / "stars.parquet")
    result = load_files(
        deployment,
        "stars",
        [parquet],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=1),
    )
    assert result.rows == 3_000 and result.chunks > 10
    table = Table(stars.to_pydict())
    for suffix, fmt in ((".csv", "ascii.csv"), (".fits", "fits"), (".vot", "votable")):
        path = tmp_path / f"copy{suffix}"
        table.write(path, format=fmt)
        load_files(
            deployment,
            f"copy_{suffix[1:]}",
            [path],
            progress=False,
            create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=1),
        )
        with QueryEngine(deployment) as engine:
            differ = engine.execute(
                f"SELECT id, name, ra, dec, mag FROM copy_{suffix[1:]} EXCEPT "
                "SELECT id, name, ra, dec, mag FROM stars"
            ).table
            total = engine.execute(f"SELECT COUNT(*) AS n FROM copy_{suffix[1:]} WHERE id > 0").table
        assert differ.num_rows == 0 and total.column(0)[0].as_py() == 3_000, suffix


def test_same_files_twice_change_nothing(deployment: Deployment, tmp_path: Path) -> None:
    path = write_parquet(_stars(1_000), tmp_path / "s.parquet")
    options = TableOptions(ra="ra", dec="dec", id="id")
    first = load_files(deployment, "s", [path], create=options, progress=False)
    again = load_files(deployment, "s", [path], create=options, progress=False)
    assert not first.skipped and again.skipped
    assert _count(deployment, "SELECT COUNT(*) AS n FROM s WHERE mag > 0") == 1_000


def test_bad_input_is_refused_and_changes_nothing(deployment: Deployment, tmp_path: Path) -> None:
    good = write_parquet(_stars(500), tmp_path / "good.parquet")
    load_files(deployment, "t", [good], create=TableOptions(ra="ra", dec="dec", id="id"), progress=False)
    cases: list[tuple[pa.Table, str]] = [
        (_stars(10).drop_columns(["mag"]), "missing columns"),
        (_stars(10).append_column("extra", pa.array(range(10))), "unknown columns"),
        (_stars(10).set_column(3, "mag", pa.array(["bright"] * 10)), "cannot be stored"),
        (_stars(10).set_column(0, "id", pa.array([7] * 10, pa.int64())), "duplicate"),
        (_stars(10).set_column(2, "dec", pa.array([95.0] * 10)), "no valid position"),
    ]
    for i, (table, message) in enumerate(cases):
        path = write_parquet(table, tmp_path / f"bad{i}.parquet")
        with pytest.raises(DMSError, match=message):
            load_files(deployment, "t", [path], progress=False)
    not_parquet = tmp_path / "junk.parquet"
    not_parquet.write_bytes(b"not a parquet file")
    with pytest.raises(CatalogFileError, match="cannot be read"):
        load_files(deployment, "t", [not_parquet], progress=False)
    with pytest.raises(LoadError, match=r"not in cat\.t"):
        child = pa.table({"cid": [1, 2], "id": [1, 999_999]})
        load_files(
            deployment,
            "c",
            [write_parquet(child, tmp_path / "child.parquet")],
            progress=False,
            create=TableOptions(role="child", director="t", director_key="id"),
        )
    assert _count(deployment, "SELECT COUNT(*) AS n FROM t WHERE id > 0") == 500


def test_a_killed_load_is_invisible_and_resumes(deployment: Deployment, tmp_path: Path) -> None:
    path = write_parquet(gaia_table().slice(10), tmp_path / "gaia.parquet")  # not the first load's ids
    load_files(
        deployment,
        "g",
        [write_parquet(gaia_table(limit=10), tmp_path / "tiny.parquet")],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=4, max_chunk_rows=None),
    )
    dms = str(Path(sys.executable).parent / "dms")
    process = subprocess.Popen([dms, "--data-dir", str(deployment.data_dir), "load", "g", str(path), "-q"])
    load_dir = deployment.data_dir / "catalog" / "shard0" / "cat" / "g" / "load2"
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if load_dir.exists() and len(list(load_dir.glob("*.parquet"))) >= 5:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    killed = process.returncode == -signal.SIGKILL
    with deployment.connect() as conn:
        state = conn.execute(sa.text("SELECT state FROM dms.catalog_load WHERE load_id = 2")).scalar_one()
    assert (state == "running") == killed
    assert _count(deployment, "SELECT COUNT(*) AS n FROM g WHERE phot_g_mean_mag < 99") == (
        10 if killed else 482_176
    )
    result = load_files(deployment, "g", [path], progress=False)
    assert result.skipped != killed
    assert _count(deployment, "SELECT COUNT(*) AS n FROM g WHERE phot_g_mean_mag < 99") == 482_176
    files = [
        f
        for shard in ("shard0", "shard1")
        for f in (deployment.data_dir / "catalog" / shard / "cat" / "g" / "load2").glob("*.parquet")
    ]
    written = pq.ParquetDataset(files).read()  # each row once, not counting overlap copies
    assert written.num_rows - int(pa.compute.sum(written["_overlap"]).as_py()) == 482_166
