"""A live VO server over a deployment that has everything the metadata, SCS, file and crossmatch tests need:
the synthetic survey.obj and ObsCore rows of vo_support (two images kept as real FITS files in the data
directory, one remote), and a Gaia sample loaded with `dms load` as cat.gaia."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from astropy.io import fits
from vo_support import IMAGES, publish_test_data

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.services.vo.server import running_server
from tests.pg_support import control_database, drop_database, seed_default_shard


@dataclass
class MetaVO:
    url: str
    deployment: Deployment
    gaia: pa.Table
    images: list[dict[str, Any]]
    fits_files: dict[str, Path]  # publisher DID -> file on the server


def _write_images(directory: Path) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    images, files = [], {}
    for i, image in enumerate(IMAGES):
        row = dict(image)
        if i < 2:
            path = directory / f"raw {i}.fits"
            hdu = fits.PrimaryHDU(np.arange(64, dtype=np.int16).reshape(8, 8) + i)
            hdu.header["OBSID"] = row["obs_id"]
            hdu.writeto(path)
            row["access_url"] = path.resolve().as_uri()
            files[row["obs_publisher_did"]] = path
        images.append(row)
    return images, files


def _with_units(gaia: pa.Table) -> pa.Table:
    """The Gaia sample with units as Parquet field metadata (keys ``unit`` and ``ucd``)."""
    fields = [f.with_metadata({b"unit": b"deg"}) if f.name in ("ra", "dec") else f for f in gaia.schema]
    fields = [f.with_metadata({b"unit": b"mag"}) if f.name == "phot_g_mean_mag" else f for f in fields]
    return gaia.cast(pa.schema(fields))


OBJECTS = 200


def _objects_fits(path: Path) -> Path:
    """A FITS binary table whose TUNIT and TUCD keywords describe its columns; `mag` and `name` share their
    names with survey.obj's columns but not their metadata."""
    rng = np.random.default_rng(11)
    columns = [
        fits.Column(name="id", format="K", array=np.arange(1, OBJECTS + 1)),
        fits.Column(name="ra", format="D", unit="deg", array=rng.uniform(8, 12, OBJECTS)),
        fits.Column(name="dec", format="D", unit="deg", array=rng.uniform(18, 22, OBJECTS)),
        fits.Column(name="mag", format="E", unit="mag", array=rng.uniform(10, 20, OBJECTS)),
        fits.Column(name="name", format="10A", array=np.array([f"o{i}" for i in range(OBJECTS)])),
        fits.Column(name="flag", format="L", array=rng.integers(0, 2, OBJECTS).astype(bool)),
    ]
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header["TUCD1"] = "meta.id;meta.main"
    hdu.header["TUCD4"] = "phot.mag;em.opt.G"
    hdu.writeto(path)
    return path


@pytest.fixture(scope="module", name="meta_vo")
def meta_vo_fixture(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaVO]:
    name = control_database(pg_server, "vm")
    directory = tmp_path_factory.mktemp("vometa")
    deployment = Deployment.create(directory / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    gaia = gaia_table().take(pa.array(np.arange(0, 482_176, 40)))
    try:
        migrate.upgrade(deployment)
        store = deployment.data_dir / "backbone" / "main"
        store.mkdir(parents=True)
        images, files = _write_images(store)
        publish_test_data(deployment)
        with deployment.engine().begin() as conn:
            for image in images:
                conn.execute(
                    sa.text('UPDATE ivoa."ObsCore" SET access_url = :u WHERE obs_publisher_did = :d'),
                    {"u": image["access_url"], "d": image["obs_publisher_did"]},
                )
        path = write_parquet(_with_units(gaia), directory / "gaia.parquet")
        load_files(
            deployment,
            "gaia",
            [path],
            progress=False,
            create=TableOptions(
                ra="ra", dec="dec", id="source_id", chunk_order=2, ucds={"phot_g_mean_mag": "phot.mag;em.opt"}
            ),
        )
        load_files(
            deployment,
            "objects",
            [_objects_fits(directory / "objects.fits")],
            progress=False,
            create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=2, like="gaia"),
        )
        with running_server(deployment) as url:
            yield MetaVO(url, deployment, gaia, images, files)
    finally:
        deployment.dispose()
        drop_database(pg_server, name)
