"""Faults of the Batch Processing service with real processes: a Dask worker process killed mid-task, and
a runner process killed mid-job that a new runner resumes without redoing finished tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from batch_support import journal, record, submit, tasks

from dms.services.batch import store
from dms.services.batch.runner import BatchRunner, RunnerSettings, open_cluster

pytest_plugins = ["batch_support"]

TESTS = str(Path(__file__).resolve().parent)


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_a_worker_killed_mid_task_is_retried_and_its_outputs_appear_once(
    batch_conn: psycopg.Connection, conninfo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # worker processes must import the test tasks
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "journal"
    job = submit(
        batch_conn,
        {
            "name": "kill",
            "tasks": [
                {"label": "src", "task": "batch.sum", "args": {"x": 7}, "outputs": ["S"]},
                record("victim", log, seconds=3.0, inputs={"s": "S"}, outputs=["V"]),
                record("after", log, inputs={"v": "V"}, outputs=["A"]),
            ],
        },
    )
    client = open_cluster(workers=2, threads=1, processes=True)
    try:
        runner = BatchRunner(
            conninfo, client, RunnerSettings(task_modules=("batch_support",), backoff_seconds=0.2)
        )
        thread = threading.Thread(target=runner.run, kwargs={"timeout": 120})
        thread.start()
        _wait_for(lambda: any(e["label"] == "victim" for e in journal(log)))
        victim_pid = next(e["pid"] for e in journal(log) if e["label"] == "victim")
        assert victim_pid != os.getpid()
        os.kill(victim_pid, signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive()
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    t = tasks(batch_conn, job)
    assert t["victim"]["state"] == "done" and t["victim"]["attempts"] == 2
    assert t["after"]["state"] == "done"
    runs = [e for e in journal(log) if e["label"] == "victim"]
    assert len(runs) == 2 and runs[1]["pid"] != victim_pid  # really ran twice, on another process
    rows = batch_conn.execute(
        "SELECT name, value FROM dms.batch_dataset WHERE job_id = %s ORDER BY name", (job,)
    ).fetchall()
    assert rows == [("A", 7.0), ("S", 7), ("V", 7.0)]
    assert [e["label"] for e in journal(log)].count("after") == 1


RUNNER = """
import sys
from dms.services.batch.runner import BatchRunner, RunnerSettings, open_cluster
client = open_cluster(workers=1, threads=2, processes=False)
settings = RunnerSettings(name=sys.argv[2], lease_seconds=1.0, task_modules=("batch_support",))
BatchRunner(sys.argv[1], client, settings).run(timeout=120)
"""


def test_a_crashed_runner_is_resumed_without_redoing_finished_tasks(
    batch_conn: psycopg.Connection, conninfo: str, tmp_path: Path
) -> None:
    log = tmp_path / "journal"
    # two chains of 8 tasks, each task summing its predecessor's output plus one
    entries = []
    for chain in "ab":
        for i in range(8):
            entry = record(f"{chain}{i}", log, seconds=0.3, outputs=[f"{chain}{i}"], args={"one": 1})
            if i:
                entry["inputs"] = {"prev": f"{chain}{i - 1}"}
            entries.append(entry)
    job = submit(batch_conn, {"name": "chains", "tasks": entries})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), TESTS])}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, conninfo, "first"], env=env)
    try:
        _wait_for(lambda: store.job_status(batch_conn, job)["tasks"].get("done", 0) >= 6)
    finally:
        process.kill()
        process.wait(30)
    done_before = {label for label, t in tasks(batch_conn, job).items() if t["state"] == "done"}
    assert 6 <= len(done_before) < 16
    # a different runner takes over once the dead runner's lease (1 s) has lapsed
    time.sleep(1.2)
    client = open_cluster(workers=1, threads=2, processes=False)
    try:
        BatchRunner(conninfo, client, RunnerSettings(name="second", task_modules=("batch_support",))).run(
            timeout=120
        )
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    t = tasks(batch_conn, job)
    assert {row["state"] for row in t.values()} == {"done"}
    labels = [e["label"] for e in journal(log)]
    assert all(labels.count(label) == 1 for label in done_before)  # finished tasks were not redone
    assert all(1 <= labels.count(label) <= 2 for label in t)  # at most the interrupted ones ran twice
    values = store.dataset_values(batch_conn, job)
    assert values == {f"{chain}{i}": float(i + 1) for chain in "ab" for i in range(8)}
    assert any(row["worker"].startswith("second ") for row in t.values())
