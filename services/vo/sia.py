"""SIA 2.0 at /sia/query over ivoa.ObsCore (the images the Data Backbone holds).

Every SIA 2.0 parameter is supported; values of one parameter are ORed, parameters are ANDed. Positions
match on the image's footprint: an image is found when its ``s_region`` intersects the CIRCLE, POLYGON or
RANGE (exactly, by ``adql_intersects`` on ``s_region_shape``, after its HEALPix coverage). A RANGE is the
polygon whose edges follow its meridians exactly and its parallels within 1 arcsecond (vertices every
half degree), in pieces at most 90 degrees wide. An image without a footprint shape (no ``s_region``, or
one that is not a single shape) is found by its centre: within the circle enlarged by half its field of
view (``s_fov``), or inside the RANGE / POLYGON. ObsCore has no polarization states, so POL matches nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.services.vo import formats, vosi
from dms.services.vo.errors import ServiceError
from dms.services.vo.files import public_access_urls
from dms.services.vo.http import XML, Context, Params, guarded, read_params
from dms.services.vo.votable import result_votable

OBSCORE = "ivoa.ObsCore"
DEFAULT_ROWS = 10_000
HARD_ROWS = 1_000_000
STOKES = {"I", "Q", "U", "V", "RR", "LL", "RL", "LR", "XX", "YY", "XY", "YX", "POLI", "POLA"}
# parameter -> (ObsCore min column, ObsCore max column) for numeric intervals
INTERVALS = {
    "BAND": ("em_min", "em_max"),
    "TIME": ("t_min", "t_max"),
    "FOV": ("s_fov", "s_fov"),
    "SPATRES": ("s_resolution", "s_resolution"),
    "EXPTIME": ("t_exptime", "t_exptime"),
    "TIMERES": ("t_resolution", "t_resolution"),
    "SPECRP": ("em_res_power", "em_res_power"),
}
STRINGS = {
    "ID": "obs_publisher_did",
    "COLLECTION": "obs_collection",
    "FACILITY": "facility_name",
    "INSTRUMENT": "instrument_name",
    "DPTYPE": "dataproduct_type",
    "TARGET": "target_name",
    "FORMAT": "access_format",
}


def _float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ServiceError(f"{name}: {text!r} is not a number") from None
    if math.isnan(value):
        raise ServiceError(f"{name}: NaN is not a valid bound")
    return value


def _literal(value: float) -> str:
    return repr(value)


def _interval(name: str, value: str) -> tuple[float, float]:
    parts = value.split()
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ServiceError(f"{name} {value!r} is not an interval: give LOW HIGH (or one value)")
    low, high = (_float(p, name) for p in parts)
    if low > high:
        raise ServiceError(f"{name} {value!r}: the low bound is above the high bound")
    return low, high


RANGE_STEP = 0.5
"""Degrees between the vertices along a RANGE's parallels (the great-circle chords stay within 1")."""
RANGE_PIECE = 90.0
"""Widest RANGE piece in longitude (each piece is a polygon smaller than a hemisphere)."""


def _pos(value: str) -> str:
    words = value.split()
    shape = words[0].upper() if words else ""
    numbers = [_float(w, "POS") for w in words[1:]]
    if shape == "CIRCLE" and len(numbers) == 3:
        ra, dec, radius = numbers
        _check_position(ra, dec)
        if not 0 <= radius <= 180:
            raise ServiceError(f"POS {value!r}: the radius must be within [0, 180] degrees")
        return _footprint_or_centre(
            f"INTERSECTS(s_region, CIRCLE({ra!r}, {dec!r}, {radius!r})) = 1",
            f"DISTANCE(POINT(s_ra, s_dec), POINT({ra!r}, {dec!r})) <= {radius!r} + COALESCE(s_fov, 0) / 2",
        )
    if shape == "RANGE" and len(numbers) == 4:
        ra1, ra2, dec1, dec2 = numbers
        if ra1 > ra2 or dec1 > dec2:
            raise ServiceError(f"POS {value!r}: RANGE needs lon1 <= lon2 and lat1 <= lat2")
        ra1, ra2 = max(0.0, ra1), min(360.0, ra2)
        dec1, dec2 = max(-90.0, dec1), min(90.0, dec2)
        if ra1 > ra2 or dec1 > dec2:
            return "1 = 0"  # the range lies outside the sky
        pieces = " OR ".join(
            f"INTERSECTS(s_region, POLYGON({', '.join(repr(c) for c in vertices)})) = 1"
            for vertices in _range_polygons(ra1, ra2, dec1, dec2)
        )
        return _footprint_or_centre(
            f"({pieces})", f"(s_ra BETWEEN {ra1!r} AND {ra2!r} AND s_dec BETWEEN {dec1!r} AND {dec2!r})"
        )
    if shape == "POLYGON" and len(numbers) >= 6 and len(numbers) % 2 == 0 and len(numbers) <= 40:
        for i in range(0, len(numbers), 2):
            _check_position(numbers[i], numbers[i + 1])
        coords = ", ".join(repr(n) for n in numbers)
        return _footprint_or_centre(
            f"INTERSECTS(s_region, POLYGON({coords})) = 1",
            f"CONTAINS(POINT(s_ra, s_dec), POLYGON({coords})) = 1",
        )
    raise ServiceError(
        f"POS {value!r} is invalid; valid: CIRCLE ra dec radius | RANGE ra1 ra2 dec1 dec2 | "
        "POLYGON ra1 dec1 ... (3 to 20 vertices), degrees"
    )


def _footprint_or_centre(footprint: str, centre: str) -> str:
    """Match on the footprint where the row has its shape, else (no footprint) on the image centre."""
    return f"((s_region_shape IS NOT NULL AND {footprint}) OR (s_region_shape IS NULL AND {centre}))"


def _range_polygons(ra1: float, ra2: float, dec1: float, dec2: float) -> list[list[float]]:
    """The RANGE as polygons (flat vertex lists), each at most RANGE_PIECE wide, parallels densified."""
    pieces = max(1, math.ceil((ra2 - ra1) / RANGE_PIECE - 1e-12))
    polygons = []
    for k in range(pieces):
        lo = ra1 + (ra2 - ra1) * k / pieces
        hi = ra1 + (ra2 - ra1) * (k + 1) / pieces
        steps = max(1, math.ceil((hi - lo) / RANGE_STEP))
        lons = [lo + (hi - lo) * i / steps for i in range(steps + 1)]
        # a parallel at a pole is one point: its vertices would repeat it
        bottom = [(lon, dec1) for lon in (lons if abs(dec1) < 90 else [lo, hi])]
        top = [(lon, dec2) for lon in reversed(lons if abs(dec2) < 90 else [lo, hi])]
        polygons.append([c for vertex in bottom + top for c in vertex])
    return polygons


def _check_position(ra: float, dec: float) -> None:
    if not (0 <= ra <= 360 and -90 <= dec <= 90):
        raise ServiceError(f"POS: position ({ra:g}, {dec:g}) is outside RA [0, 360], Dec [-90, 90]")


def sia_query(params: Params) -> str:
    """The ADQL query of an SIA 2.0 request."""
    conditions: list[str] = []

    def any_of(name: str, build: Callable[[str], str]) -> None:
        values = params.all(name)
        if values:
            conditions.append("(" + " OR ".join(build(v) for v in values) + ")")

    any_of("POS", _pos)
    for name, (low_col, high_col) in INTERVALS.items():

        def interval(value: str, name: str = name, low_col: str = low_col, high_col: str = high_col) -> str:
            low, high = _interval(name, value)
            clauses = []
            if math.isfinite(high):
                clauses.append(f"{low_col} <= {_literal(high)}")
            if math.isfinite(low):
                clauses.append(f"{high_col} >= {_literal(low)}")
            return "(" + " AND ".join(clauses or ["1 = 1"]) + ")"

        any_of(name, interval)
    for name, column in STRINGS.items():

        def equals(value: str, column: str = column) -> str:
            return f"{column} = '{value.replace(chr(39), chr(39) * 2)}'"

        any_of(name, equals)

    def calib(value: str) -> str:
        if value.strip() not in ("0", "1", "2", "3", "4"):
            raise ServiceError(f"CALIB {value!r} is invalid; valid: 0, 1, 2, 3, 4")
        return f"calib_level = {int(value)}"

    any_of("CALIB", calib)

    def pol(value: str) -> str:
        if value.strip().upper() not in STOKES:
            raise ServiceError(f"POL {value!r} is invalid; valid: {', '.join(sorted(STOKES))}")
        return "1 = 0"  # no polarization states in this ObsCore

    any_of("POL", pol)
    where = " AND ".join(conditions) if conditions else "1 = 1"
    return f"SELECT * FROM {OBSCORE} WHERE {where}"


class ImageAccess:
    def __init__(self, context: Context) -> None:
        self.context = context

    def search(self, params: Params, base: str) -> tuple[bytes, str, bool]:
        maxrec = params.get("MAXREC")
        try:
            rows = DEFAULT_ROWS if not maxrec else int(maxrec)
        except ValueError:
            raise ServiceError(f"MAXREC {maxrec!r} is not a whole number") from None
        if rows < 0:
            raise ServiceError(f"MAXREC {rows} is negative")
        fmt = formats.choose(params.get("RESPONSEFORMAT"))
        result = self.context.executor.execute(
            sia_query(params), lang="adql", max_rows=min(rows, HARD_ROWS), timeout=60
        )
        obscore = self.context.table(OBSCORE)
        columns = {c.name.lower(): c for c in obscore.columns} if obscore is not None else {}
        table = public_access_urls(result.table, base)
        if fmt in (formats.VOTABLE, formats.VOTABLE_B2):
            serialization = "binary2" if fmt is formats.VOTABLE_B2 else "tabledata"
            body = result_votable(
                table,
                columns,
                overflow=result.overflow,
                serialization=serialization,
                datalink=("obs_publisher_did", f"{base}/datalink"),
            )
            return body, fmt.mime, result.overflow
        return formats.render(fmt, table, columns, overflow=result.overflow), fmt.mime, result.overflow

    async def query(self, request: Request) -> Response:
        params = await read_params(request)
        body, mime, overflow = await run_in_threadpool(self.search, params, str(request.base_url).rstrip("/"))
        return Response(body, media_type=mime, headers=formats.result_headers(overflow))

    async def capabilities(self, request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        xml = vosi.service_capabilities(base, "sia", "ivo://ivoa.net/std/SIA#query-2.0", f"{base}/sia/query")
        return Response(xml, media_type=XML)

    async def availability(self, request: Request) -> Response:
        return Response(vosi.availability(True, "SIA accepting queries"), media_type=XML)

    def routes(self) -> list[Route]:
        return [
            Route("/sia/query", guarded(self.query), methods=["GET", "POST"]),
            Route("/sia/capabilities", guarded(self.capabilities), methods=["GET"]),
            Route("/sia/availability", guarded(self.availability), methods=["GET"]),
        ]
