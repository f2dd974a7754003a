"""Simple Cone Search 1.1 at /scs/{table} for every published table with a main position, listed at /scs.

Tables are named as TAP names them: schema-qualified or, where only one cone table has that name, bare;
case-insensitively. Errors are SCS error documents (an INFO named "Error" under VOTABLE, SCS 1.03 section 3),
so SCS clients such as pyvo report the message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from dms.query.adql.grammar import quote_identifier
from dms.schema.catalog import legacy_name
from dms.services.vo import formats, vosi
from dms.services.vo.errors import QueryError, ServiceError
from dms.services.vo.http import VOTABLE_MIME, XML, Context, public_message, read_params
from dms.services.vo.tap_schema import Table
from dms.services.vo.votable import cone_error_votable

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


def find_cone_table(tables: list[Table], name: str) -> Table:
    """The cone table `name` names: SCHEMA.TABLE, or a bare TABLE that only one schema has (any case)."""
    wanted = name.strip().strip('"').lower()
    if "." in wanted:  # the deprecated catalog.<name> spelling of cat.<name> still resolves
        wanted = (legacy_name(*wanted.split(".", 1)) or wanted).lower()
    found = [t for t in tables if t.name.lower() == wanted]
    if not found and "." not in wanted:
        found = [t for t in tables if t.name.lower().split(".", 1)[-1] == wanted]
    if len(found) == 1:
        return found[0]
    if found:
        choices = ", ".join(t.name for t in found)
        raise ServiceError(f"cone search {name!r} is ambiguous; name one of {choices}")
    valid = ", ".join(t.name for t in tables) or "none"
    raise ServiceError(f"no cone search on {name!r}; tables with positions: {valid}", status=404)


def cone_guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Bad requests and failed queries as SCS error documents (with the HTTP status of the failure)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ServiceError as exc:
            message, status = str(exc), exc.status
        except QueryError as exc:
            message, status = str(exc), 400
        document = cone_error_votable(public_message(request, message))
        return Response(document, status_code=status, media_type=VOTABLE_MIME)

    return endpoint


def listing_page(base: str, tables: list[Table]) -> str:
    """The /scs page: one cone search per table with a position, with its URL and description."""
    items = "".join(
        f'<li><a href="{escape(base)}/scs/{escape(t.name)}">{escape(t.name)}</a>: '
        f"{escape(t.description or '')} (RA, DEC, SR in degrees; capabilities at "
        f"<code>/scs/{escape(t.name)}/capabilities</code>)</li>"
        for t in tables
    )
    return (
        "<!DOCTYPE html><html><head><title>DMS cone searches</title></head><body>"
        f"<h1>Simple Cone Search 1.1</h1><ul>{items or '<li>no table with a position is published</li>'}"
        "</ul></body></html>"
    )


def _identifier(name: str) -> str:
    """An ADQL identifier: bare when it is a plain lower-case name and no reserved word, else delimited."""
    return quote_identifier(name.strip('"'))


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
        return find_cone_table(cone_tables(self.context), name)

    def search(
        self,
        name: str,
        ra_text: str | None,
        dec_text: str | None,
        sr_text: str | None,
        verb: str | None,
        maxrec: str | None,
        fmt_name: str | None,
    ) -> tuple[bytes, bool]:
        """The cone's rows in the requested format, and whether MAXREC cut them."""
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
        select = ", ".join(_identifier(c) for c in dict.fromkeys(chosen))
        source = ".".join(_identifier(part) for part in table.name.split(".", 1))
        position = f"POINT('ICRS', {_identifier(ra_col.name)}, {_identifier(dec_col.name)})"
        query = (
            f"SELECT {select} FROM {source} WHERE CONTAINS({position}, "
            f"CIRCLE('ICRS', {ra!r}, {dec!r}, {sr!r})) = 1"
        )
        result = self.context.executor.execute(query, lang="adql", max_rows=rows, timeout=TIMEOUT)
        columns = {c.name.lower(): c for c in table.columns}
        body = formats.render(formats.choose(fmt_name), result.table, columns, overflow=result.overflow)
        return body, result.overflow

    async def query(self, request: Request) -> Response:
        params = await read_params(request)
        name = request.path_params["table"]
        fmt = formats.choose(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
        body, overflow = await run_in_threadpool(
            self.search,
            name,
            params.get("RA"),
            params.get("DEC"),
            params.get("SR"),
            params.get("VERB"),
            params.get("MAXREC"),
            params.get("RESPONSEFORMAT") or params.get("FORMAT"),
        )
        return Response(body, media_type=fmt.mime, headers=formats.result_headers(overflow))

    async def capabilities(self, request: Request) -> Response:
        name = (await run_in_threadpool(self._table, request.path_params["table"])).name
        base = str(request.base_url).rstrip("/")
        xml = vosi.service_capabilities(
            base, f"scs/{name}", "ivo://ivoa.net/std/ConeSearch", f"{base}/scs/{name}"
        )
        return Response(xml, media_type=XML)

    async def availability(self, request: Request) -> Response:
        await run_in_threadpool(self._table, request.path_params["table"])
        return Response(vosi.availability(True, "cone search accepting queries"), media_type=XML)

    async def listing(self, request: Request) -> Response:
        tables = await run_in_threadpool(cone_tables, self.context)
        return HTMLResponse(listing_page(str(request.base_url).rstrip("/"), tables))

    def routes(self) -> list[Route]:
        return [
            Route("/scs", cone_guarded(self.listing), methods=["GET"]),
            Route("/scs/{table}/capabilities", cone_guarded(self.capabilities), methods=["GET"]),
            Route("/scs/{table}/availability", cone_guarded(self.availability), methods=["GET"]),
            Route("/scs/{table}", cone_guarded(self.query), methods=["GET", "POST"]),
        ]
