"""The Batch Processing service on the session's real PostgreSQL and a real Dask LocalCluster: DAG order,
priorities, quotas, retries with backoff, cancel, retry, and bad input recorded on the tasks."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import psycopg
import pytest
from batch_support import journal, record, run, submit, tasks
from distributed import Client

from dms.services.batch import store, workflow
from dms.services.batch.classes import Quota, allowance
from dms.services.batch.errors import BatchError, WorkflowError
from dms.services.batch.runner import BatchRunner, RunnerSettings

pytest_plugins = ["batch_support"]


def test_dag_runs_each_task_after_the_tasks_writing_its_inputs(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    # a diamond a -> (b, c) -> d, then e after d (ordering without a dataset), listed out of order
    job = submit(
        batch_conn,
        {
            "name": "diamond",
            "tasks": [
                record("d", log, inputs={"left": "B", "right": "C"}, outputs=["D"]),
                {
                    "label": "b",
                    "task": "batch.sum",
                    "config": {"offset": 10},
                    "inputs": {"x": "A"},
                    "outputs": ["B"],
                },
                {"label": "c", "task": "batch.sum", "inputs": {"xs": ["A", "A"]}, "outputs": ["C"]},
                {"label": "a", "task": "batch.sum", "args": {"x": 1.5, "y": 2}, "outputs": ["A"]},
                record("e", log, after=["d"]),
            ],
        },
    )
    by_label = tasks(batch_conn, job)
    assert {label: t["state"] for label, t in by_label.items()} == {
        "a": "queued",
        "b": "blocked",
        "c": "blocked",
        "d": "blocked",
        "e": "blocked",
    }
    counts = run(conninfo, dask_client)
    assert counts["done"] == 5
    a = 1.5 + 2
    assert store.dataset_values(batch_conn, job) == {"A": a, "B": a + 10, "C": 2 * a, "D": (a + 10) + 2 * a}
    rows = batch_conn.execute(
        "SELECT label, started_at, finished_at, config_hash, dms_version FROM dms.batch_task "
        "WHERE job_id = %s",
        (job,),
    ).fetchall()
    times = {label: (start, end) for label, start, end, _, _ in rows}
    for upstream, downstream in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")]:
        assert times[downstream][0] >= times[upstream][1], (upstream, downstream)
    assert all(h is not None and len(h) == 16 and v for _, _, _, h, v in rows)
    assert [entry["label"] for entry in journal(log)] == ["d", "e"]
    assert store.job_status(batch_conn, job)["state"] == "done"


def test_the_config_hash_recorded_is_the_task_frameworks(batch_conn: psycopg.Connection) -> None:
    from dms.services.batch.tasks import SumConfig

    job = submit(
        batch_conn, {"name": "h", "tasks": [{"label": "s", "task": "batch.sum", "config": {"offset": 2}}]}
    )
    assert tasks(batch_conn, job)["s"]["config_hash"] == SumConfig(offset=2).config_hash()


def test_prompt_task_overtakes_queued_drp_tasks(
    batch_conn: psycopg.Connection, conninfo: str, single_thread_client: Client, tmp_path: Path
) -> None:
    # one Dask thread; the runner hands DRP tasks to Dask ahead (prefetch), and the prompt task, claimed
    # as soon as there is room, goes before them in Dask's queue (task priorities)
    log = tmp_path / "journal"
    drp = submit(
        batch_conn,
        {"name": "drp", "priority": "drp", "tasks": [record(f"drp{i}", log, seconds=0.3) for i in range(6)]},
    )
    runner = BatchRunner(conninfo, single_thread_client, RunnerSettings(task_modules=("batch_support",)))
    thread = threading.Thread(target=runner.run, kwargs={"timeout": 60})
    thread.start()
    while len(journal(log)) < 1:
        time.sleep(0.02)
    prompt = submit(batch_conn, {"name": "prompt", "priority": "prompt", "tasks": [record("prompt", log)]})
    thread.join(60)
    order = [entry["label"] for entry in journal(log)]
    # the prompt task runs right after the DRP task that was running when it arrived (or the next one, if
    # that one had finished and the next was claimed before the prompt task was submitted)
    assert order.index("prompt") <= 2, order
    assert sorted(order) == sorted([f"drp{i}" for i in range(6)] + ["prompt"])
    assert (
        store.job_status(batch_conn, drp)["state"] == store.job_status(batch_conn, prompt)["state"] == "done"
    )


def test_within_a_class_the_oldest_task_runs_first(
    batch_conn: psycopg.Connection, conninfo: str, single_thread_client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    submit(batch_conn, {"name": "old", "priority": "cpp", "tasks": [record("old", log)]})
    submit(batch_conn, {"name": "dac", "priority": "dac", "tasks": [record("dac", log)]})
    submit(batch_conn, {"name": "new", "priority": "cpp", "tasks": [record("new", log)]})
    submit(batch_conn, {"name": "ocs", "priority": "ocs", "tasks": [record("ocs", log)]})
    run(conninfo, single_thread_client, prefetch=1)
    assert [entry["label"] for entry in journal(log)] == ["ocs", "dac", "old", "new"]


def test_quota_rules() -> None:
    quotas = {"prompt": Quota(reserved=1), "drp": Quota(maximum=2)}
    # DRP may not take the worker prompt reserves, nor more than its maximum
    assert allowance("drp", 4, {}, quotas) == 2
    assert allowance("drp", 2, {}, quotas) == 1
    assert allowance("cpp", 4, {"drp": 2}, quotas) == 1
    # prompt may use every free worker; once its reservation is used, others may use the rest
    assert allowance("prompt", 4, {"drp": 2}, quotas) == 2
    assert allowance("cpp", 4, {"prompt": 1}, quotas) == 3
    assert allowance("cpp", 4, {"prompt": 1, "drp": 2, "cpp": 1}, quotas) == 0


def _max_concurrent(conn: psycopg.Connection, job: int) -> int:
    rows = conn.execute(
        "SELECT started_at, finished_at FROM dms.batch_task WHERE job_id = %s", (job,)
    ).fetchall()
    return max(sum(1 for s, e in rows if s <= start < e) for start, _ in rows)


def test_quotas_cap_a_class_and_keep_reserved_workers_free(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    store.set_quota(batch_conn, "drp", Quota(maximum=2))
    drp = submit(batch_conn, {"name": "drp", "tasks": [record(f"d{i}", log, seconds=0.2) for i in range(6)]})
    run(conninfo, dask_client, slots=4)
    assert _max_concurrent(batch_conn, drp) == 2
    store.set_quota(batch_conn, "drp", Quota())
    store.set_quota(batch_conn, "prompt", Quota(reserved=1))
    cpp = submit(
        batch_conn,
        {"name": "cpp", "priority": "cpp", "tasks": [record(f"c{i}", log, seconds=0.2) for i in range(8)]},
    )
    run(conninfo, dask_client, slots=4)
    assert _max_concurrent(batch_conn, cpp) == 3
    with pytest.raises(BatchError, match="at least the reserved minimum"):
        store.set_quota(batch_conn, "dac", Quota(reserved=3, maximum=1))
    with pytest.raises(Exception, match="unknown priority class 'urgent'"):
        store.set_quota(batch_conn, "urgent", Quota())


def test_retries_with_backoff_then_the_failure_is_recorded(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    job = submit(
        batch_conn,
        {
            "name": "flaky",
            "max_attempts": 3,
            "tasks": [
                {"label": "src", "task": "batch.sum", "args": {"x": 4}, "outputs": ["S"]},
                record("twice", log, fail_times=1, inputs={"s": "S"}, outputs=["T"]),
                record("never", log, fail_times=99, inputs={"s": "S"}, outputs=["N"]),
                record("after-never", log, inputs={"n": "N"}),
                record("after-twice", log, inputs={"t": "T"}),
            ],
        },
    )
    run(conninfo, dask_client, backoff_seconds=0.2)
    by_label = tasks(batch_conn, job)
    assert by_label["twice"]["state"] == "done" and by_label["twice"]["attempts"] == 2
    assert by_label["after-twice"]["state"] == "done"
    never = by_label["never"]
    assert never["state"] == "failed" and never["attempts"] == 3
    assert "planned failure 3 of 99" in never["error"] and "test.record" in never["error"]
    assert "run 3 of never" in never["log_excerpt"]
    assert by_label["after-never"]["state"] == "upstream_failed"
    assert by_label["after-never"]["error"] == "upstream task 'never' failed"
    starts = [e["t"] for e in journal(log) if e["label"] == "never"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # 0.2 s, then doubled
    # the failed task's input is still there, and retrying it runs it again on the same input
    assert store.dataset_values(batch_conn, job)["S"] == 4
    assert store.job_status(batch_conn, job)["state"] == "failed"
    batch_conn.execute(
        "UPDATE dms.batch_task SET config = config || '{\"fail_times\": 0}' "
        "WHERE job_id = %s AND label = 'never'",
        (job,),
    )
    assert store.retry(batch_conn, job, ["never"]) == 1
    assert tasks(batch_conn, job)["after-never"]["state"] == "blocked"
    run(conninfo, dask_client)
    assert {t["state"] for t in tasks(batch_conn, job).values()} == {"done"}
    assert store.dataset_values(batch_conn, job)["N"] == 4
    assert store.job_status(batch_conn, job)["state"] == "done"


def test_cancel_stops_a_job_and_keeps_what_is_done(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    job = submit(
        batch_conn, {"name": "long", "tasks": [record(f"t{i}", log, seconds=0.5) for i in range(12)]}
    )
    runner = BatchRunner(
        conninfo,
        dask_client,
        RunnerSettings(slots=2, prefetch=1, lease_seconds=0.6, task_modules=("batch_support",)),
    )
    thread = threading.Thread(target=runner.run, kwargs={"timeout": 60})
    thread.start()
    while store.job_status(batch_conn, job)["tasks"].get("done", 0) < 2:
        time.sleep(0.05)
    cancelled = store.cancel(batch_conn, job)
    thread.join(30)
    assert not thread.is_alive()
    status = store.job_status(batch_conn, job)
    assert status["state"] == "cancelled"
    assert status["tasks"]["cancelled"] == cancelled >= 8
    assert status["tasks"]["done"] + cancelled == 12
    assert len(journal(log)) <= 12 - cancelled + 2  # at most the two running when cancelled ran on
    assert store.retry(batch_conn, job) == cancelled
    run(conninfo, dask_client)
    assert store.job_status(batch_conn, job)["tasks"] == {"done": 12}


def test_bad_input_is_recorded_on_the_tasks_and_the_rest_goes_on(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    job = submit(
        batch_conn,
        {
            "name": "mixed",
            "tasks": [
                {"label": "unknown", "task": "no.such.task", "outputs": ["U"]},
                {"label": "after-unknown", "task": "batch.sum", "inputs": {"u": "U"}},
                {"label": "badconfig", "task": "batch.sleep", "config": {"seconds": -1}},
                {"label": "typo", "task": "batch.sleep", "config": {"secnds": 1}},
                {"label": "cyc1", "task": "batch.sum", "inputs": {"x": "C2"}, "outputs": ["C1"]},
                {"label": "cyc2", "task": "batch.sum", "inputs": {"x": "C1"}, "outputs": ["C2"]},
                {"label": "after-cycle", "task": "batch.sum", "inputs": {"x": "C2"}},
                {"label": "missing", "task": "batch.sum", "inputs": {"x": "nowhere"}},
                {"label": "ok1", "task": "batch.sum", "args": {"x": 1}, "outputs": ["O"]},
                record("ok2", log, inputs={"o": "O"}),
                {"label": "bad-args", "task": "batch.sum", "args": {"x": "not a number"}},
            ],
        },
    )
    run(conninfo, dask_client)
    t = tasks(batch_conn, job)
    assert t["unknown"]["state"] == "failed"
    assert "unknown task 'no.such.task'" in t["unknown"]["error"] and "batch.noop" in t["unknown"]["error"]
    assert t["after-unknown"]["state"] == "upstream_failed" and "'unknown'" in t["after-unknown"]["error"]
    assert t["badconfig"]["state"] == "failed" and "seconds" in t["badconfig"]["error"]
    assert "secnds" in t["typo"]["error"] and "fields: seconds" in t["typo"]["error"]
    for label in ("cyc1", "cyc2"):
        assert t[label]["state"] == "failed" and "dependency cycle" in t[label]["error"]
        assert "cyc1" in t[label]["error"] and "cyc2" in t[label]["error"]
    assert t["after-cycle"]["state"] == "upstream_failed"
    assert t["missing"]["state"] == "failed" and "missing input 'nowhere'" in t["missing"]["error"]
    assert t["ok1"]["state"] == t["ok2"]["state"] == "done"
    assert t["bad-args"]["state"] == "failed" and t["bad-args"]["attempts"] == 3
    assert "TypeError" in t["bad-args"]["error"]
    assert store.job_status(batch_conn, job)["state"] == "failed"
    with pytest.raises(BatchError, match="failed at submission"):
        store.retry(batch_conn, job, ["unknown"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be a mapping"),
        ({"name": "x", "tasks": []}, "tasks: List should have at least 1 item"),
        (
            {"name": "x", "priority": "urgent", "tasks": [{"label": "a", "task": "t"}]},
            "priority: Input should be",
        ),
        (
            {"name": "x", "tasks": [{"label": "a", "task": "t"}, {"label": "a", "task": "t"}]},
            "two tasks are labelled 'a'",
        ),
        (
            {
                "name": "x",
                "tasks": [
                    {"label": "a", "task": "t", "outputs": ["D"]},
                    {"label": "b", "task": "t", "outputs": ["D"]},
                ],
            },
            "dataset 'D' is written by both 'a' and 'b'",
        ),
        ({"name": "x", "tasks": [{"label": "a; DROP TABLE x", "task": "t"}]}, "tasks.0.label"),
        ({"name": "x", "tasks": [{"label": "a", "task": "t", "inputs": {"x": 3}}]}, "tasks.0.inputs.x"),
    ],
)
def test_malformed_workflows_are_refused_with_the_problem(data: object, message: str) -> None:
    with pytest.raises(WorkflowError, match=message.replace("(", r"\(")):
        workflow.plan(workflow.parse(data))


def test_unknown_job_is_named(batch_conn: psycopg.Connection) -> None:
    with pytest.raises(BatchError, match="no batch job 999"):
        store.cancel(batch_conn, 999)
