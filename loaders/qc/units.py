"""Units of QC metrics, thresholds and measurements: validated by astropy, registered for the database.

The thresholds trigger converts between units inside PostgreSQL, from each unit's factor to SI base units
and its dimension (the base units without the factor) in ``dms.qc_unit``. astropy computes both; two
units convert into each other when their dimensions are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import astropy.units as u
import psycopg
import sqlalchemy as sa

from dms.loaders.qc.errors import QCUnitError

DEFAULT_UNITS: tuple[str, ...] = (
    "",
    "%",
    "mag",
    "mmag",
    "dex",
    "arcsec",
    "mas",
    "arcmin",
    "deg",
    "rad",
    "pix",
    "s",
    "ms",
    "min",
    "h",
    "d",
    "K",
    "m",
    "mm",
    "um",
    "nm",
    "Pa",
    "hPa",
    "m / s",
    "electron",
    "adu",
    "ct",
    "Hz",
    "W",
    "V",
    "A",
)
"""Units registered by the migration, so common metrics work without `dms qc unit add`."""


@dataclass(frozen=True)
class UnitInfo:
    """A unit string and what the database needs to convert it."""

    unit: str
    scale: float
    dimension: str


def describe_unit(unit: str) -> UnitInfo:
    """The SI factor and dimension of an astropy unit string; QCUnitError if astropy does not know it."""
    try:
        parsed = u.Unit(unit, parse_strict="raise")
        decomposed = parsed.decompose()
        scale = float(decomposed.scale)
        dimension = u.CompositeUnit(1, decomposed.bases, decomposed.powers).to_string()
    except (ValueError, TypeError, AttributeError) as exc:
        raise QCUnitError(
            f"unknown unit {unit!r}: not an astropy unit string with a fixed scale (examples: mmag, arcsec, "
            f"deg, s, K, %, m / s, '' for dimensionless): {str(exc).splitlines()[0].split('. ')[0]}"
        ) from exc
    if len(unit) > 32:
        raise QCUnitError(f"unit {unit!r} is longer than 32 characters")
    return UnitInfo(unit, scale, dimension)


_INSERT = "INSERT INTO dms.qc_unit (unit, scale, dimension) VALUES (%s, %s, %s) ON CONFLICT (unit) DO NOTHING"


def register_units(conn: psycopg.Connection[Any], units: list[str] | tuple[str, ...]) -> list[UnitInfo]:
    """Validate units with astropy and record them in dms.qc_unit (existing rows are kept)."""
    infos = [describe_unit(unit) for unit in dict.fromkeys(units)]
    with conn.cursor() as cur:
        cur.executemany(_INSERT, [(i.unit, i.scale, i.dimension) for i in infos])
    return infos


def check_convertible(unit: str, to_unit: str, what: str) -> None:
    """QCUnitError unless values in `unit` convert to `to_unit` (naming `what` needs the conversion)."""
    a, b = describe_unit(unit), describe_unit(to_unit)
    if a.dimension != b.dimension:
        raise QCUnitError(
            f"{what}: unit {unit!r} ({a.dimension or 'dimensionless'}) cannot be converted to "
            f"{to_unit!r} ({b.dimension or 'dimensionless'})"
        )


def seed_units(bind: sa.Connection) -> None:
    """Register DEFAULT_UNITS (run by the migration that creates dms.qc_unit)."""
    infos = [describe_unit(unit) for unit in DEFAULT_UNITS]
    bind.execute(
        sa.text("INSERT INTO dms.qc_unit (unit, scale, dimension) VALUES (:unit, :scale, :dimension)"),
        [{"unit": i.unit, "scale": i.scale, "dimension": i.dimension} for i in infos],
    )
