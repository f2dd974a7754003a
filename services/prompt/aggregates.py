"""New versions of DiaObjects from their DiaSources, computed in the database.

After association, each DiaObject touched by a visit gets a new version whose per-band aggregates summarise
every DiaSource of its history window plus the visit's own (not yet stored): the inverse-variance weighted
mean PSF flux and its error, the sample standard deviation, the number of sources per band, the total count,
the first and last source times, and the mean position. The visit's sources go to a temporary table by COPY;
the history is read through the (diaObjectId, midpointMjdTai) index; one GROUP BY computes every aggregate
(the position as the direction of the mean unit vector, so an object at RA 0 is not averaged to 180).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from astropy.time import Time
from psycopg import sql

from dms.services.apdb import Apdb, ApdbInputError
from dms.services.apdb.api import DAYS_PER_MONTH, SEEK_BY_INDEX
from dms.services.apdb.copyio import copy_in, copy_out

BANDS = "ugrizy"
NEEDED = ("diaSourceId", "diaObjectId", "midpointMjdTai", "ra", "dec", "band", "psfFlux", "psfFluxErr")


def _band_columns() -> list[sql.Composable]:
    columns: list[sql.Composable] = []
    for b in BANDS:
        band = sql.Literal(b)
        w = sql.SQL('CASE WHEN s.band = {b} AND s."psfFluxErr" > 0 THEN 1 / (s."psfFluxErr" ^ 2) END').format(
            b=band
        )
        flux = sql.SQL('CASE WHEN s.band = {b} THEN s."psfFlux" END').format(b=band)
        columns += [
            sql.SQL('(sum({w} * s."psfFlux") / sum({w}))::real AS {n}').format(
                w=w, n=sql.Identifier(f"{b}_psfFluxMean")
            ),
            sql.SQL("(1 / sqrt(sum({w})))::real AS {n}").format(w=w, n=sql.Identifier(f"{b}_psfFluxMeanErr")),
            sql.SQL("stddev_samp({f})::real AS {n}").format(f=flux, n=sql.Identifier(f"{b}_psfFluxSigma")),
            sql.SQL("count({f})::int AS {n}").format(f=flux, n=sql.Identifier(f"{b}_psfFluxNdata")),
        ]
    return columns


def _schema() -> pa.Schema:
    fields = [
        ("diaObjectId", pa.int64()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("nDiaSources", pa.int32()),
        ("firstDiaSourceMjdTai", pa.float64()),
        ("lastDiaSourceMjdTai", pa.float64()),
    ]
    for b in BANDS:
        fields += [
            (f"{b}_psfFluxMean", pa.float32()),
            (f"{b}_psfFluxMeanErr", pa.float32()),
            (f"{b}_psfFluxSigma", pa.float32()),
            (f"{b}_psfFluxNdata", pa.int32()),
        ]
    return pa.schema(fields)


AGGREGATE = """
WITH s AS (
    SELECT "diaSourceId", "diaObjectId", "midpointMjdTai", ra, dec, band, "psfFlux", "psfFluxErr"
    FROM pg_temp.visit_source
    UNION ALL
    SELECT h."diaSourceId", h."diaObjectId", h."midpointMjdTai", h.ra, h.dec, h.band, h."psfFlux",
           h."psfFluxErr"
    FROM {sources} h
    WHERE h."diaObjectId" IN (SELECT DISTINCT "diaObjectId" FROM pg_temp.visit_source)
      AND h."midpointMjdTai" > {start}
      AND h."diaSourceId" NOT IN (SELECT "diaSourceId" FROM pg_temp.visit_source)
)
SELECT s."diaObjectId",
       atan2d(avg(cosd(s.dec) * sind(s.ra)), avg(cosd(s.dec) * cosd(s.ra))) AS ra,
       atan2d(avg(sind(s.dec)), sqrt(avg(cosd(s.dec) * sind(s.ra)) ^ 2 + avg(cosd(s.dec) * cosd(s.ra)) ^ 2))
           AS dec,
       count(*)::int AS "nDiaSources",
       min(s."midpointMjdTai") AS "firstDiaSourceMjdTai", max(s."midpointMjdTai") AS "lastDiaSourceMjdTai",
       {bands}
FROM s GROUP BY s."diaObjectId" ORDER BY s."diaObjectId"
"""


def updated_objects(
    apdb: Apdb, visit_sources: pd.DataFrame, visit_time: Time, months: int | None = None
) -> pd.DataFrame:
    """One new DiaObject row per DiaObject of `visit_sources` (associated: diaObjectId set), from its
    history window (`months`, default the APDB's read_sources_months) and the visit's sources."""
    missing = [c for c in NEEDED if c not in visit_sources.columns]
    if missing:
        raise ApdbInputError(f"DiaObject aggregates need DiaSource columns {missing}")
    if visit_sources["diaObjectId"].isna().any():
        raise ApdbInputError(
            "every DiaSource must be associated (diaObjectId set) before its DiaObject is updated"
        )
    months = apdb.config.read_sources_months if months is None else months
    start = float(visit_time.tai.mjd) - months * DAYS_PER_MONTH
    batch = pa.Table.from_pandas(visit_sources[list(NEEDED)], preserve_index=False)
    query = sql.SQL(AGGREGATE).format(
        sources=sql.Identifier(apdb.config.namespace, "DiaSource"),
        start=sql.Literal(start),
        bands=sql.SQL(", ").join(_band_columns()),
    )
    with apdb.cursor() as cur, cur.connection.transaction():
        cur.execute(SEEK_BY_INDEX)
        cur.execute(
            'CREATE TEMP TABLE visit_source ("diaSourceId" bigint, "diaObjectId" bigint, '
            '"midpointMjdTai" float8, ra float8, dec float8, band char(1), "psfFlux" float8, '
            '"psfFluxErr" float8) '
            "ON COMMIT DROP"
        )
        copy_in(cur, sql.Identifier("pg_temp", "visit_source"), batch)
        table = copy_out(cur, query, _schema())
    frame: Any = table.to_pandas()
    frame["ra"] = frame["ra"] % 360.0  # atan2 gives (-180, 180]
    for b in BANDS:
        frame[f"{b}_psfFluxNdata"] = frame[f"{b}_psfFluxNdata"].fillna(0).astype(np.int32)
    return frame
