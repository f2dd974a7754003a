"""The gateway's Starlette application: ``GET /events`` (Server-Sent Events) and ``GET /health``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dms.services.auth import middleware

log = logging.getLogger(__name__)

CHANNEL = "dms_gateway"
BATCH = 500  # events per query while catching up
KEEPALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies from closing idle streams


class Hub:
    """One LISTEN connection per gateway; wakes every subscriber when events are committed.

    Every notification bumps `generation`. A subscriber reads the generation *before* it queries for
    events and then waits only while the generation is unchanged (checked under the condition's lock),
    so a notification arriving while it queries, or while its generator is suspended sending events,
    is never lost: the wait returns at once and the subscriber queries again.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.newest = 0
        self.generation = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._notify(0)  # events committed while (re)connecting are not missed
                    async for note in conn.notifies():
                        await self._notify(int(note.payload or 0))
            except psycopg.OperationalError as exc:
                log.warning("gateway lost its database connection (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _notify(self, event_id: int) -> None:
        async with self._changed:
            self.newest = max(self.newest, event_id)
            self.generation += 1
            self._changed.notify_all()

    async def wait_after(self, generation: int, timeout: float) -> bool:
        """Wait until a notification newer than `generation` (True) or `timeout` seconds (False).

        Returns at once when one has already arrived: the check and the wait are one step under the lock.
        """
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.generation != generation), timeout)
            return self.generation != generation


def format_event(event_id: int, kind: str, payload: Any) -> str:
    """One Server-Sent Event: its id (the resume position), type and JSON payload."""
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(payload, default=str)}\n\n"


async def _stream(hub: Hub, after: int, kinds: set[str] | None) -> AsyncIterator[str]:
    async with await psycopg.AsyncConnection.connect(hub.conninfo, autocommit=True) as conn:
        await conn.execute("SET statement_timeout = '10s'")
        yield ": dms telemetry gateway\n\n"
        while True:
            seen = hub.generation  # before the query: any later notification makes the wait return
            rows = await (
                await conn.execute(
                    "SELECT event_id, kind, payload FROM dms.gateway_event WHERE event_id > %s "
                    "ORDER BY event_id LIMIT %s",
                    (after, BATCH),
                )
            ).fetchall()
            for event_id, kind, payload in rows:
                after = event_id
                if kinds is None or kind in kinds:
                    yield format_event(event_id, kind, payload)
            if len(rows) == BATCH:
                continue
            if not await hub.wait_after(seen, KEEPALIVE_SECONDS):
                yield ": keepalive\n\n"


async def events(request: Request) -> Response:
    """Stream events after ``?after=N`` or the ``Last-Event-ID`` header (default: only new events)."""
    hub: Hub = request.app.state.hub
    raw = request.query_params.get("after") or request.headers.get("last-event-id")
    if raw is None:
        async with await psycopg.AsyncConnection.connect(hub.conninfo) as conn:
            row = await (
                await conn.execute("SELECT coalesce(max(event_id), 0) FROM dms.gateway_event")
            ).fetchone()
        after = int(row[0]) if row else 0
    elif raw.isdigit():
        after = int(raw)
    else:
        return PlainTextResponse(f"after / Last-Event-ID must be a non-negative integer, not {raw!r}", 400)
    kind = request.query_params.get("kind")
    kinds = set(kind.split(",")) if kind else None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_stream(hub, after, kinds), media_type="text/event-stream", headers=headers)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "newest_event_seen": request.app.state.hub.newest})


def create_app(conninfo: str, *, allow_anonymous: bool = True) -> Starlette:
    """The gateway for the control database at `conninfo`; `Authorization: Bearer TOKEN` is checked
    against the users of that database (scope gateway), and needed unless `allow_anonymous`."""
    engine: list[sa.Engine] = []

    def control_engine() -> sa.Engine:
        if not engine:
            url = sa.make_url(conninfo).set(drivername="postgresql+psycopg")
            engine.append(sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5}))
        return engine[0]

    def render(message: str, status: int) -> Response:
        return PlainTextResponse(message, status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.hub = Hub(conninfo)
        await app.state.hub.start()
        yield
        await app.state.hub.stop()

    auth = middleware(
        control_engine, render, allow_anonymous=allow_anonymous, public_paths=("/health",), service="gateway"
    )
    return Starlette(
        routes=[Route("/events", events), Route("/health", health)], lifespan=lifespan, middleware=[auth]
    )
