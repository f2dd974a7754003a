"""`dms alerts serve`: the Alert Broker Feed and the alert archive over HTTP (Starlette), token-authenticated.

* ``GET /feed/{topic}?group=G[&from_offset=N|&from_time=ISO][&max=N][&wait=S]``: the group's next messages
  as NDJSON, streamed as they arrive (one JSON object per line: topic, partition, offset, key, published_at
  and the packet in base64), ending after `max` messages or `wait` seconds without a new one. Each request
  is a new session of the group: it starts at the group's committed offsets (or at the offset or time
  given, which moves the group there);
* ``POST /feed/{topic}/commit`` with ``{"group": G, "offsets": {"PARTITION": OFFSET, ...}}``: commit;
* ``GET /alerts/{alert_id}``: an archived packet as sent (Confluent header + Avro), so a broker that missed
  a night fetches what it lacks; ``GET /alerts?ra=&dec=&radius=&start_mjd=&end_mjd=&dia_object_id=&visit=``:
  archived alerts as JSON.
Every path but /health needs a token with scope ``alerts`` (services/auth.py) unless the deployment allows
anonymous access; errors are JSON ``{"error": message}`` with 400/401/403/404.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dms.deployment import Deployment
from dms.services.alerts.archive import find_alerts, read_packet
from dms.services.alerts.feed import (
    AlertFeed,
    FeedConfig,
    FeedError,
    FeedMessage,
    UnknownTopicError,
    open_feed,
)
from dms.services.alerts.packets import AlertPacketError
from dms.services.apdb.regions import Circle
from dms.services.auth import middleware

AVRO = "application/vnd.apache.avro+binary"
NDJSON = "application/x-ndjson"
SCOPE = "alerts"


def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status)


def _number(request: Request, name: str, kind: Callable[[str], Any], default: Any = None) -> Any:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise FeedError(f"parameter {name}={value!r} is not a valid {kind.__name__}") from None


def message_json(m: FeedMessage) -> str:
    """One message as an NDJSON line (the packet in base64)."""
    record = {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "key": m.key,
        "published_at": m.published_at.isoformat(),
        "packet": base64.b64encode(m.value).decode(),
    }
    return json.dumps(record) + "\n"


def create_app(
    deployment: Deployment, config: FeedConfig, *, allow_anonymous: bool | None = None
) -> Starlette:
    """The feed and archive service of `deployment`, carried by the transport `config` names; anonymous
    callers are let in where the deployment allows it (or `allow_anonymous` says)."""
    shared: list[AlertFeed] = []

    def feed() -> AlertFeed:
        if not shared:
            shared.append(open_feed(config))
        return shared[0]

    async def stream(request: Request) -> Response:
        topic = request.path_params["topic"]
        group = request.query_params.get("group", "")
        limit = _number(request, "max", int, 1_000_000)
        wait = min(float(_number(request, "wait", float, 5.0)), 300.0)
        start = _number(request, "from_offset", int)
        since = _number(request, "from_time", datetime.fromisoformat)
        session = await run_in_threadpool(open_feed, config)
        try:
            if start is not None or since is not None:
                await run_in_threadpool(session.seek, topic, group, offset=start, time=since)
            first = await run_in_threadpool(
                session.consume, topic, group, max_messages=min(limit, 1000), timeout=0
            )
        except BaseException:
            await run_in_threadpool(session.close)
            raise

        async def lines() -> AsyncIterator[str]:
            sent, batch = 0, first
            while True:
                for m in batch:
                    yield message_json(m)
                sent += len(batch)
                if sent >= limit:
                    return
                batch = await run_in_threadpool(
                    session.consume, topic, group, max_messages=min(limit - sent, 1000), timeout=wait
                )
                if not batch:
                    return

        # The session is closed after the response, also when the client drops the connection mid-stream.
        return StreamingResponse(lines(), media_type=NDJSON, background=BackgroundTask(session.close))

    async def commit(request: Request) -> Response:
        topic = request.path_params["topic"]
        try:
            body = await request.json()
            group = str(body["group"])
            offsets = {int(p): int(o) for p, o in dict(body["offsets"]).items()}
        except (ValueError, KeyError, TypeError):
            raise FeedError('the body must be JSON {"group": G, "offsets": {"PARTITION": OFFSET}}') from None
        marks = [FeedMessage(topic, p, o, "", b"", datetime.now()) for p, o in offsets.items()]
        await run_in_threadpool(feed().commit, topic, group, marks)
        return JSONResponse(
            {"group": group, "committed": await run_in_threadpool(feed().committed, topic, group)}
        )

    async def packet(request: Request) -> Response:
        try:
            alert_id = int(request.path_params["alert_id"])
        except ValueError:
            return _error(f"alert id {request.path_params['alert_id']!r} is not an integer", 400)
        from dms.services.backbone import Backbone

        data = await run_in_threadpool(read_packet, Backbone(deployment), alert_id)
        return Response(
            data, media_type=AVRO, headers={"X-Alert-Schema-Id": str(int.from_bytes(data[1:5], "big"))}
        )

    async def search(request: Request) -> Response:
        from dms.services.backbone import Backbone

        ra, dec, radius = (_number(request, k, float) for k in ("ra", "dec", "radius"))
        if (ra is None) != (radius is None) or (ra is None) != (dec is None):
            raise FeedError("a cone needs ra, dec and radius (degrees) together")
        frame = await run_in_threadpool(
            find_alerts,
            Backbone(deployment),
            region=Circle(ra, dec, radius) if ra is not None else None,
            start_mjd_tai=_number(request, "start_mjd", float),
            end_mjd_tai=_number(request, "end_mjd", float),
            dia_object_id=_number(request, "dia_object_id", int),
            visit=_number(request, "visit", int),
            limit=min(int(_number(request, "limit", int, 10_000)), 100_000),
        )
        return Response(frame.to_json(orient="records"), media_type="application/json")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "transport": config.transport})

    async def on_feed_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, UnknownTopicError):
            return _error(str(exc), 404)
        if isinstance(exc, AlertPacketError) and "no alert" in str(exc):
            return _error(str(exc), 404)
        return _error(str(exc), 400)

    auth = middleware(
        deployment.engine,
        _error,
        allow_anonymous=deployment.config.anonymous_access if allow_anonymous is None else allow_anonymous,
        public_paths=("/health",),
        service=SCOPE,
    )
    routes = [
        Route("/health", health),
        Route("/feed/{topic}", stream),
        Route("/feed/{topic}/commit", commit, methods=["POST"]),
        Route("/alerts", search),
        Route("/alerts/{alert_id}", packet),
    ]
    handlers = {FeedError: on_feed_error, AlertPacketError: on_feed_error}
    app = Starlette(routes=routes, middleware=[auth], exception_handlers=handlers)
    app.state.close = lambda: [f.close() for f in shared]
    return app
