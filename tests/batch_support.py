"""Shared fixtures of the batch tests: a migrated deployment on the session's PostgreSQL (batch tables
emptied per test), a real Dask LocalCluster, and tasks with side effects the tests can count (they append
to files, so they work the same in threads and in worker processes)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from distributed import Client
from pydantic import Field

from dms import migrate
from dms.deployment import Deployment
from dms.services.batch import store, workflow
from dms.services.batch.runner import BatchRunner, RunnerSettings, open_cluster
from dms.tasks import Task, TaskConfig, register_task
from tests.pg_support import control_database, drop_database, seed_default_shard

BATCH_TABLES = (
    "dms.calibration, dms.ocs_command, dms.batch_quota, dms.batch_task_input, dms.batch_dataset, "
    "dms.batch_task, dms.batch_job"
)
TEST_MODULES = ("batch_support",)


class RecordConfig(TaskConfig):
    journal: str = Field(description="File each run appends a JSON line to (label, pid, start time).")
    seconds: float = Field(default=0.0, ge=0, description="Seconds to work before returning.")
    fail_times: int = Field(default=0, ge=0, description="Fail this many runs (counted in the journal).")


@register_task
class RecordTask(Task[RecordConfig, Any]):
    """Append a line to a journal, work a while, then return the sum of the inputs (or fail)."""

    name = "test.record"
    ConfigClass = RecordConfig

    def run(self, **values: Any) -> Any:
        label = self.data_id.get("label", "?")
        path = Path(self.config.journal)
        with path.open("a") as journal:
            journal.write(json.dumps({"label": label, "pid": os.getpid(), "t": time.time()}) + "\n")
        runs = sum(1 for line in path.read_text().splitlines() if json.loads(line)["label"] == label)
        self.log.info("run %d of %s", runs, label)
        time.sleep(self.config.seconds)
        if runs <= self.config.fail_times:
            raise RuntimeError(f"planned failure {runs} of {self.config.fail_times}")
        total = 0.0
        for value in values.values():
            total += sum(value) if isinstance(value, list) else value
        return total


def journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def batch_deployment(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    name = control_database(pg_server, "batch")
    dep = Deployment.create(tmp_path_factory.mktemp("batchdep"), database_url=pg_server.get_uri(name))
    seed_default_shard(dep, pg_server)
    migrate.upgrade(dep)
    yield dep
    dep.dispose()
    drop_database(pg_server, name)


def conninfo_of(deployment: Deployment) -> str:
    return str(deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False))


@pytest.fixture()
def conninfo(batch_deployment: Deployment) -> str:
    """The control database's URI, with the batch tables emptied."""
    uri = conninfo_of(batch_deployment)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {BATCH_TABLES} RESTART IDENTITY")
    return uri


@pytest.fixture()
def batch_conn(conninfo: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    """A LocalCluster in this process: 1 worker with 4 threads."""
    client = open_cluster(workers=1, threads=4, processes=False)
    yield client
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


@pytest.fixture(scope="module")
def single_thread_client() -> Iterator[Client]:
    """A LocalCluster in this process with one thread: one task at a time, the rest queued in Dask."""
    client = open_cluster(workers=1, threads=1, processes=False)
    yield client
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def submit(conn: psycopg.Connection, data: dict[str, Any]) -> int:
    return store.submit(conn, workflow.parse(data))


def run(conninfo: str, client: Client, timeout: float = 120, **settings: Any) -> dict[str, int]:
    settings.setdefault("task_modules", TEST_MODULES)
    settings.setdefault("backoff_seconds", 0.1)
    return BatchRunner(conninfo, client, RunnerSettings(**settings)).run(timeout=timeout)


def tasks(conn: psycopg.Connection, job_id: int) -> dict[str, dict[str, Any]]:
    """A job's tasks by label."""
    return {t["label"]: t for t in store.job_status(conn, job_id)["task_list"]}


def record(label: str, journal_path: Path, **extra: Any) -> dict[str, Any]:
    """A test.record task entry."""
    config = {"journal": str(journal_path)}
    config.update({k: extra.pop(k) for k in ("seconds", "fail_times") if k in extra})
    return {"label": label, "task": "test.record", "config": config, "data_id": {"label": label}, **extra}
