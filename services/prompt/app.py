"""The Prompt Processing service's HTTP interface (standing in for the OCS and Camera events).

    POST /next-visit   {"visit", "instrument", "mode", "band", "ra", "dec", "mjd_tai", "detectors", ...}
    POST /visit-ready  {"visit"}         -> 202, processing in the background
    GET  /visits/{id}                    -> state, error, timings per step, per-detector runs
    GET  /health

A malformed body, a wrong type or a missing field is a 400 naming it; an unknown visit a 404; a repeated
visit-ready a 409 (the visit is processed once). The handlers' database work runs in Starlette's thread pool,
so the event loop keeps answering while a visit is claimed or its status read.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dms.errors import DMSError
from dms.services.prompt.errors import VisitEventError, VisitNotFoundError, VisitStateError
from dms.services.prompt.service import PromptService
from dms.services.prompt.visits import parse_next_visit

MAX_BODY = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise VisitEventError(f"request body of {len(raw)} bytes exceeds {MAX_BODY}")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VisitEventError(f"request body is not JSON: {exc}") from None


STATUS = {VisitEventError: 400, VisitNotFoundError: 404, VisitStateError: 409}


def _handle(exc: DMSError) -> JSONResponse:
    for kind, status in STATUS.items():
        if isinstance(exc, kind):
            return _error(status, str(exc))
    return _error(503, str(exc))


def make_app(service: PromptService) -> Starlette:
    async def next_visit(request: Request) -> JSONResponse:
        try:
            event = parse_next_visit(await _body(request))
            return JSONResponse(await run_in_threadpool(service.next_visit, event), status_code=201)
        except DMSError as exc:
            return _handle(exc)

    async def visit_ready(request: Request) -> JSONResponse:
        try:
            body = await _body(request)
            visit = body.get("visit") if isinstance(body, dict) else None
            if not isinstance(visit, int) or isinstance(visit, bool) or not 0 <= visit < 2**62:
                raise VisitEventError('a visit-ready event is {"visit": <integer id>}')
            return JSONResponse(await run_in_threadpool(service.visit_ready, visit), status_code=202)
        except DMSError as exc:
            return _handle(exc)

    async def visit_status(request: Request) -> JSONResponse:
        text = request.path_params["visit"]
        if not text.isdigit() or len(text) > 19:
            return _error(400, f"visit id {text[:40]!r} is not an integer")
        try:
            record = await run_in_threadpool(service.status, int(text))
            return JSONResponse(record.as_json())
        except DMSError as exc:
            return _handle(exc)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/next-visit", next_visit, methods=["POST"]),
            Route("/visit-ready", visit_ready, methods=["POST"]),
            Route("/visits/{visit}", visit_status, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
