"""The mini-broker over HTTP (`dms minibroker serve`): each token's user sees and changes only their own data.

    GET    /minibroker/filters                     the caller's filters
    POST   /minibroker/filters                     {"name", "where", "select"?}: checked, then stored
    DELETE /minibroker/filters/{id}                remove one of the caller's filters
    GET    /minibroker/watchlists                  the caller's watch lists
    POST   /minibroker/watchlists/{name}           {"positions": [[ra, dec, radius_arcsec, label?], ...]}
    GET    /minibroker/matches?after=SEQ           the caller's feed: matches after SEQ (resume from the last)
    GET    /minibroker/runs                        the caller's filter evaluations (errors of stopped filters)

Every request needs a bearer token with scope `minibroker` (services/auth.py); errors are JSON
``{"error": message}`` with 400 (bad filter), 401/403 (token) or 404 (not the caller's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dms.services.auth import AuthError, User, authenticate, middleware
from dms.services.minibroker import store
from dms.services.minibroker.errors import MinibrokerError, NotYoursError


def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _caller(request: Request) -> User:
    user = authenticate(request)
    if user is None:
        raise AuthError("this service needs a token: send Authorization: Bearer TOKEN", error=None)
    return user


Handler = Callable[[sa.Connection, User, Request, dict[str, Any]], Any]


def make_app(engine: Callable[[], sa.Engine]) -> Starlette:
    """The mini-broker's Starlette app on the control database `engine()`."""

    def endpoint(handler: Handler, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                user = _caller(request)
                body: dict[str, Any] = {}
                if request.method == "POST":
                    try:
                        body = await request.json()
                    except ValueError:
                        return _error("the request body must be a JSON object", 400)
                    if not isinstance(body, dict):
                        return _error("the request body must be a JSON object", 400)

                def work() -> Any:
                    with engine().begin() as conn:
                        return handler(conn, user, request, body)

                return JSONResponse(await run_in_threadpool(work), status_code=status)
            except AuthError as exc:
                return _error(str(exc), exc.status)
            except NotYoursError as exc:
                return _error(str(exc), 404)
            except MinibrokerError as exc:
                return _error(str(exc), 400)

        return run

    routes = [
        Route("/minibroker/filters", endpoint(_list_filters), methods=["GET"]),
        Route("/minibroker/filters", endpoint(_add_filter, 201), methods=["POST"]),
        Route("/minibroker/filters/{filter_id:int}", endpoint(_remove_filter), methods=["DELETE"]),
        Route("/minibroker/watchlists", endpoint(_list_watchlists), methods=["GET"]),
        Route("/minibroker/watchlists/{name}", endpoint(_add_watch, 201), methods=["POST"]),
        Route("/minibroker/matches", endpoint(_matches), methods=["GET"]),
        Route("/minibroker/runs", endpoint(_runs), methods=["GET"]),
    ]
    auth = middleware(engine, _error, allow_anonymous=False, service="minibroker")
    return Starlette(routes=routes, middleware=[auth])


def _list_filters(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    return [f.as_dict() for f in store.list_filters(conn, user.name)]


def _add_filter(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    name, where, select = body.get("name"), body.get("where"), body.get("select", "")
    if not isinstance(name, str) or not isinstance(where, str) or not isinstance(select, str):
        raise MinibrokerError('give {"name": ..., "where": ..., "select": ...} as strings')
    filter_id = store.add_filter(conn, user.name, name, where, select)
    return {"filter_id": filter_id}


def _remove_filter(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    store.remove_filter(conn, user.name, int(request.path_params["filter_id"]))
    return {"removed": int(request.path_params["filter_id"])}


def _list_watchlists(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    return store.list_watchlists(conn, user.name)


def _add_watch(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    positions = body.get("positions")
    if not isinstance(positions, list):
        raise MinibrokerError('give {"positions": [[ra, dec, radius_arcsec, label], ...]}')
    entries = []
    for item in positions:
        if not isinstance(item, list) or len(item) not in (3, 4):
            raise MinibrokerError(f"a position is [ra, dec, radius_arcsec, label?], not {item!r}")
        try:
            ra, dec, radius = (float(v) for v in item[:3])
        except (TypeError, ValueError):
            raise MinibrokerError(f"ra, dec and radius must be numbers: {item!r}") from None
        entries.append((ra, dec, radius, str(item[3]) if len(item) == 4 else ""))
    return {"added": store.add_watch(conn, user.name, request.path_params["name"], entries)}


def _matches(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    try:
        after = int(request.query_params.get("after", "0"))
        limit = min(int(request.query_params.get("limit", "10000")), 100_000)
    except ValueError:
        raise MinibrokerError("after and limit must be integers") from None
    return store.list_matches(conn, user.name, after=after, limit=limit)


def _runs(conn: sa.Connection, user: User, request: Request, body: dict[str, Any]) -> Any:
    return store.list_runs(conn, user.name)
