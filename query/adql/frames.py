"""The coordinate-system argument of POINT, CIRCLE, BOX and POLYGON (deprecated in ADQL 2.1, any string).

DMS stores ICRS positions. A shape given in FK5 (J2000), FK4 (B1950), GALACTIC or ECLIPTIC with constant
coordinates is transformed to ICRS with astropy (a BOX by its corners, so it becomes the polygon it is on
the sky); anything else (an unknown frame, or a known frame on column values) is taken as ICRS with a
warning. What was done is reported as notes, which the services put in the result's INFO elements and the
command line prints.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot import exp

ICRS_FRAMES = frozenset({"", "ICRS"})
# ADQL / STC-S frame names -> (astropy frame, its equinox); ECLIPTIC is the J2000 mean ecliptic.
KNOWN_FRAMES: dict[str, tuple[str, str | None]] = {
    "FK5": ("fk5", "J2000"),
    "J2000": ("fk5", "J2000"),
    "FK4": ("fk4", "B1950"),
    "B1950": ("fk4", "B1950"),
    "GALACTIC": ("galactic", None),
    "GALACTIC_II": ("galactic", None),
    "ECLIPTIC": ("barycentricmeanecliptic", "J2000"),
}


@dataclass(frozen=True)
class Note:
    """One thing the translation did that the user should know about."""

    text: str
    info_name: str = "COORDSYS"
    """The name of the VOTable INFO element that carries it (WARNING for a warning)."""

    @property
    def warning(self) -> bool:
        return self.info_name == "WARNING"


_notes: contextvars.ContextVar[list[Note] | None] = contextvars.ContextVar("adql_notes", default=None)


@contextlib.contextmanager
def collect_notes() -> Iterator[list[Note]]:
    """Collect the notes of the ADQL translations made inside the block (in this thread or task)."""
    notes: list[Note] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


def note(text: str, *, warning: bool = False, info_name: str = "COORDSYS") -> None:
    """Record `text` for the translation in progress (if notes are being collected)."""
    collected = _notes.get()
    if collected is not None and all(n.text != text for n in collected):
        collected.append(Note(text, "WARNING" if warning else info_name))


def infos(notes: list[Note]) -> dict[str, str]:
    """Notes as VOTable INFO name -> value (several notes of one kind joined by '; ')."""
    grouped: dict[str, list[str]] = {}
    for n in notes:
        grouped.setdefault(n.info_name, []).append(n.text)
    return {name: "; ".join(texts) for name, texts in grouped.items()}


def frame_name(text: str) -> str:
    """The frame of a coordinate-system string: its first word, upper case ('ICRS GEOCENTER' -> ICRS)."""
    words = text.upper().split()
    return words[0] if words else ""


def constant(node: exp.Expression) -> float | None:
    """The value of a numeric literal (possibly negated), else None."""
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    if isinstance(node, exp.Neg):
        inner = constant(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Paren):
        return constant(node.this)
    return None


def number(value: float) -> exp.Expression:
    literal = exp.Literal.number(repr(abs(value)))
    return exp.Neg(this=literal) if value < 0 else literal


def to_icrs(
    function: str, frame_text: str, pairs: list[tuple[exp.Expression, exp.Expression]]
) -> list[tuple[exp.Expression, exp.Expression]] | None:
    """The (lon, lat) pairs of a `function` shape given in `frame_text`, in ICRS; None to keep them as
    they are (ICRS already, or taken as ICRS with a warning note)."""
    frame = frame_name(frame_text)
    if frame in ICRS_FRAMES:
        return None
    if frame not in KNOWN_FRAMES:
        note(
            f"{function}: coordinate system {frame_text!r} is not known; its coordinates were taken as ICRS",
            warning=True,
        )
        return None
    values = [(constant(lon), constant(lat)) for lon, lat in pairs]
    if any(lon is None or lat is None for lon, lat in values):
        note(
            f"{function}: coordinates in {frame_text!r} were taken as ICRS: only constant coordinates are "
            "transformed",
            warning=True,
        )
        return None
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    name, equinox = KNOWN_FRAMES[frame]
    options = {"equinox": equinox} if equinox else {}
    lons = [lon for lon, _ in values]
    lats = [lat for _, lat in values]
    icrs = SkyCoord(lons * u.deg, lats * u.deg, frame=name, **options).icrs
    note(
        f"{function}: {len(values)} position(s) in {frame_text!r} transformed to ICRS with astropy "
        f"({name}{', equinox ' + equinox if equinox else ''} -> icrs)"
    )
    return [
        (number(float(ra)), number(float(dec)))
        for ra, dec in zip(icrs.ra.deg.tolist(), icrs.dec.deg.tolist(), strict=True)
    ]
