"""OCS-driven batch: JSON over HTTP standing in for the OCS's SAL commands (`dms batch serve-ocs`).

    POST /ocs/commands        {"command": "runProduction", "production": NAME, "parameters": {...}}
                              -> 202 {"command_id", "ack": "accepted", "job_id"}; a refused command is
                              recorded with ack "failed" and answered 400 with the reason
    GET  /ocs/commands/{id}   the command's acknowledgement, following its batch job: accepted (queued),
                              in_progress (a task started), complete (all done) or failed, with a summary
                              (task counts per state, the first error)
    GET  /ocs/commands        the latest commands, newest first
    GET  /ocs/productions     the productions a command may name, with their parameters

Every request needs a bearer token with scope `ocs`; errors are JSON ``{"error": message}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dms.services.auth import AuthError, authenticate, middleware
from dms.services.batch import store
from dms.services.batch.errors import BatchError, JobNotFoundError
from dms.services.batch.productions import PRODUCTIONS, workflow_for

COMMANDS = ("runProduction",)
MAX_BODY = 64 * 1024


def _error(message: str, status: int, **extra: Any) -> Response:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _ack_of(job_state: str | None, tasks: dict[str, int]) -> str:
    if job_state == "done":
        return "complete"
    if job_state in ("failed", "cancelled"):
        return "failed"
    started = sum(n for state, n in tasks.items() if state not in ("queued", "blocked"))
    return "in_progress" if started else "accepted"


def run_command(
    conn: psycopg.Connection, body: dict[str, Any], *, data_dir: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Record a command and start its production; returns (HTTP status, answer).

    `data_dir` is the server's own deployment: a production that reads a deployment's Data Backbone gets it
    from here, never from the command (a caller must not point a production at another deployment)."""
    command = body.get("command")
    production = body.get("production")
    parameters = body.get("parameters", {})
    problem = None
    if command not in COMMANDS:
        problem = f"unknown command {command!r}; commands: {', '.join(COMMANDS)}"
    elif not isinstance(production, str) or not production:
        problem = "runProduction needs 'production', the name of a production (GET /ocs/productions)"
    elif not isinstance(parameters, dict):
        problem = "'parameters' must be a JSON object"
    elif "data_dir" in parameters:
        problem = "parameter 'data_dir' is set by the OCS server (its own deployment), not by a command"
    flow = None
    if problem is None:
        known = PRODUCTIONS.get(str(production))
        if data_dir is not None and known is not None and "data_dir" in known.parameters.model_fields:
            parameters = {**parameters, "data_dir": data_dir}
        try:
            flow = workflow_for(str(production), parameters)
        except BatchError as exc:
            problem = str(exc)
    row = conn.execute(
        "INSERT INTO dms.ocs_command (command, production, parameters, ack, message) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING command_id",
        (
            str(command)[:64],
            str(production or "")[:64],
            Jsonb(body.get("parameters") if isinstance(body.get("parameters"), dict) else {}),
            "failed" if problem else "accepted",
            problem,
        ),
    ).fetchone()
    command_id = int(row[0])  # type: ignore[index]
    if problem is not None or flow is None:
        return 400, {"command_id": command_id, "ack": "failed", "error": problem}
    job_id = store.submit(conn, flow)
    conn.execute("UPDATE dms.ocs_command SET job_id = %s WHERE command_id = %s", (job_id, command_id))
    state = command_status(conn, command_id)
    return 202, state


def command_status(conn: psycopg.Connection, command_id: int) -> dict[str, Any]:
    """The command with its acknowledgement brought up to date from its job."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT command_id, command, production, parameters, ack, job_id, message, received_at, "
            "updated_at "
            "FROM dms.ocs_command WHERE command_id = %s",
            (command_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise JobNotFoundError(f"no OCS command {command_id}")
    if row["job_id"] is None:
        return row
    job = store.job_status(conn, row["job_id"], tasks=1)
    tasks = job["tasks"] or {}
    ack = _ack_of(job["state"], tasks)
    errors = [t["error"] for t in job["task_list"] if t["error"]]
    message = f"job {job['job_id']} {job['state']}: " + ", ".join(
        f"{n} {s}" for s, n in sorted(tasks.items())
    )
    if errors:
        message += f"; first error: {errors[0]}"
    if ack != row["ack"] or message != row["message"]:
        conn.execute(
            "UPDATE dms.ocs_command SET ack = %s, message = %s, updated_at = now() WHERE command_id = %s",
            (ack, message, command_id),
        )
    row.update(ack=ack, message=message, summary={"job_state": job["state"], "tasks": tasks})
    return row


def make_app(conninfo: str, engine: Callable[[], sa.Engine], *, data_dir: str | None = None) -> Starlette:
    """The OCS command endpoint on the control database (`conninfo` for the work, `engine` for tokens)."""

    def endpoint(
        handler: Callable[[psycopg.Connection, Request, Any], tuple[int, Any]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                if authenticate(request) is None:
                    raise AuthError(
                        "this service needs a token: send Authorization: Bearer TOKEN", error=None
                    )
                body: Any = None
                if request.method == "POST":
                    raw = await request.body()
                    if len(raw) > MAX_BODY:
                        return _error(f"the command is larger than {MAX_BODY} bytes", 413)
                    try:
                        import json

                        body = json.loads(raw)
                    except (ValueError, RecursionError):  # deep nesting is a RecursionError
                        return _error("the request body must be a JSON object", 400)
                    if not isinstance(body, dict):
                        return _error("the request body must be a JSON object", 400)

                def work() -> tuple[int, Any]:
                    with psycopg.connect(conninfo, autocommit=True) as conn:
                        return handler(conn, request, body)

                status, answer = await run_in_threadpool(work)
                return JSONResponse(_jsonable(answer), status_code=status)
            except AuthError as exc:
                return _error(str(exc), exc.status)
            except JobNotFoundError as exc:
                return _error(str(exc), 404)
            except BatchError as exc:
                return _error(str(exc), 400)

        return run

    def post(conn: psycopg.Connection, request: Request, body: Any) -> tuple[int, Any]:
        return run_command(conn, body, data_dir=data_dir)

    def get_one(conn: psycopg.Connection, request: Request, body: Any) -> tuple[int, Any]:
        return 200, command_status(conn, int(request.path_params["command_id"]))

    def get_all(conn: psycopg.Connection, request: Request, body: Any) -> tuple[int, Any]:
        ids = [
            r[0]
            for r in conn.execute("SELECT command_id FROM dms.ocs_command ORDER BY command_id DESC LIMIT 100")
        ]
        return 200, [command_status(conn, i) for i in ids]

    def productions(conn: psycopg.Connection, request: Request, body: Any) -> tuple[int, Any]:
        return 200, [
            {"name": p.name, "description": p.description, "parameters": p.parameters.model_json_schema()}
            for p in PRODUCTIONS.values()
        ]

    routes = [
        Route("/ocs/commands", endpoint(post), methods=["POST"]),
        Route("/ocs/commands", endpoint(get_all), methods=["GET"]),
        Route("/ocs/commands/{command_id:int}", endpoint(get_one), methods=["GET"]),
        Route("/ocs/productions", endpoint(productions), methods=["GET"]),
    ]
    auth = middleware(engine, _error, allow_anonymous=False, service="ocs")
    return Starlette(routes=routes, middleware=[auth])


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
