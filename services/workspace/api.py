"""The JSON API of the Science Platform under /api (the portal's pages and `dms.client` use it).

Log in with a token (POST /api/login) to get a session cookie, or send ``Authorization: Bearer TOKEN`` on
each request. Errors are ``{"error": message}`` with 400 (bad input), 401 (no or invalid credentials), 403
(scope), 404 (no such table, user, group or share; another user's private table is "no such table"), 409
(already exists) or 413 (over quota or too large).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dms.services.auth import (
    NEEDS_TOKEN,
    SESSION_COOKIE,
    SESSION_HOURS,
    AuthError,
    TokenBackend,
    User,
    end_session,
    require_scope,
    start_session,
)
from dms.services.dbstate import DATABASE_DOWN, database_unreachable
from dms.services.vo.errors import QueryError, ServiceError
from dms.services.vo.http import Context, Params, public_message, read_params
from dms.services.vo.votable import MAX_UPLOAD_BYTES
from dms.services.workspace.errors import NotFound, QuotaExceeded, WorkspaceError
from dms.services.workspace.groups import list_groups
from dms.services.workspace.store import Workspaces, read_table_file
from dms.services.workspace.viewer import current_viewer

log = logging.getLogger(__name__)

SAVE_TIMEOUT = 300.0
FILE_SUFFIXES = (
    ".parquet",
    ".csv",
    ".tsv",
    ".csv.gz",
    ".fits",
    ".fit",
    ".fits.gz",
    ".vot",
    ".xml",
    ".votable",
)

Handler = Callable[[Request], Awaitable[Response]]


def _json_errors(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AuthError as exc:
            response = JSONResponse({"error": str(exc)}, exc.status)
            response.headers["WWW-Authenticate"] = exc.challenge()
            return response
        except WorkspaceError as exc:
            return JSONResponse({"error": public_message(request, str(exc))}, exc.status)
        except ServiceError as exc:
            return JSONResponse({"error": public_message(request, str(exc))}, exc.status)
        except QueryError as exc:
            if database_unreachable(exc):
                return JSONResponse({"error": DATABASE_DOWN}, 503)
            return JSONResponse({"error": public_message(request, str(exc))}, 400)
        except Exception as exc:
            if database_unreachable(exc):
                return JSONResponse({"error": DATABASE_DOWN}, 503)
            raise

    return endpoint


def _caller(request: Request, scope: str = "workspace") -> User:
    user = require_scope(request, scope)
    if user is None:
        raise AuthError(NEEDS_TOKEN, error=None)
    return user


async def _body(request: Request) -> Params:
    """Form fields, multipart parts, or a JSON object's string values."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            raise WorkspaceError("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise WorkspaceError("the request body must be a JSON object")
        params = Params()
        for key, value in data.items():
            if not isinstance(value, str | bool | int):
                raise WorkspaceError(f"field {key!r} must be a string")
            params.values[str(key).upper()] = [str(value)]
        return params
    return await read_params(request)


class PlatformApi:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.deployment = context.deployment
        self.workspaces = Workspaces(context.deployment)

    # ---- sessions ---------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        params = await _body(request)
        token = (params.get("TOKEN") or "").strip()
        if not token:
            raise WorkspaceError("give the token as the field 'token'")
        backend = TokenBackend(self.deployment.engine, allow_anonymous=False)
        user = await run_in_threadpool(backend.lookup, token)

        def begin() -> str:
            with self.deployment.engine().begin() as conn:
                return start_session(conn, user)

        session = await run_in_threadpool(begin)
        response = JSONResponse(await run_in_threadpool(self._whoami, user))
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=SESSION_HOURS * 3600,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = request.cookies.get(SESSION_COOKIE)
        if session:

            def end() -> None:
                with self.deployment.engine().begin() as conn:
                    end_session(conn, session)

            await run_in_threadpool(end)
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(SESSION_COOKIE)
        return response

    def _whoami(self, user: User | None) -> dict[str, Any]:
        viewer = current_viewer() if user is None else None
        groups: list[str] = []
        if user is not None:
            with self.deployment.engine().connect() as conn:
                groups = [g["name"] for g in list_groups(conn, user.name)]
        return {
            "user": user.name if user else None,
            "scopes": sorted(user.scopes) if user else [],
            "groups": groups,
            "instance": self.deployment.config.instance,
            "unreleased": (
                self.deployment.config.instance != "dac" and "unreleased" in user.scopes
                if user
                else bool(viewer and viewer.unreleased)
            ),
        }

    async def whoami(self, request: Request) -> Response:
        user = request.scope.get("user")
        return JSONResponse(await run_in_threadpool(self._whoami, user if isinstance(user, User) else None))

    # ---- workspace --------------------------------------------------------------------------------------

    async def tables(self, request: Request) -> Response:
        user = _caller(request)
        if request.method == "GET":

            def listing() -> dict[str, Any]:
                with self.deployment.engine().connect() as conn:
                    return self.workspaces.list_tables(conn, user.name)

            return JSONResponse(await run_in_threadpool(listing))
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception as exc:  # malformed bodies raise several types
            raise WorkspaceError(f"cannot read the request body: {exc}") from None
        upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise WorkspaceError("send the table as a multipart file part (CSV, Parquet, VOTable, FITS)")
        content = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(content) > MAX_UPLOAD_BYTES:
            raise QuotaExceeded(
                f"the file is larger than {MAX_UPLOAD_BYTES:,} bytes, the most one upload takes"
            )
        filename = Path(upload.filename or "upload.csv").name
        name = str(form.get("name") or "")
        replace = str(form.get("replace") or "").lower() in ("1", "true", "yes")
        stored = await run_in_threadpool(self._store_file, user.name, name, filename, content, replace)
        return JSONResponse(stored, 201)

    def _store_file(
        self, owner: str, name: str, filename: str, content: bytes, replace: bool
    ) -> dict[str, Any]:
        suffix = next((s for s in FILE_SUFFIXES if filename.lower().endswith(s)), None)
        if suffix is None:
            raise WorkspaceError(f"file {filename!r}: unknown type; use one of {', '.join(FILE_SUFFIXES)}")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"upload{suffix}"
            path.write_bytes(content)
            try:
                table = read_table_file(path)
            except WorkspaceError as exc:
                raise WorkspaceError(str(exc).replace(str(path), filename)) from None
        return self.workspaces.store(
            owner, name or Path(filename).name.split(".")[0], table, filename, replace=replace
        )

    async def save(self, request: Request) -> Response:
        """Save a query result (ADQL by default) as a workspace table."""
        user = _caller(request)
        params = await _body(request)
        query = params.get("QUERY") or ""
        if not query.strip():
            raise WorkspaceError("give the query as the field 'query'")
        name = params.get("NAME") or ""
        lang = (params.get("LANG") or "adql").lower()
        if lang not in ("adql", "sql"):
            raise WorkspaceError(f"lang {lang!r} is not supported; valid: adql, sql")
        replace = (params.get("REPLACE") or "").lower() in ("1", "true", "yes")

        def run() -> dict[str, Any]:
            with self.deployment.engine().connect() as conn:
                quota = self.workspaces.quota(conn, user.name)
            room = max(0, quota.max_rows - quota.used_rows)
            result = self.context.executor.execute(query, lang=lang, max_rows=room, timeout=SAVE_TIMEOUT)
            if result.overflow:
                raise QuotaExceeded(
                    f"the result has more than the {room:,} rows left in your workspace quota; restrict the "
                    "query or drop tables"
                )
            return self.workspaces.store(user.name, name, result.table, query, replace=replace)

        return JSONResponse(await run_in_threadpool(run), 201)

    async def table(self, request: Request) -> Response:
        user = _caller(request)
        name = request.path_params["name"]
        if request.method == "DELETE":
            await run_in_threadpool(self.workspaces.drop, user.name, name)
            return JSONResponse({"dropped": name})

        def one() -> dict[str, Any]:
            with self.deployment.engine().connect() as conn:
                listing = self.workspaces.list_tables(conn, user.name)
            for table in listing["tables"]:
                if table["name"] == name.lower():
                    return dict(table)
            raise_not_found(name)
            return {}

        return JSONResponse(await run_in_threadpool(one))

    async def shares(self, request: Request) -> Response:
        user = _caller(request)
        name = request.path_params["name"]
        params = await _body(request)
        target = {"user": params.get("USER"), "group": params.get("GROUP")}
        await run_in_threadpool(lambda: self.workspaces.share(user.name, name, **target))
        return JSONResponse({"shared": name, **{k: v for k, v in target.items() if v}}, 201)

    async def share(self, request: Request) -> Response:
        user = _caller(request)
        name, kind, grantee = (request.path_params[k] for k in ("name", "kind", "grantee"))
        if kind not in ("user", "group"):
            raise WorkspaceError(f"share kind {kind!r} is invalid; valid: user, group")
        target = {kind: grantee}
        await run_in_threadpool(lambda: self.workspaces.unshare(user.name, name, **target))
        return JSONResponse({"unshared": name, kind: grantee})

    async def groups(self, request: Request) -> Response:
        user = _caller(request)

        def mine() -> list[dict[str, Any]]:
            with self.deployment.engine().connect() as conn:
                return list_groups(conn, user.name)

        return JSONResponse({"groups": await run_in_threadpool(mine)})

    def routes(self) -> list[Route]:
        return [
            Route("/api/login", _json_errors(self.login), methods=["POST"]),
            Route("/api/logout", _json_errors(self.logout), methods=["POST"]),
            Route("/api/whoami", _json_errors(self.whoami), methods=["GET"]),
            Route("/api/groups", _json_errors(self.groups), methods=["GET"]),
            Route("/api/workspace/tables", _json_errors(self.tables), methods=["GET", "POST"]),
            Route("/api/workspace/results", _json_errors(self.save), methods=["POST"]),
            Route("/api/workspace/tables/{name}", _json_errors(self.table), methods=["GET", "DELETE"]),
            Route("/api/workspace/tables/{name}/shares", _json_errors(self.shares), methods=["POST"]),
            Route(
                "/api/workspace/tables/{name}/shares/{kind}/{grantee}",
                _json_errors(self.share),
                methods=["DELETE"],
            ),
        ]


def raise_not_found(name: str) -> None:
    raise NotFound(f"no table {name!r} in your workspace")


def platform_routes(context: Context) -> list[Route]:
    """The /api routes, mounted by the VO application."""
    return PlatformApi(context).routes()
