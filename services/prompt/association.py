"""Association of a detector's DiaSources with the APDB's DiaObjects, computed in the database.

Each DiaSource is matched to the nearest current DiaObject within the association radius, as a KD-tree
nearest-neighbour query would match it; sources with none become new DiaObjects, whose id is the id of the
DiaSource that made them (as Rubin's ap_association does). The match runs in PostgreSQL: the sources go to a
temporary table by COPY together with the HEALPix cells around each (the cell of the source at an order whose
cells are wider than twice the radius, and its eight neighbours, as `_healpix_29` ranges), the candidates come
from the partial index of current DiaObjects, the exact distance is `scisql_angSep`, and `DISTINCT ON` keeps
the nearest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import healpy
import numpy as np
import pandas as pd
import pyarrow as pa
from psycopg import sql

from dms.services.apdb import Apdb, ApdbInputError
from dms.services.apdb.copyio import copy_in, copy_out

ORDER_29 = 29
MAX_RADIUS_ARCSEC = 60.0


@dataclass(frozen=True)
class Association:
    """The outcome for one batch of DiaSources."""

    matched: pd.DataFrame  # diaSourceId, diaObjectId, distance_arcsec
    new_object_ids: np.ndarray  # the diaSourceIds that start new DiaObjects (their ids are the same)

    def object_ids(self, source_ids: np.ndarray) -> np.ndarray:
        """The DiaObject of each source, in the order of `source_ids`."""
        mapping = dict(
            zip(self.matched["diaSourceId"].tolist(), self.matched["diaObjectId"].tolist(), strict=True)
        )
        return np.array([mapping.get(int(s), int(s)) for s in source_ids], np.int64)


def cell_order(radius_arcsec: float) -> int:
    """The finest HEALPix order whose cells are about four radii wide: HEALPix cells are not square, and their
    narrowest width stays above the radius, so the 3 x 3 block around a source's cell holds every point within
    the radius."""
    order = 0
    while order < ORDER_29 and math.degrees(healpy.nside2resol(1 << (order + 1))) * 3600 >= 4 * radius_arcsec:
        order += 1
    return order


def neighbour_ranges(ra: np.ndarray, dec: np.ndarray, radius_arcsec: float) -> pd.DataFrame:
    """For each position (row k), the `_healpix_29` ranges of its cell and the cell's neighbours."""
    order = cell_order(radius_arcsec)
    nside = 1 << order
    cells = healpy.ang2pix(nside, ra, dec, nest=True, lonlat=True)
    around = healpy.get_all_neighbours(nside, cells, nest=True)  # (8, n), -1 where a cell has 7 neighbours
    block = np.vstack([cells[None, :], around])
    rows = np.broadcast_to(np.arange(len(ra)), block.shape)
    keep = block >= 0
    shift = 2 * (ORDER_29 - order)
    pixels = block[keep].astype(np.int64)
    return pd.DataFrame(
        {"k": rows[keep].astype(np.int64), "lo": pixels << shift, "hi": ((pixels + 1) << shift) - 1}
    )


def associate(apdb: Apdb, sources: pd.DataFrame, radius_arcsec: float = 1.0) -> Association:
    """Match `sources` (diaSourceId, ra, dec) to the current DiaObjects within `radius_arcsec`."""
    if not 0 < radius_arcsec <= MAX_RADIUS_ARCSEC:
        raise ApdbInputError(f"association radius {radius_arcsec} arcsec must be in (0, {MAX_RADIUS_ARCSEC}]")
    missing = [c for c in ("diaSourceId", "ra", "dec") if c not in sources.columns]
    if missing:
        raise ApdbInputError(f"association needs DiaSource columns {missing}")
    ids = sources["diaSourceId"].to_numpy(np.int64)
    if len(ids) == 0:
        return Association(_empty_matches(), np.zeros(0, np.int64))
    ra = sources["ra"].to_numpy(float)
    dec = sources["dec"].to_numpy(float)
    if not (np.isfinite(ra).all() and np.isfinite(dec).all() and (np.abs(dec) <= 90).all()):
        raise ApdbInputError("association: every DiaSource needs a finite ra and a dec within [-90, 90]")
    cells = neighbour_ranges(ra % 360.0, dec, radius_arcsec)
    candidates = pa.table(
        {
            "source_id": pa.array(ids[cells["k"].to_numpy()]),
            "ra": pa.array(ra[cells["k"].to_numpy()]),
            "dec": pa.array(dec[cells["k"].to_numpy()]),
            "lo": pa.array(cells["lo"].to_numpy()),
            "hi": pa.array(cells["hi"].to_numpy()),
        }
    )
    matched = _match_in_database(apdb, candidates, radius_arcsec)
    new = np.setdiff1d(ids, matched["diaSourceId"].to_numpy(np.int64))
    return Association(matched, new)


def _empty_matches() -> pd.DataFrame:
    return pd.DataFrame(
        {"diaSourceId": np.zeros(0, np.int64), "diaObjectId": np.zeros(0, np.int64), "distance_arcsec": []}
    )


MATCH = """
SELECT DISTINCT ON (c.source_id) c.source_id AS "diaSourceId", o."diaObjectId",
       scisql_angSep(c.ra, c.dec, o.ra, o.dec) * 3600 AS distance_arcsec
FROM pg_temp.association_cell c
CROSS JOIN LATERAL (
    -- OFFSET 0 keeps this a per-cell index range scan (the planner may not flatten it into a join that
    -- reads every current DiaObject once per cell)
    SELECT x."diaObjectId", x.ra, x.dec FROM {objects} x
    WHERE x."_healpix_29" BETWEEN c.lo AND c.hi AND x."validityEndMjdTai" IS NULL OFFSET 0
) o
WHERE scisql_angSep(c.ra, c.dec, o.ra, o.dec) <= {radius}
ORDER BY c.source_id, distance_arcsec, o."diaObjectId"
"""


def _match_in_database(apdb: Apdb, candidates: pa.Table, radius_arcsec: float) -> pd.DataFrame:
    objects = sql.Identifier(apdb.config.namespace, "DiaObject")
    schema = pa.schema(
        [("diaSourceId", pa.int64()), ("diaObjectId", pa.int64()), ("distance_arcsec", pa.float64())]
    )
    with apdb.cursor() as cur, cur.connection.transaction():
        cur.execute(
            "CREATE TEMP TABLE association_cell "
            "(source_id bigint, ra float8, dec float8, lo bigint, hi bigint) ON COMMIT DROP"
        )
        copy_in(cur, sql.Identifier("pg_temp", "association_cell"), candidates)
        cur.execute("ANALYZE pg_temp.association_cell")
        query = sql.SQL(MATCH).format(objects=objects, radius=sql.Literal(radius_arcsec / 3600.0))
        table = copy_out(cur, query, schema)
    frame: Any = table.to_pandas()
    return frame
