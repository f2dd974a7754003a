"""Wavelength ranges of filters, for ObsCore's em_min/em_max (metres).

Approximate half-maximum ranges: Rubin's ugrizy as in the Rubin ObsCore configuration, Johnson-Cousins
UBVRI and SDSS ugriz from their published passbands, and HST-style names (F606W: centre 606 nm; W, M, N and
LP widths). Unknown filters give no range (NULL), never a guess.
"""

from __future__ import annotations

import re

_NM = 1e-9

BANDS_NM: dict[str, tuple[float, float]] = {
    "u": (330.0, 400.0),
    "g": (402.0, 552.0),
    "r": (552.0, 691.0),
    "i": (691.0, 818.0),
    "z": (818.0, 922.0),
    "y": (949.0, 1060.0),
    "U": (320.0, 400.0),
    "B": (390.0, 490.0),
    "V": (500.0, 590.0),
    "R": (560.0, 720.0),
    "I": (720.0, 880.0),
}

_HST = re.compile(r"^F(\d{3,4})(W|M|N|LP|X)$", re.IGNORECASE)
_HST_WIDTH = {"W": 0.25, "M": 0.10, "N": 0.01, "X": 0.40}


def band_of(physical_filter: str, band: str | None = None) -> str | None:
    """The abstract band of a physical filter (r_57 -> r, SDSS r' -> r, B -> B), or the given band."""
    if band:
        return band
    name = physical_filter.strip()
    base = re.split(r"[_~\s']", name)[0] if name else ""
    return base if base in BANDS_NM else None


def wavelength_range(physical_filter: str, band: str | None) -> tuple[float | None, float | None]:
    """(em_min, em_max) in metres, or (None, None) if the filter is unknown."""
    if band and band in BANDS_NM:
        lo, hi = BANDS_NM[band]
        return lo * _NM, hi * _NM
    match = _HST.match(physical_filter.strip())
    if match:
        centre = float(match.group(1))
        kind = match.group(2).upper()
        if kind == "LP":
            return centre * _NM, 1100.0 * _NM
        half = centre * _HST_WIDTH[kind] / 2
        return (centre - half) * _NM, (centre + half) * _NM
    return None, None
