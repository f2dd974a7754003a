"""Simple Cone Search 1.1 at /scs/{table} for every published table with a main position."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.services.vo import formats, vosi
from dms.services.vo.errors import ServiceError
from dms.services.vo.http import XML, Context, guarded, read_params
from dms.services.vo.tap_schema import Table

DEFAULT_ROWS = 10_000
HARD_ROWS = 1_000_000
TIMEOUT = 60.0


def cone_tables(context: Context) -> list[Table]:
    """Published tables with an RA and a Dec column (by UCD), ObsCore excepted (SIA serves it)."""
    return [
        t
        for t in context.tables()
        if t.column_with_ucd("pos.eq.ra")
        and t.column_with_ucd("pos.eq.dec")
        and not t.name.lower().startswith(("ivoa.", "tap_schema."))
    ]


def _number(params_value: str | None, name: str, low: float, high: float) -> float:
    if params_value is None or params_value.strip() == "":
        raise ServiceError(f"{name} is missing")
    try:
        value = float(params_value)
    except ValueError:
        raise ServiceError(f"{name} {params_value!r} is not a number") from None
    if not low <= value <= high:
        raise ServiceError(f"{name} {value:g} is outside [{low:g}, {high:g}]")
    return value


class ConeSearch:
    def __init__(self, context: Context) -> None:
        self.context = context

    def _table(self, name: str) -> Table:
        table = next((t for t in cone_tables(self.context) if t.name.lower() == name.lower()), None)
        if table is None:
            valid = ", ".join(t.name for t in cone_tables(self.context)) or "none"
            raise ServiceError(f"no cone search on {name!r}; tables with positions: {valid}", status=404)
        return table

    def search(
        self,
        name: str,
        ra_text: str | None,
        dec_text: str | None,
        sr_text: str | None,
        verb: str | None,
        maxrec: str | None,
        fmt_name: str | None,
    ) -> bytes:
        table = self._table(name)
        ra = _number(ra_text, "RA", 0, 360)
        dec = _number(dec_text, "DEC", -90, 90)
        sr = (
            _number(sr_text, "SR", 0, 180) if sr_text is None or not sr_text.strip().startswith("-") else None
        )
        if sr is None:
            raise ServiceError(f"SR {sr_text} is negative; give a radius in degrees, 0 to 180")
        level = int(verb) if verb in ("1", "2", "3") else 2
        if verb not in (None, "", "1", "2", "3"):
            raise ServiceError(f"VERB {verb!r} is not supported; valid: 1, 2, 3")
        rows = DEFAULT_ROWS if not maxrec else int(_number(maxrec, "MAXREC", 0, HARD_ROWS))
        ra_col, dec_col = table.column_with_ucd("pos.eq.ra"), table.column_with_ucd("pos.eq.dec")
        assert ra_col is not None and dec_col is not None
        id_col = table.column_with_ucd("meta.id")
        if level == 3:
            chosen = [c.name for c in table.columns]
        else:
            chosen = [
                c.name
                for c in table.columns
                if (c.principal and level == 2) or c in (ra_col, dec_col, id_col)
            ]
        select = ", ".join(dict.fromkeys(chosen))
        query = (
            f"SELECT {select} FROM {table.name} WHERE CONTAINS(POINT('ICRS', {ra_col.name}, {dec_col.name}), "
            f"CIRCLE('ICRS', {ra!r}, {dec!r}, {sr!r})) = 1"
        )
        result = self.context.executor.execute(query, lang="adql", max_rows=rows, timeout=TIMEOUT)
        columns = {c.name.lower(): c for c in table.columns}
        return formats.render(formats.choose(fmt_name), result.table, columns, overflow=result.overflow)

    async def query(self, request: Request) -> Response:
        params = await read_params(request)
        name = request.path_params["table"]
        fmt = formats.choose(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
        body = await run_in_threadpool(
            self.search,
            name,
            params.get("RA"),
            params.get("DEC"),
            params.get("SR"),
            params.get("VERB"),
            params.get("MAXREC"),
            params.get("RESPONSEFORMAT") or params.get("FORMAT"),
        )
        return Response(body, media_type=fmt.mime)

    async def capabilities(self, request: Request) -> Response:
        name = request.path_params["table"]
        await run_in_threadpool(self._table, name)
        base = str(request.base_url).rstrip("/")
        xml = vosi.service_capabilities(
            base, f"scs/{name}", "ivo://ivoa.net/std/ConeSearch", f"{base}/scs/{name}"
        )
        return Response(xml, media_type=XML)

    async def availability(self, request: Request) -> Response:
        await run_in_threadpool(self._table, request.path_params["table"])
        return Response(vosi.availability(True, "cone search accepting queries"), media_type=XML)

    def routes(self) -> list[Route]:
        return [
            Route("/scs/{table}/capabilities", guarded(self.capabilities), methods=["GET"]),
            Route("/scs/{table}/availability", guarded(self.availability), methods=["GET"]),
            Route("/scs/{table}", guarded(self.query), methods=["GET", "POST"]),
        ]
