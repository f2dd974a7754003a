"""What every VO endpoint shares: case-insensitive parameters, the service context, error responses."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response

from dms.deployment import Deployment
from dms.services.auth import AuthError
from dms.services.dbstate import DATABASE_DOWN, database_unreachable
from dms.services.vo.errors import QueryError, ServiceError, without_server_paths
from dms.services.vo.executor import QueryExecutor
from dms.services.vo.limits import request_limits
from dms.services.vo.tap_schema import Table, load_keys, load_tables
from dms.services.vo.votable import MAX_UPLOAD_BYTES, error_votable
from dms.services.workspace.viewer import current_viewer
from dms.services.workspace.visibility import generation, visible_names

XML = "text/xml; charset=utf-8"
VOTABLE_MIME = "application/x-votable+xml"
MAX_FIELD_BYTES = 1_000_000


@dataclass
class Params:
    """Request parameters by upper-case name (DALI: names are case-insensitive), and uploaded files."""

    values: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.values.get(name.upper())
        return found[-1] if found else default

    def all(self, name: str) -> list[str]:
        return self.values.get(name.upper(), [])

    def flat(self) -> dict[str, str]:
        return {k: v[-1] for k, v in self.values.items()}


async def read_params(request: Request) -> Params:
    """Query string plus (for POST) the urlencoded or multipart form; files are kept by part name.

    The body is bounded twice: :class:`dms.services.vo.limits.BodyLimit` refuses a body larger than the
    deployment's cap (413) before or while it is read, and here the number of parts and each part's size
    are bounded (file parts are spooled to disk by Starlette, never held in memory whole).
    """
    params = Params()
    for key, value in request.query_params.multi_items():
        params.values.setdefault(key.upper(), []).append(value)
    if request.method == "POST":
        limits = request_limits(request)
        try:
            form = await request.form(
                max_files=limits.max_files, max_fields=limits.max_fields, max_part_size=MAX_FIELD_BYTES
            )
        except ServiceError:
            raise
        except (MultiPartException, HTTPException) as exc:  # Starlette turns the first into the second
            message = exc.detail if isinstance(exc, HTTPException) else exc.message
            status = 413 if "maximum" in message.lower() else 400  # too many parts, or a part too large
            raise ServiceError(f"cannot read the request body: {message}", status=status) from exc
        except Exception as exc:  # malformed bodies raise several types
            raise ServiceError(f"cannot read the request body: {exc}") from exc
        for key, item in form.multi_items():
            if isinstance(item, UploadFile):
                content = await item.read(MAX_UPLOAD_BYTES + 1)
                if len(content) > MAX_UPLOAD_BYTES:
                    raise ServiceError(
                        f"upload part {key!r} is larger than {MAX_UPLOAD_BYTES:,} bytes", status=413
                    )
                params.files[key] = content
            else:
                if len(item) > MAX_FIELD_BYTES:
                    raise ServiceError(
                        f"parameter {key} is longer than {MAX_FIELD_BYTES:,} characters", status=413
                    )
                params.values.setdefault(key.upper(), []).append(item)
    return params


def error_response(message: str, status: int = 400) -> Response:
    return Response(error_votable(message), status_code=status, media_type=VOTABLE_MIME)


def guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Turn every failure into a DALI error document: bad input 400 (413 too large), refused credentials
    401/403 with a challenge, an unreachable database 503; anything else goes on to the 500 handler."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AuthError as exc:
            response = error_response(str(exc), exc.status)
            response.headers["WWW-Authenticate"] = exc.challenge()
            return response
        except ServiceError as exc:
            return error_response(public_message(request, str(exc)), exc.status)
        except QueryError as exc:
            if database_unreachable(exc):
                return error_response(DATABASE_DOWN, 503)
            return error_response(public_message(request, str(exc)), 400)
        except Exception as exc:
            if database_unreachable(exc):
                return error_response(DATABASE_DOWN, 503)
            raise

    return endpoint


def public_message(request: Request, message: str) -> str:
    """An error message without the server's paths (see :func:`without_server_paths`)."""
    context = getattr(request.app.state, "context", None)
    return without_server_paths(message, context.deployment.data_dir if context is not None else None)


class Context:
    """What the services share: the deployment, the executor and a cached copy of TAP_SCHEMA."""

    def __init__(
        self, deployment: Deployment, executor: QueryExecutor, *, cache_seconds: float = 10.0
    ) -> None:
        self.deployment = deployment
        self.executor = executor
        self._cache_seconds = cache_seconds
        self._loaded = 0.0
        self._tables: list[Table] = []
        self._keys: list[tuple[str, str, str, list[tuple[str, str]]]] = []
        self._lock = threading.Lock()
        self._generation = -1

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._loaded < self._cache_seconds and self._generation == generation():
                return
            self._generation = generation()
            with self.deployment.engine().connect() as conn:
                self._tables = load_tables(conn)
                self._keys = load_keys(conn)
            self._loaded = time.monotonic()

    @property
    def version(self) -> tuple[float, int]:
        """Changes whenever the cached TAP_SCHEMA is loaded again (for caches of what it decides)."""
        self._refresh()
        return self._loaded, self._generation

    def invalidate(self) -> None:
        with self._lock:
            self._loaded = 0.0

    def tables(self) -> list[Table]:
        """The published tables the current viewer may read."""
        self._refresh()
        visible = visible_names(self.deployment.engine(), current_viewer())
        return [t for t in self._tables if t.name.lower() in visible]

    def keys(self) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
        self._refresh()
        visible = visible_names(self.deployment.engine(), current_viewer())
        return [k for k in self._keys if k[1].lower() in visible and k[2].lower() in visible]

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables() if t.name.lower() == name.lower()), None)
