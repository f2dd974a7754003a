"""The light curve of a DiaObject: its DiaSource and DiaForcedSource history from the APDB, by time."""

from __future__ import annotations

import math
from typing import Any

from psycopg import sql

from dms.deployment import Deployment
from dms.services.apdb import Apdb
from dms.services.vo.errors import ServiceError

MAX_POINTS = 100_000
HISTORY = ("DiaSource", "DiaForcedSource")


def parse_object_id(text: str | None) -> int:
    if not text:
        raise ServiceError("diaObjectId is missing: give the integer id of a DiaObject")
    try:
        value = int(text)
    except ValueError:
        raise ServiceError(f"diaObjectId {text!r} is not an integer") from None
    if not -(2**63) <= value < 2**63:
        raise ServiceError(f"diaObjectId {text} is outside the 64-bit range of APDB ids")
    return value


def _points(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {"mjd": mjd, "band": band, "flux": _finite(flux), "flux_err": _finite(err)}
        for mjd, band, flux, err in rows
    ]


def _finite(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def light_curve(deployment: Deployment, object_id: int) -> dict[str, Any]:
    """{diaObjectId, sources, forced}: each a list of {mjd, band, flux, flux_err} (nJy), ordered by time."""
    apdb = Apdb.from_deployment(deployment)
    try:
        with apdb.cursor() as cur:
            found: dict[str, list[dict[str, Any]]] = {}
            for name in HISTORY:
                query = sql.SQL(
                    'SELECT "midpointMjdTai", band, "psfFlux", "psfFluxErr" FROM {} '
                    'WHERE "diaObjectId" = %(id)s ORDER BY "midpointMjdTai" LIMIT %(limit)s'
                ).format(sql.Identifier("apdb", name))
                found[name] = _points(cur.execute(query, {"id": object_id, "limit": MAX_POINTS}).fetchall())
            known = cur.execute(
                sql.SQL('SELECT EXISTS (SELECT 1 FROM {} WHERE "diaObjectId" = %(id)s)').format(
                    sql.Identifier("apdb", "DiaObject")
                ),
                {"id": object_id},
            ).fetchone()
    finally:
        apdb.close()
    if not (known and known[0]):
        raise ServiceError(f"no DiaObject {object_id} in the APDB", status=404)
    return {"diaObjectId": object_id, "sources": found["DiaSource"], "forced": found["DiaForcedSource"]}
