"""The ASGI application of the VO services, and its HTML landing page."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dms.deployment import Deployment
from dms.services.auth import middleware as auth_middleware
from dms.services.dbstate import DATABASE_DOWN, database_unreachable
from dms.services.portal.api import Portal
from dms.services.portal.api import public_paths as portal_paths
from dms.services.vo.datalink import DataLink
from dms.services.vo.executor import QueryExecutor, make_executor
from dms.services.vo.files import ImageFiles
from dms.services.vo.http import Context, error_response
from dms.services.vo.limits import BodyLimit, RequestLimits
from dms.services.vo.scs import ConeSearch, cone_tables
from dms.services.vo.sia import ImageAccess
from dms.services.vo.tap import TapService
from dms.services.workspace.api import platform_routes
from dms.services.workspace.viewer import ViewerMiddleware

log = logging.getLogger(__name__)


PUBLIC_PATHS = ("/", "/tap")


def make_app(
    deployment: Deployment,
    executor: QueryExecutor | None = None,
    limits: RequestLimits | None = None,
    *,
    recover_jobs: bool = True,
) -> Starlette:
    """TAP, SCS, SIA, DataLink and their VOSI endpoints over one deployment.

    Every request passes the body-size cap (413) and the bearer-token check (401/403) before its handler;
    a database that cannot be reached is a 503 everywhere. At startup the app recovers the jobs a previous
    server left running (`recover_jobs`; False for the worker processes of `dms serve`, whose supervisor
    did that once) and picks up the queued ones.
    """
    context = Context(deployment, executor or make_executor(deployment))
    tap = TapService(context)
    scs, sia, datalink = ConeSearch(context), ImageAccess(context), DataLink(context)

    async def landing(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        tables = await run_in_threadpool(cone_tables, context)
        return HTMLResponse(landing_page(base, [t.name for t in tables]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if recover_jobs:
            removed = await run_in_threadpool(tap.remove_orphan_uploads)
            if removed:
                log.info("removed %d stored uploads no job refers to", removed)
            resumed = await run_in_threadpool(tap.jobs.resume)
            if resumed:
                log.info("queued again %d TAP jobs left by a previous server", resumed)
        else:
            await run_in_threadpool(tap.jobs.pick_up)
        yield
        await run_in_threadpool(tap.jobs.shutdown)

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": f"no such resource: {request.url.path}"}, 404)
        return error_response(f"no such resource: {request.url.path}", 404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None)
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"error": f"{request.method} is not allowed on {request.url.path}"}, 405, headers
            )
        return PlainTextResponse("Method Not Allowed", 405, headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        if database_unreachable(exc):
            return error_response(DATABASE_DOWN, 503)
        log.exception("unexpected error serving %s", request.url.path, exc_info=exc)
        return error_response(f"internal error ({type(exc).__name__}); the server log has the details", 500)

    routes = [Route("/", landing, methods=["GET"]), Route("/tap", landing, methods=["GET"])]
    routes += tap.routes() + scs.routes() + sia.routes() + datalink.routes() + ImageFiles(context).routes()
    routes += platform_routes(context)
    routes += Portal(context).routes()
    middleware = [
        Middleware(BodyLimit, limits=limits or RequestLimits(), render=error_response),
        auth_middleware(
            deployment.engine,
            error_response,
            allow_anonymous=deployment.config.anonymous_access,
            public_paths=PUBLIC_PATHS + portal_paths(),
        ),
        Middleware(ViewerMiddleware, config=deployment.config),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_allowed, 500: server_error},
    )
    app.state.context = context
    app.state.tap = tap
    return app


def landing_page(base: str, cone_tables: list[str]) -> str:
    links = [
        ("Portal", f"{base}/portal/", "ADQL editor, schema, results, sky plot, images, light curves"),
        ("TAP 1.1 (ADQL 2.1)", f"{base}/tap", "tables, capabilities, examples, sync and async queries"),
        ("TAP tables", f"{base}/tap/tables", "VOSI table set"),
        ("TAP capabilities", f"{base}/tap/capabilities", "TAPRegExt"),
        ("TAP examples", f"{base}/tap/examples", "DALI examples"),
        ("SIA 2.0", f"{base}/sia/query", "images in ivoa.ObsCore; capabilities at /sia/capabilities"),
        ("DataLink 1.1", f"{base}/datalink", "links of an image: ?ID=publisher DID"),
    ]
    links += [(f"Cone search {t}", f"{base}/scs/{t}", "RA, DEC, SR in degrees") for t in cone_tables]
    items = "".join(
        f'<li><a href="{escape(url)}">{escape(name)}</a>: {escape(text)}</li>' for name, url, text in links
    )
    return (
        "<!DOCTYPE html><html><head><title>DMS VO services</title></head><body>"
        f"<h1>DMS Virtual Observatory services</h1><ul>{items}</ul>"
        f"<p>From Python: <code>pyvo.dal.TAPService('{escape(base)}/tap').search('SELECT TOP 5 * FROM "
        "TAP_SCHEMA.tables')</code>; in TOPCAT: VO &gt; Table Access Protocol, URL "
        f"<code>{escape(base)}/tap</code>.</p></body></html>"
    )
