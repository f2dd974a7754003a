"""OCS-driven batch over real HTTP: a command starts a production on the batch service, and its
acknowledgement follows the job (accepted, in progress, complete, failed); bad commands are refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from batch_support import run
from distributed import Client

from dms.deployment import Deployment
from dms.services.auth import add_user, issue_token
from dms.services.batch.ocs import make_app
from dms.services.batch.runner import BatchRunner, RunnerSettings
from dms.services.vo.server import serve_in_thread

pytest_plugins = ["batch_support"]


@pytest.fixture()
def ocs(batch_deployment: Deployment, conninfo: str) -> Iterator[tuple[str, dict[str, str]]]:
    with batch_deployment.engine().begin() as conn:
        conn.execute(sa.text("DELETE FROM dms.access_token WHERE user_name = 'ocs'"))
        conn.execute(sa.text("DELETE FROM dms.user_account WHERE name IN ('ocs', 'tapuser')"))
        add_user(conn, "ocs")
        add_user(conn, "tapuser")
        token = issue_token(conn, "ocs", ["ocs"])[1]
        tap_token = issue_token(conn, "tapuser", ["tap"])[1]
    with serve_in_thread(make_app(conninfo, batch_deployment.engine)) as base:
        yield base, {"ocs": token, "tap": tap_token}


def _post(base: str, token: str, body: object) -> httpx.Response:
    return httpx.post(
        f"{base}/ocs/commands", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _get(base: str, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_command_runs_a_production_and_its_ack_follows_the_job(
    ocs: tuple[str, dict[str, str]], conninfo: str, dask_client: Client, batch_conn: psycopg.Connection
) -> None:
    base, tokens = ocs
    answer = _post(
        base,
        tokens["ocs"],
        {"command": "runProduction", "production": "smoke", "parameters": {"tasks": 6, "seconds": 0.3}},
    )
    assert answer.status_code == 202, answer.text
    command = answer.json()
    assert command["ack"] == "accepted" and command["job_id"] is not None
    stop = threading.Event()
    runner = BatchRunner(conninfo, dask_client, RunnerSettings(slots=2, prefetch=1))
    thread = threading.Thread(target=runner.run, kwargs={"until_idle": False, "stop": stop})
    thread.start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = _get(base, tokens["ocs"], f"/ocs/commands/{command['command_id']}").json()
            if not seen or seen[-1] != status["ack"]:
                seen.append(status["ack"])
            if status["ack"] in ("complete", "failed"):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert seen[-1] == "complete" and "in_progress" in seen, seen
    assert status["summary"] == {"job_state": "done", "tasks": {"done": 7}}
    assert status["message"].startswith(f"job {command['job_id']} done: 7 done")
    total = batch_conn.execute(
        "SELECT value FROM dms.batch_dataset WHERE job_id = %s AND name = 'total'", (command["job_id"],)
    ).fetchone()
    assert total == (6 * 0.3,) or abs(total[0] - 1.8) < 1e-9  # type: ignore[index]
    listed = _get(base, tokens["ocs"], "/ocs/commands").json()
    assert [c["command_id"] for c in listed] == [command["command_id"]] and listed[0]["ack"] == "complete"
    assert batch_conn.execute("SELECT ack FROM dms.ocs_command").fetchall() == [("complete",)]


def test_a_failing_production_is_acknowledged_failed_with_its_error(
    ocs: tuple[str, dict[str, str]], conninfo: str, dask_client: Client, batch_conn: psycopg.Connection
) -> None:
    base, tokens = ocs
    answer = _post(base, tokens["ocs"], {"command": "runProduction", "production": "smoke", "parameters": {}})
    command = answer.json()
    # an operator breaks one task of the job before it runs: the command fails, naming the error
    batch_conn.execute(
        "UPDATE dms.batch_task SET task_name = 'gone.task' WHERE job_id = %s AND label = 't3'",
        (command["job_id"],),
    )
    run(conninfo, dask_client, task_modules=())
    status = _get(base, tokens["ocs"], f"/ocs/commands/{command['command_id']}").json()
    assert status["ack"] == "failed"
    assert status["summary"]["tasks"] == {"done": 9, "failed": 1, "upstream_failed": 1}
    assert "unknown task 'gone.task'" in status["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"command": "shutdown", "production": "smoke"}, "unknown command 'shutdown'"),
        ({"command": "runProduction"}, "needs 'production'"),
        ({"command": "runProduction", "production": "drp-everything"}, "unknown production 'drp-everything'"),
        (
            {"command": "runProduction", "production": "smoke", "parameters": {"tasks": -1}},
            "tasks: Input should be",
        ),
        (
            {"command": "runProduction", "production": "smoke", "parameters": {"x'; DROP TABLE": 1}},
            "Extra inputs",
        ),
        ({"command": "runProduction", "production": "smoke", "parameters": [1]}, "must be a JSON object"),
    ],
)
def test_bad_commands_are_refused_and_recorded_failed(
    ocs: tuple[str, dict[str, str]], batch_conn: psycopg.Connection, body: dict[str, object], message: str
) -> None:
    base, tokens = ocs
    answer = _post(base, tokens["ocs"], body)
    assert answer.status_code == 400
    assert answer.json()["ack"] == "failed" and message in answer.json()["error"]
    assert batch_conn.execute("SELECT ack, message FROM dms.ocs_command").fetchall() == [
        ("failed", answer.json()["error"])
    ]
    assert batch_conn.execute("SELECT count(*) FROM dms.batch_job").fetchone() == (0,)


def test_requests_need_an_ocs_token_and_sane_bodies(ocs: tuple[str, dict[str, str]]) -> None:
    base, tokens = ocs
    assert httpx.get(f"{base}/ocs/commands", timeout=30).status_code == 401
    assert _get(base, tokens["tap"], "/ocs/commands").status_code == 403
    assert _get(base, tokens["ocs"], "/ocs/commands/12345").status_code == 404
    bad = httpx.post(
        f"{base}/ocs/commands", content=b"{not json", headers={"Authorization": f"Bearer {tokens['ocs']}"}
    )
    assert bad.status_code == 400 and "JSON object" in bad.json()["error"]
    nested = "[" * 100_000 + "]" * 100_000
    huge = httpx.post(
        f"{base}/ocs/commands", content=nested.encode(), headers={"Authorization": f"Bearer {tokens['ocs']}"}
    )
    assert huge.status_code == 413
    deep = "[" * 20_000 + "]" * 20_000  # under the size limit, too deep for the parser
    nested_answer = httpx.post(
        f"{base}/ocs/commands", content=deep.encode(), headers={"Authorization": f"Bearer {tokens['ocs']}"}
    )
    assert nested_answer.status_code == 400
    productions = _get(base, tokens["ocs"], "/ocs/productions").json()
    assert "smoke" in [p["name"] for p in productions]
