"""Rubin-shaped camelCase tables (after the PT1.2 schema Qserv is tested with: Object, Source, RefObject and
the RefObject-Object match table) and an unpartitioned DuckDB copy of them: the independent answer.

Column names keep PT1.2's spelling (`objectId`, `ra_PS`, `decl_PS`, `scienceCcdExposureId`, `taiMidPoint`),
so every query written for Qserv, unquoted, must find them on PostgreSQL shards too. The rows are synthetic:
objects spread over a few sky patches (dense enough for near-neighbour pairs), a few sources per object
within an arcsecond of it, reference objects near some of the objects, and the match table (a Qserv
"ref-match" table like PT1.2's RefSrcMatch) pairing each reference object with the objects within 2 arcsec of
it (computed here with numpy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import healpy
import numpy as np
import pyarrow as pa

from dms.deployment import Deployment
from dms.loaders.catalog import LoadResult, TableOptions, load_files
from dms.loaders.samples import write_parquet
from dms.udfs import register_duckdb

PATCHES = ((10.0, -5.0), (150.0, 2.0), (359.5, 30.0), (220.0, -60.0))
MATCH_RADIUS_DEG = 2.0 / 3600.0


@dataclass
class RubinSample:
    files: dict[str, Path]
    tables: dict[str, pa.Table]


def _positions(rng: np.random.Generator, n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    patch = rng.integers(0, len(PATCHES), n)
    centers = np.array(PATCHES)[patch]
    dec = np.clip(centers[:, 1] + rng.uniform(-spread, spread, n), -89.9, 89.9)
    ra = (centers[:, 0] + rng.uniform(-spread, spread, n) / np.cos(np.radians(dec))) % 360.0
    return ra, dec


def _objects(rng: np.random.Generator, n: int) -> pa.Table:
    ra, dec = _positions(rng, n, 1.5)
    flux = rng.lognormal(8, 1.2, (3, n))
    return pa.table(
        {
            "objectId": np.arange(430_209_694_171_136, 430_209_694_171_136 + n * 7, 7, dtype=np.int64),
            "ra_PS": ra,
            "ra_PS_Sigma": rng.uniform(1e-6, 1e-5, n).astype(np.float32),
            "decl_PS": dec,
            "decl_PS_Sigma": rng.uniform(1e-6, 1e-5, n).astype(np.float32),
            "gFlux_PS": flux[0],
            "rFlux_PS": flux[1],
            "iFlux_PS": flux[2],
            "uNumObs": rng.integers(0, 12, n).astype(np.int32),
            "extendedness": rng.choice(np.array([0, 1], np.int16), n),
        }
    )


def _sources(rng: np.random.Generator, objects: pa.Table) -> pa.Table:
    per_object = rng.integers(1, 5, objects.num_rows)
    parent = np.repeat(np.arange(objects.num_rows), per_object)
    n = len(parent)
    jitter = rng.normal(0, 0.3 / 3600.0, (2, n))
    dec = objects["decl_PS"].to_numpy()[parent] + jitter[1]
    ra = (objects["ra_PS"].to_numpy()[parent] + jitter[0] / np.cos(np.radians(dec))) % 360.0
    return pa.table(
        {
            "sourceId": np.arange(n, dtype=np.int64) + 2_199_023_255_552,
            "scienceCcdExposureId": rng.integers(7_202_320_671, 7_202_320_671 + 40, n),
            "filterId": rng.integers(0, 6, n).astype(np.int16),
            "objectId": objects["objectId"].to_numpy()[parent],
            "ra": ra,
            "decl": dec,
            "taiMidPoint": 51_000.0 + rng.uniform(0, 3_000, n),
            "psfFlux": rng.lognormal(8, 1.2, n),
            "psfFluxSigma": rng.uniform(1, 50, n),
        }
    )


def _reference(rng: np.random.Generator, objects: pa.Table) -> pa.Table:
    """Reference objects: most near an object (within ~1.5 arcsec), a few alone."""
    n = objects.num_rows // 3
    pick = rng.choice(objects.num_rows, n, replace=False)
    near = rng.uniform(0, 1, n) < 0.85
    dec = objects["decl_PS"].to_numpy()[pick] + np.where(near, rng.normal(0, 0.6 / 3600.0, n), 0.01)
    ra = (objects["ra_PS"].to_numpy()[pick] + np.where(near, 0.0, 0.01)) % 360.0
    return pa.table(
        {
            "refObjectId": np.arange(n, dtype=np.int64) + 1_000,
            "isStar": rng.integers(0, 2, n).astype(np.int16),
            "ra": ra,
            "decl": dec,
            "gMag": rng.uniform(14, 24, n),
            "rMag": rng.uniform(14, 24, n),
        }
    )


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


def _matches(reference: pa.Table, objects: pa.Table) -> pa.Table:
    """Every (reference object, object) pair closer than MATCH_RADIUS_DEG (an exact numpy computation)."""
    ref_v = _unit(reference["ra"].to_numpy(), reference["decl"].to_numpy())
    obj_v = _unit(objects["ra_PS"].to_numpy(), objects["decl_PS"].to_numpy())
    order = np.argsort(objects["decl_PS"].to_numpy())
    obj_dec = objects["decl_PS"].to_numpy()[order]
    pairs: list[tuple[int, int, float]] = []
    for i, dec in enumerate(reference["decl"].to_numpy()):
        lo, hi = np.searchsorted(obj_dec, [dec - 0.01, dec + 0.01])
        candidates = order[lo:hi]
        cosines = np.clip(obj_v[candidates] @ ref_v[i], -1.0, 1.0)
        separation = np.degrees(np.arccos(cosines))
        close = separation < MATCH_RADIUS_DEG
        for j, sep in zip(candidates[close], separation[close], strict=True):
            pairs.append((i, int(j), float(sep) * 3600.0))
    ref_idx = np.array([p[0] for p in pairs], np.int64)
    obj_idx = np.array([p[1] for p in pairs], np.int64)
    n_ref = np.bincount(ref_idx, minlength=reference.num_rows)[ref_idx]
    return pa.table(
        {
            "refObjectId": reference["refObjectId"].to_numpy()[ref_idx],
            "objectId": objects["objectId"].to_numpy()[obj_idx],
            "angSep": np.array([p[2] for p in pairs]),
            "nRefMatches": n_ref.astype(np.int32),
        }
    )


def _boundary_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions on both sides of HEALPix order-3 pixel edges (0.8 arcsec apart), near each patch: a chunk
    edge at every finer order too, so each pair straddles two chunks whatever the adaptive layout."""
    ra_a, ra_b, decs = [], [], []
    for ra0, dec0 in PATCHES:
        for k in range(8):
            dec = dec0 + (k - 4) * 0.2
            ra = (ra0 + np.linspace(-10, 10, 20_001)) % 360.0
            pixels = healpy.ang2pix(8, ra, np.full(len(ra), dec), nest=True, lonlat=True)
            edge = int(np.flatnonzero(np.diff(pixels))[0])
            lo, hi = float(ra0 - 10 + edge * 1e-3), float(ra0 - 10 + (edge + 1) * 1e-3)
            inside = healpy.ang2pix(8, lo % 360.0, dec, nest=True, lonlat=True)
            for _ in range(40):  # bisection to the edge
                mid = (lo + hi) / 2
                if healpy.ang2pix(8, mid % 360.0, dec, nest=True, lonlat=True) == inside:
                    lo = mid
                else:
                    hi = mid
            half = 0.4 / 3600.0 / np.cos(np.radians(dec))
            ra_a.append((lo - half) % 360.0)
            ra_b.append((hi + half) % 360.0)
            decs.append(dec)
    return np.array(ra_a), np.array(ra_b), np.array(decs)


def _append_positions(
    table: pa.Table, ra: np.ndarray, dec: np.ndarray, columns: tuple[str, str, str]
) -> pa.Table:
    """`table` with rows at (ra, dec), the other values copied from its first rows and new ids."""
    extra = table.slice(0, len(ra))
    id_column, ra_column, dec_column = columns
    ids = table[id_column].to_numpy()
    step = int(ids[1] - ids[0]) if len(ids) > 1 else 1
    extra = extra.set_column(
        extra.schema.get_field_index(id_column),
        id_column,
        pa.array(ids[-1] + step * np.arange(1, len(ra) + 1)),
    )
    extra = extra.set_column(extra.schema.get_field_index(ra_column), ra_column, pa.array(ra))
    extra = extra.set_column(extra.schema.get_field_index(dec_column), dec_column, pa.array(dec))
    return pa.concat_tables([table, extra])


def make_rubin_sample(directory: Path, objects: int = 6_000, seed: int = 19) -> RubinSample:
    rng = np.random.default_rng(seed)
    ra_a, ra_b, dec = _boundary_pairs()
    obj = _append_positions(_objects(rng, objects), ra_a, dec, ("objectId", "ra_PS", "decl_PS"))
    ref = _append_positions(_reference(rng, obj), ra_b, dec, ("refObjectId", "ra", "decl"))
    tables = {"Object": obj, "Source": _sources(rng, obj), "RefObject": ref}
    tables["RefObjMatch"] = _matches(tables["RefObject"], obj)
    files = {name: write_parquet(table, directory / f"{name}.parquet") for name, table in tables.items()}
    return RubinSample(files, tables)


def load_rubin(
    deployment: Deployment,
    sample: RubinSample,
    *,
    storage: str,
    schema: str = "cat",
    only: tuple[str, ...] = ("Object", "Source", "RefObject"),
    like: str | None = "Object",
) -> dict[str, LoadResult]:
    """Object and RefObject as directors (RefObject with Object's chunk layout when `like`), Source as
    Object's child, RefObjMatch as the match table of RefObject and Object; the tables named in `only`."""
    files = sample.files
    # a fixed layout (order 4): RefObject copies it exactly, also where Object is sparse
    director = {"chunk_order": 4, "max_chunk_rows": None, "overlap_arcsec": 30.0, "storage": storage}
    options = {
        "Object": TableOptions(ra="ra_PS", dec="decl_PS", id="objectId", **director),  # type: ignore[arg-type]
        "Source": TableOptions(role="child", director=f"{schema}.Object", director_key="objectId"),
        "RefObject": TableOptions(
            ra="ra", dec="decl", id="refObjectId", like=f"{schema}.{like}", storage=storage
        )
        if like
        else TableOptions(ra="ra", dec="decl", id="refObjectId", **director),  # type: ignore[arg-type]
        "RefObjMatch": TableOptions(
            role="match",
            director=f"{schema}.RefObject",
            director_key="refObjectId",
            director2=f"{schema}.Object",
            director_key2="objectId",
        ),
    }
    return {
        name: load_files(deployment, f"{schema}.{name}", [files[name]], progress=False, create=options[name])
        for name in only
    }


def rubin_reference(sample: RubinSample, schema: str = "cat") -> duckdb.DuckDBPyConnection:
    """One unpartitioned DuckDB copy of the tables, under their camelCase names."""
    conn = duckdb.connect()
    register_duckdb(conn, temporary=False)
    conn.execute(f"CREATE SCHEMA {schema}")
    for name, table in sample.tables.items():
        conn.register(f"_{name}", table)
        conn.execute(f'CREATE TABLE {schema}."{name}" AS SELECT * FROM "_{name}"')
        conn.unregister(f"_{name}")
    return conn
