"""Level 2 QC: metrics of a data release computed from its tables, stored in the QC tables.

The release's tables (DP1 shapes and column names: Object, Source, ForcedSource, Visit, CcdVisit) are read
by name through the query engine, as any user would; the Gaia reference is read from the partitioned
catalog in a cone around the release's Objects. Each metric goes to dms.qc_measurement with production
scope, where the database checks it against the specifications of `level2_specs.yaml` (registered on first
use) and raises alarms that the Telemetry Gateway streams.

An alarm series is (instrument, detector, production), so per-band and per-patch values carry their band
or patch in the production name (``DR1/band=r``, ``DR1/patch=0,12``): a passing r band never clears the g
band's alarm. Every measurement's data ID holds the release.

    level2_metrics(deployment, "DR1", truth="truth.parquet")   # also: dms qc release DR1 --truth ...
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from sqlglot import exp

from dms.deployment import Deployment
from dms.loaders.qc import api
from dms.loaders.qc.errors import QCError
from dms.query.errors import QueryError
from dms.services.qc import metrics

log = logging.getLogger(__name__)

SPECS_FILE = Path(__file__).with_name("level2_specs.yaml")
#: Static truth sources completeness is measured on (transients and movers are not in a coadd's Objects).
STATIC_KINDS = ("gaia_star", "star")


class Level2Error(QCError):
    """The release's tables cannot give a metric (the message names the table and column)."""


@dataclass(frozen=True)
class ReleaseTables:
    """Names of a release's tables in the catalog, and the reference catalog."""

    object: str = "dp1.Object"
    source: str = "dp1.Source"
    forced_source: str = "dp1.ForcedSource"
    visit: str = "dp1.Visit"
    ccd_visit: str = "dp1.CcdVisit"
    gaia: str = "gaia"


@dataclass(frozen=True)
class Level2Settings:
    """How the metrics are computed."""

    match_radius_arcsec: float = 1.0  # Gaia and truth matches
    min_sources: int = 3  # Sources an object needs to count in PA1
    min_snr: float = 50.0  # of a Source in PA1 (psfFlux / psfFluxErr), when psfFluxErr is there
    bands: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")


@dataclass
class Level2Result:
    """One stored value: metric, value, unit, the production it is filed under, its data ID."""

    metric: str
    value: float
    unit: str
    production: str
    data_id: dict[str, Any] = field(default_factory=dict)
    measurement_id: int | None = None


# ---- reading ------------------------------------------------------------------------------------


def _select(table: str, columns: list[str], where: exp.Expression | None = None) -> str:
    """SELECT of quoted columns from a (schema-qualified) table, built as a sqlglot expression."""
    query = exp.select(*(exp.column(c, quoted=True) for c in columns)).from_(
        exp.to_table(table, dialect="postgres")
    )
    if where is not None:
        query = query.where(where)
    return query.sql(dialect="postgres")


def _columns(engine: Any, table: str) -> set[str]:
    """The columns of a catalog table, named as in a query (an unqualified name is in the default schema)."""
    from dms.schema.catalog import DEFAULT_SCHEMA

    tables = engine.registry.snapshot().tables
    wanted = table if "." in table else f"{DEFAULT_SCHEMA}.{table}"
    info = next((t for name, t in tables.items() if name.lower() == wanted.lower()), None)
    if info is None:
        known = ", ".join(sorted(tables)) or "none"
        raise Level2Error(f"table {table} is not in the catalog (tables: {known}); load the release first")
    return {c.name for c in info.columns}


def _has_table(engine: Any, table: str) -> bool:
    try:
        _columns(engine, table)
    except Level2Error:
        return False
    return True


def read_table(engine: Any, table: str, wanted: list[str], optional: tuple[str, ...] = ()) -> pa.Table:
    """Columns of a release table through the query engine; Level2Error naming a missing column."""
    present = _columns(engine, table)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise Level2Error(f"table {table} has no column {', '.join(missing)} (DP1 names are expected)")
    names = wanted + [c for c in optional if c in present]
    try:
        return engine.execute(_select(table, names)).table
    except QueryError as exc:
        raise Level2Error(f"reading {table}: {exc}") from exc


def gaia_around(engine: Any, table: str, ra: np.ndarray, dec: np.ndarray, margin_deg: float) -> pa.Table:
    """Gaia stars in the cone that covers the given positions (centre: their mean direction)."""
    xyz = np.stack(_unit(ra, dec))
    centre = xyz.mean(axis=1)
    centre /= np.linalg.norm(centre)
    c_ra = float(np.degrees(np.arctan2(centre[1], centre[0])) % 360.0)
    c_dec = float(np.degrees(np.arcsin(np.clip(centre[2], -1, 1))))
    radius = float(np.degrees(np.arccos(np.clip(centre @ xyz, -1, 1))).max()) + margin_deg
    present = _columns(engine, table)
    ra_col, dec_col = ("ra", "dec") if {"ra", "dec"} <= present else ("coord_ra", "coord_dec")
    cone = exp.EQ(
        this=exp.func(
            "scisql_s2PtInCircle",
            exp.column(ra_col, quoted=True),
            exp.column(dec_col, quoted=True),
            *(exp.Literal.number(repr(v)) for v in (c_ra, c_dec, min(radius, 180.0))),
        ),
        expression=exp.Literal.number(1),
    )
    try:
        result = engine.execute(_select(table, [ra_col, dec_col], cone)).table
    except QueryError as exc:
        raise Level2Error(f"reading the Gaia reference {table}: {exc}") from exc
    return result.rename_columns(["ra", "dec"])


def _unit(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, d = np.radians(ra), np.radians(dec)
    return np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)


def truth_positions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the static truth sources of a simulator truth table (Parquet: kind, id, ra, dec, one
    row per visit and detector), one per source; a table without `kind` counts every row's (id) once."""
    try:
        truth = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as exc:
        raise Level2Error(f"cannot read truth table {path}: {exc}") from None
    missing = {"ra", "dec"} - set(truth.columns)
    if missing:
        raise Level2Error(f"truth table {path} has no column {', '.join(sorted(missing))}")
    if "kind" in truth.columns:
        truth = truth[truth["kind"].isin(STATIC_KINDS)]
    keys = [k for k in ("kind", "id") if k in truth.columns]
    if keys:
        truth = truth.groupby(keys, sort=False)[["ra", "dec"]].first()
    return truth["ra"].to_numpy(float), truth["dec"].to_numpy(float)


# ---- computing ----------------------------------------------------------------------------------


def _numpy(table: pa.Table, column: str) -> np.ndarray:
    return table[column].to_numpy(zero_copy_only=False)


def _ids(table: pa.Table, column: str) -> np.ndarray:
    """An id column as int64, -1 where it is null (a Source no Object claims)."""
    return table[column].fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _source_objects(sources: pa.Table, objects: pa.Table, radius_arcsec: float) -> np.ndarray:
    """Each Source's objectId: its own column where the table has one (a DRP's association), otherwise
    the nearest Object within the match radius (-1 when none)."""
    if "objectId" in sources.column_names:
        return _ids(sources, "objectId")
    match = metrics.nearest(
        _numpy(sources, "ra"),
        _numpy(sources, "dec"),
        _numpy(objects, "coord_ra"),
        _numpy(objects, "coord_dec"),
        radius_arcsec,
    )
    ids = np.full(sources.num_rows, -1, np.int64)
    ids[match.matched] = _numpy(objects, "objectId")[match.index]
    return ids


class _Collector:
    """The results of one release, filed under the release (and a band or patch suffix)."""

    def __init__(self, release: str) -> None:
        self.release = release
        self.results: list[Level2Result] = []

    def add(self, metric: str, value: float, unit: str, suffix: str = "", **data_id: Any) -> None:
        production = self.release + suffix
        self.results.append(
            Level2Result(metric, value, unit, production, {"release": self.release, **data_id})
        )


def _repeatability_per_band(
    out: _Collector, metric: str, rows: pa.Table, object_of: np.ndarray, settings: Level2Settings
) -> None:
    """PA1-style scatter per band of measurements with S/N >= min_snr (when psfFluxErr is given)."""
    band, flux = _numpy(rows, "band").astype(str), _numpy(rows, "psfFlux").astype(float)
    usable = object_of >= 0
    if "psfFluxErr" in rows.column_names:
        with np.errstate(divide="ignore", invalid="ignore"):
            usable &= flux / _numpy(rows, "psfFluxErr").astype(float) >= settings.min_snr
    for b in sorted(set(band)):
        chosen = usable & (band == b)
        value, n = metrics.photometric_repeatability(object_of[chosen], flux[chosen], settings.min_sources)
        if n:
            out.add(metric, value, "mmag", f"/band={b}", band=b, n_objects=n)


def _astrometry(
    out: _Collector, engine: Any, tables: ReleaseTables, objects: pa.Table, radius: float
) -> None:
    ra, dec = _numpy(objects, "coord_ra"), _numpy(objects, "coord_dec")
    gaia = gaia_around(engine, tables.gaia, ra, dec, radius / 3600.0)
    median_mas, rms_mas, n_matched = metrics.astrometric_offsets(
        ra, dec, _numpy(gaia, "ra"), _numpy(gaia, "dec"), radius
    )
    log.info("%s: %d Objects, %d matched to Gaia", out.release, objects.num_rows, n_matched)
    out.add("validate_drp.AA1", median_mas, "mas", n_matched=n_matched)
    out.add("dms_drp.astrom_gaia_rms", rms_mas, "mas", n_matched=n_matched)


def _psf(out: _Collector, engine: Any, tables: ReleaseTables) -> None:
    ccd = read_table(engine, tables.ccd_visit, ["band"], ("seeing", "psfSigma", "pixelScale"))
    ccd_band = _numpy(ccd, "band").astype(str)
    for b in sorted(set(ccd_band)):
        rows = ccd_band == b

        def col(name: str, rows: np.ndarray = rows) -> np.ndarray | None:
            return _numpy(ccd, name).astype(float)[rows] if name in ccd.column_names else None

        fwhm, n = metrics.psf_fwhm(col("seeing"), col("psfSigma"), col("pixelScale"))
        if n:
            out.add("dms_drp.psf_fwhm", fwhm, "arcsec", f"/band={b}", band=b, n_ccd_visits=n)


def compute(
    engine: Any,
    release: str,
    tables: ReleaseTables,
    truth: str | Path | None = None,
    settings: Level2Settings | None = None,
) -> list[Level2Result]:
    """Every Level 2 metric of `release` from its tables (nothing stored)."""
    settings = settings or Level2Settings()
    radius = settings.match_radius_arcsec
    out = _Collector(release)
    objects = read_table(engine, tables.object, ["objectId", "coord_ra", "coord_dec"], ("tract", "patch"))
    if objects.num_rows == 0:
        raise Level2Error(f"table {tables.object} has no rows: release {release} has no Objects")
    _astrometry(out, engine, tables, objects, radius)

    sources = read_table(engine, tables.source, ["ra", "dec", "band", "psfFlux"], ("objectId", "psfFluxErr"))
    _repeatability_per_band(
        out, "validate_drp.PA1", sources, _source_objects(sources, objects, radius), settings
    )
    if _has_table(engine, tables.forced_source):
        forced = read_table(engine, tables.forced_source, ["objectId", "band", "psfFlux"], ("psfFluxErr",))
        object_of = _ids(forced, "objectId")
        _repeatability_per_band(out, "dms_drp.forced_repeatability", forced, object_of, settings)

    _psf(out, engine, tables)
    if truth is not None:
        truth_ra, truth_dec = truth_positions(truth)
        ra, dec = _numpy(objects, "coord_ra"), _numpy(objects, "coord_dec")
        fraction, n = metrics.completeness(truth_ra, truth_dec, ra, dec, radius)
        out.add("dms_drp.completeness", fraction, "", n_truth=n)
    if {"tract", "patch"} <= set(objects.column_names):
        counts = metrics.objects_per_patch(_numpy(objects, "tract"), _numpy(objects, "patch"))
        for (tract, patch), n in sorted(counts.items()):
            out.add(
                "dms_drp.objects_per_patch", float(n), "", f"/patch={tract},{patch}", tract=tract, patch=patch
            )
    return out.results


# ---- storing ------------------------------------------------------------------------------------


def load_specs(path: str | Path = SPECS_FILE) -> dict[str, dict[str, Any]]:
    """The metric -> {unit, description, specs} file; Level2Error naming a malformed entry."""
    try:
        specs = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise Level2Error(f"cannot read QC specifications {path}: {exc}") from None
    if not isinstance(specs, dict):
        raise Level2Error(f"QC specifications {path}: expected a mapping of metric -> definition")
    for name, entry in specs.items():
        if not isinstance(entry, dict) or "unit" not in entry or "description" not in entry:
            raise Level2Error(f"QC specifications {path}: {name} needs a unit and a description")
        for spec in entry.get("specs", []):
            if not {"level", "operator", "value"} <= set(spec):
                raise Level2Error(f"QC specifications {path}: a spec of {name} needs level, operator, value")
    return specs


def install_specs(conn: Any, specs: dict[str, dict[str, Any]]) -> int:
    """Register the metrics and their thresholds (named METRIC.LEVEL) that are not registered yet;
    returns how many thresholds were added."""
    added = 0
    for name, entry in specs.items():
        if conn.execute("SELECT 1 FROM dms.qc_metric WHERE name = %s", (name,)).fetchone() is None:
            with contextlib.suppress(QCError):  # registered meanwhile by another process
                api.add_metric(
                    conn,
                    name,
                    entry["unit"],
                    " ".join(str(entry["description"]).split()),
                    reference=entry.get("reference"),
                    tags=list(entry.get("tags", [])),
                )
        for spec in entry.get("specs", []):
            threshold = f"{name}.{spec['level']}"
            if conn.execute("SELECT 1 FROM dms.qc_threshold WHERE name = %s", (threshold,)).fetchone():
                continue
            with contextlib.suppress(QCError):
                api.add_threshold(
                    conn,
                    threshold,
                    name,
                    spec["operator"],
                    float(spec["value"]),
                    spec.get("unit", entry["unit"]),
                    spec["level"],
                    severity=spec.get("severity", "warning"),
                    description=spec.get("description"),
                )
                added += 1
    return added


def store(conn: Any, results: list[Level2Result]) -> None:
    """Insert the values as production-scope measurements (thresholds evaluated by the database)."""
    for r in results:
        r.measurement_id = api.insert_measurement(
            conn,
            api.Measurement(
                metric=r.metric,
                value=r.value,
                unit=r.unit,
                scope="production",
                production=r.production,
                data_id=r.data_id,
            ),
        )


def level2_metrics(
    deployment: Deployment,
    release: str,
    *,
    tables: ReleaseTables | None = None,
    truth: str | Path | None = None,
    settings: Level2Settings | None = None,
    specs: str | Path = SPECS_FILE,
) -> list[Level2Result]:
    """Compute the Level 2 QC metrics of `release`, store them in the QC tables (registering the metrics
    and specifications first) and return them; a failing specification raises its alarm."""
    from dms.query.engine import QueryEngine
    from dms.services.prompt.qc import connect

    definitions = load_specs(specs)
    with QueryEngine(deployment) as engine:
        results = compute(engine, release, tables or ReleaseTables(), truth, settings)
    with connect(deployment) as conn:
        install_specs(conn, definitions)
        store(conn, results)
    return results


def alarms_of(conn: Any, release: str) -> list[dict[str, Any]]:
    """The open alarms of a release's Level 2 measurements."""
    return [
        a
        for a in api.list_alarms(conn, active=True)
        if isinstance(a["data_id"], dict) and a["data_id"].get("release") == release
    ]
