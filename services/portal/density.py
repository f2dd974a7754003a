"""The HEALPix density map of a catalog table, counted in the database: ``_healpix_29 >> shift`` per row.

Every partitioned row stores its nested HEALPix index at order 29; its pixel at a coarser order k is the
index shifted right by 2 * (29 - k) bits, so the map is one GROUP BY that the query engine runs on every
shard and merges (COUNT -> SUM of counts). Pixel corners for drawing come from healpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import healpy as hp
import numpy as np
from sqlglot import exp

from dms.query.qserv_sql import SUBCHUNK_ORDER
from dms.query.registry import Registry
from dms.services.vo.errors import ServiceError
from dms.services.vo.executor import QueryExecutor

MAX_ORDER = 7
"""196,608 pixels at most: a map the browser draws in well under a second."""
DEFAULT_ORDER = 4


@dataclass(frozen=True)
class DensityMap:
    table: str
    order: int
    pixels: np.ndarray  # nested pixel indices at `order`, ascending
    counts: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """Pixels with their counts and their four corners (ra, dec in degrees) for drawing."""
        nside = hp.order2nside(self.order)
        corners: list[Any] = []
        if len(self.pixels):
            vectors = hp.boundaries(nside, self.pixels, step=1, nest=True)  # (n, 3, 4)
            theta, phi = hp.vec2ang(np.moveaxis(vectors, 1, 2).reshape(-1, 3))
            ra = np.degrees(phi).reshape(-1, 4)
            dec = (90.0 - np.degrees(theta)).reshape(-1, 4)
            corners = np.round(np.stack([ra, dec], axis=2), 4).tolist()
        return {
            "table": self.table,
            "order": self.order,
            "nside": nside,
            "total": int(self.counts.sum()),
            "pixels": [
                {"pixel": int(p), "count": int(c), "corners": k}
                for p, c, k in zip(self.pixels, self.counts, corners, strict=True)
            ],
        }


def mapped_tables(registry: Registry) -> list[str]:
    """Catalog tables partitioned by their own position (they carry ``_healpix_29``)."""
    return sorted(name for name, t in registry.snapshot().tables.items() if t.ra_column and t.dec_column)


def parse_order(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_ORDER
    try:
        order = int(text)
    except ValueError:
        raise ServiceError(f"order {text!r} is not an integer: give 0 to {MAX_ORDER}") from None
    if not 0 <= order <= MAX_ORDER:
        raise ServiceError(f"order {order} is out of range: give 0 to {MAX_ORDER}")
    return order


def density_query(table: str, order: int) -> str:
    """The engine's Qserv-dialect SQL for the counts per pixel; the table name is quoted by sqlglot.

    The Qserv dialect's virtual column ``subChunkId`` is the row's order-12 pixel, ``_healpix_29 >> 34``
    (the engine binds it so; user SQL cannot name ``_healpix_29`` itself), so shifting it by a further
    2 * (12 - order) bits is ``_healpix_29 >> 2 * (29 - order)``.
    """
    schema, _, name = table.partition(".")
    pixel = exp.BitwiseRightShift(
        this=exp.column("subChunkId"), expression=exp.Literal.number(2 * (SUBCHUNK_ORDER - order))
    )
    select = (
        exp.select(exp.alias_(pixel, "pixel"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(exp.table_(name, db=schema or None, quoted=True))
        .group_by(pixel.copy())
    )
    return select.sql(dialect="mysql")


def density_map(executor: QueryExecutor, registry: Registry, table: str, order: int) -> DensityMap:
    """Counts of `table`'s rows per HEALPix pixel at `order`, computed by the query engine."""
    known = mapped_tables(registry)
    match = next((t for t in known if t.lower() == table.lower()), None)
    if match is None:
        raise ServiceError(
            f"table {table!r} has no HEALPix index; tables with a density map: {', '.join(known) or 'none'}",
            status=404,
        )
    result = executor.execute(
        density_query(match, order), lang="qserv", max_rows=12 * 4**order + 1, timeout=120
    )
    rows = result.table.sort_by("pixel")
    pixels = np.asarray(rows["pixel"].to_numpy(zero_copy_only=False), dtype=np.int64)
    counts = np.asarray(rows["n"].to_numpy(zero_copy_only=False), dtype=np.int64)
    return DensityMap(match, order, pixels, counts)


__all__ = ["DEFAULT_ORDER", "MAX_ORDER", "DensityMap", "density_map", "density_query", "mapped_tables"]
