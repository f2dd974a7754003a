"""The portal's pages and the small JSON endpoints they need beside TAP, SIA and DataLink.

Pages and scripts (``/portal``, ``/portal/static/...``) are public: they hold no data. Everything else the
pages show comes from the VO endpoints or from ``/portal/api/...``, called with the user's bearer token
(kept in the tab's sessionStorage, see README "Portal"): who am I, the HEALPix density map of a catalog
table, a PNG preview (or cutout) of an image, and the light curve of a DiaObject.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from dms.errors import DMSError
from dms.query.registry import Registry
from dms.services.auth import AuthError, authenticate, require_scope
from dms.services.dbstate import DATABASE_DOWN, database_unreachable
from dms.services.portal.density import density_map, mapped_tables, parse_order
from dms.services.portal.lightcurve import light_curve, parse_object_id
from dms.services.portal.preview import preview_png
from dms.services.vo.errors import QueryError, ServiceError
from dms.services.vo.files import authorize_file, local_path
from dms.services.vo.http import Context, public_message

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "index.html"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
# The page loads only what this server serves: no inline script, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[Request], Awaitable[Response]]


def json_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def json_guarded(handler: Handler) -> Handler:
    """Every failure of a portal endpoint as {"error": message} with its status; never a traceback."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AuthError as exc:
            response = json_error(str(exc), exc.status)
            response.headers["WWW-Authenticate"] = exc.challenge()
            return response
        except (ServiceError, QueryError, DMSError) as exc:
            if database_unreachable(exc):
                return json_error(DATABASE_DOWN, 503)
            status = exc.status if isinstance(exc, ServiceError) else 400
            return json_error(public_message(request, str(exc)), status)
        except Exception as exc:
            if database_unreachable(exc):
                return json_error(DATABASE_DOWN, 503)
            raise

    return endpoint


def _float(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ServiceError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ServiceError(f"{name} must be a finite number")
    return value


class Portal:
    """The portal over the services' shared context."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.registry = Registry(context.deployment)

    # -- pages ----------------------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if name not in static_files():
            return json_error(f"no such file: {name}", 404)
        media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})

    # -- JSON endpoints -------------------------------------------------------------------------------------

    async def whoami(self, request: Request) -> Response:
        """Who the token belongs to and what it may do (the login page's check)."""
        user = authenticate(request)
        anonymous = bool(self.context.deployment.config.anonymous_access)
        if user is None:
            require_scope(request, "tap")  # refuses when anonymous access is off
            return JSONResponse({"user": None, "scopes": [], "anonymous_access": anonymous})
        return JSONResponse({"user": user.name, "scopes": sorted(user.scopes), "anonymous_access": anonymous})

    async def density_tables(self, request: Request) -> Response:
        require_scope(request, "tap")
        tables = await run_in_threadpool(mapped_tables, self.registry)
        return JSONResponse({"tables": tables})

    async def density(self, request: Request) -> Response:
        require_scope(request, "tap")
        table = request.query_params.get("table", "")
        if not table:
            raise ServiceError("table is missing: give a catalog table, e.g. table=cat.gaia")
        order = parse_order(request.query_params.get("order"))
        found = await run_in_threadpool(density_map, self.context.executor, self.registry, table, order)
        return Response(json.dumps(found.to_json()), media_type="application/json")

    async def preview(self, request: Request) -> Response:
        require_scope(request, "sia")
        did = request.query_params.get("id", "")
        if not did:
            raise ServiceError("id is missing: give the publisher DID of an image (obs_publisher_did)")
        authorize_file(request, did)
        ra, dec, size = _float(request, "ra"), _float(request, "dec"), _float(request, "size")
        if len({ra is None, dec is None, size is None}) > 1:
            raise ServiceError("a cutout needs ra, dec and size (degrees) together")
        if size is not None and not 0 < size <= 10:
            raise ServiceError(f"size {size} is out of range: give 0 < size <= 10 degrees")
        path = await run_in_threadpool(self._image_path, did)
        body = await run_in_threadpool(preview_png, path, ra, dec, size)
        return Response(body, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    async def lightcurve(self, request: Request) -> Response:
        require_scope(request, "tap")
        object_id = parse_object_id(request.query_params.get("diaObjectId"))
        found = await run_in_threadpool(light_curve, self.context.deployment, object_id)
        return JSONResponse(found)

    def _image_path(self, did: str) -> Path:
        quoted = did.replace("'", "''")
        rows = self.context.executor.execute(
            f"SELECT access_url FROM ivoa.ObsCore WHERE obs_publisher_did = '{quoted}'",
            lang="adql",
            max_rows=2,
            timeout=30,
        ).table.to_pylist()
        if not rows:
            raise ServiceError(f"no image with ID {did}", status=404)
        url = rows[0]["access_url"]
        path = local_path(url) if url else None
        if path is None or not path.is_file():
            raise ServiceError(f"the file of image {did} is not available on this server", status=404)
        return path

    def routes(self) -> list[Route]:
        return [
            Route("/portal", lambda request: RedirectResponse("/portal/"), methods=["GET"]),
            Route("/portal/", self.page, methods=["GET"]),
            Route("/portal/static/{name}", self.static, methods=["GET"]),
            Route("/portal/api/whoami", json_guarded(self.whoami), methods=["GET"]),
            Route("/portal/api/density-tables", json_guarded(self.density_tables), methods=["GET"]),
            Route("/portal/api/density", json_guarded(self.density), methods=["GET"]),
            Route("/portal/api/preview", json_guarded(self.preview), methods=["GET"]),
            Route("/portal/api/lightcurve", json_guarded(self.lightcurve), methods=["GET"]),
        ]


def static_files() -> list[str]:
    """The files under static/ (served by name only: no path reaches the file system unchecked)."""
    return sorted(p.name for p in STATIC.iterdir() if p.is_file() and p.name != "index.html")


def public_paths() -> tuple[str, ...]:
    """Paths the authentication middleware lets through without a token: the page and its scripts."""
    return ("/portal", "/portal/", *(f"/portal/static/{name}" for name in static_files()))


__all__ = ["Portal", "public_paths"]
