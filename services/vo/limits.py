"""Bounds on what one HTTP request may make the VO services read: body size, form parts.

:class:`BodyLimit` is a pure ASGI middleware: a declared ``Content-Length`` over the cap is answered 413
before any of the body is read, and a body streamed without one (chunked) is counted as it arrives and
refused as soon as it passes the cap, so a 1 GB POST costs the server at most the cap, never its memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dms.services.auth import Renderer
from dms.services.vo.errors import ServiceError
from dms.services.vo.votable import MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class RequestLimits:
    """What one request may send."""

    max_body_bytes: int = 2 * MAX_UPLOAD_BYTES + 2_000_000
    """The whole request body (two uploads of the largest size and the form fields)."""
    max_files: int = 8
    """File parts of a multipart form (UPLOAD tables)."""
    max_fields: int = 200
    """Non-file parts (parameters) of a form."""


class RequestTooLarge(ServiceError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than this service accepts ({limit:,} bytes); "
            "send smaller uploads or upload by URL",
            status=413,
        )


def request_limits(request: HTTPConnection) -> RequestLimits:
    limits = request.scope.get("dms.limits")
    return limits if isinstance(limits, RequestLimits) else RequestLimits()


class BodyLimit:
    """Refuse request bodies over `limits.max_body_bytes` with 413 and the service's error document."""

    def __init__(self, app: ASGIApp, limits: RequestLimits, render: Renderer) -> None:
        self.app = app
        self.limits = limits
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["dms.limits"] = self.limits
        cap = self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > cap):
            await self._refuse(RequestTooLarge(cap), scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise RequestTooLarge(cap)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except RequestTooLarge as exc:
            if started:
                raise
            await self._refuse(exc, scope, receive, send)

    async def _refuse(self, exc: RequestTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response = self.render(str(exc), exc.status)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
