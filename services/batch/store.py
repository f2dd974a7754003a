"""Batch jobs and tasks in the control database: submit, claim, finish, cancel, retry and status.

Every function takes an autocommit psycopg connection and runs its statements in one transaction of its own,
so a runner that dies between two calls leaves the database consistent: a task is queued, running (with a
lease its runner renews) or finished, and a finished task's outputs are written in the same transaction that
marks it done (so they appear once, whatever happens to the worker or the runner).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

import dms
from dms.services.batch.classes import PRIORITY_CLASSES, Quota, rank
from dms.services.batch.errors import BatchError, JobNotFoundError
from dms.services.batch.workflow import WorkflowFile, after_dataset, plan

log = logging.getLogger(__name__)

ACTIVE_STATES = ("blocked", "queued", "running")
TASK_STATES = ("blocked", "queued", "running", "done", "failed", "upstream_failed", "cancelled")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


# ---- submit --------------------------------------------------------------------------------------------


def submit(conn: psycopg.Connection, workflow: WorkflowFile, *, check_tasks: bool = True) -> int:
    """Insert a job and its tasks (COPY, so millions stay cheap); returns the job id.

    Tasks with a submit-time problem (unknown task, invalid configuration, missing input, cycle) are
    recorded failed with the error, their downstream tasks upstream_failed; the rest is queued or blocked."""
    tasks = plan(workflow, check_tasks=check_tasks)
    version = dms.__version__
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO dms.batch_job (name, production, priority_class, workflow, dms_version) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING job_id",
            (
                workflow.name,
                workflow.production,
                workflow.priority,
                Jsonb({k: v for k, v in workflow.model_dump(mode="json").items() if k != "tasks"}),
                version,
            ),
        )
        job_id = int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence('dms.batch_task', 'task_id')) FROM generate_series(1, %s)",
            (len(tasks),),
        )
        ids = {task.entry.label: int(row[0]) for task, row in zip(tasks, cur.fetchall(), strict=True)}
        followed = {label for task in tasks for label in task.entry.after}
        columns = (
            "task_id, job_id, label, task_name, priority_class, priority, state, config, config_hash, "
            "data_id, inputs, args, outputs, waiting_on, max_attempts, error, dms_version, cpus, memory_mb, "
            "finished_at"
        )
        with cur.copy(f"COPY dms.batch_task ({columns}) FROM STDIN") as copy:
            for task in tasks:
                entry = task.entry
                state = task.state
                copy.write_row(
                    (
                        ids[entry.label],
                        job_id,
                        entry.label,
                        entry.task,
                        task.priority_class,
                        rank(task.priority_class),
                        state,
                        _json(entry.config),
                        task.config_hash,
                        _json(entry.data_id),
                        _json(entry.inputs),
                        _json(entry.args),
                        _json(entry.outputs),
                        len(task.upstream),
                        task.max_attempts,
                        task.error,
                        version,
                        task.cpus,
                        task.memory_mb,
                        "now" if state in ("failed", "upstream_failed") else None,
                    )
                )
        with cur.copy("COPY dms.batch_dataset (job_id, name, producer) FROM STDIN") as copy:
            for task in tasks:
                label = task.entry.label
                names = list(task.entry.outputs) + ([after_dataset(label)] if label in followed else [])
                for name in names:
                    copy.write_row((job_id, name, ids[label]))
        with cur.copy("COPY dms.batch_task_input (task_id, job_id, dataset) FROM STDIN") as copy:
            for task in tasks:
                for name in task.reads:
                    copy.write_row((ids[task.entry.label], job_id, name))
        _close_jobs(cur, [job_id])
    bad = sum(1 for task in tasks if task.error is not None)
    log.info(
        "job %d (%s): %d tasks submitted, %d failed at submission", job_id, workflow.name, len(tasks), bad
    )
    return job_id


# ---- claim ---------------------------------------------------------------------------------------------


@dataclass
class Claimed:
    """A task a runner has claimed: what the worker needs to run it."""

    task_id: int
    job_id: int
    label: str
    task: str
    priority_class: str
    config: dict[str, Any]
    data_id: dict[str, Any]
    inputs: dict[str, Any]
    args: dict[str, Any]
    outputs: list[str]
    attempt: int
    values: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The task as the worker's `execute` takes it (inputs resolved to their values)."""
        arguments = dict(self.args)
        for name, ref in self.inputs.items():
            arguments[name] = self.values[ref] if isinstance(ref, str) else [self.values[r] for r in ref]
        return {
            "task_id": self.task_id,
            "attempt": self.attempt,
            "task": self.task,
            "config": self.config,
            "data_id": self.data_id,
            "arguments": arguments,
            "outputs": self.outputs,
        }


CLAIM = """
WITH picked AS (
    SELECT task_id FROM dms.batch_task
    WHERE state = 'queued' AND priority = %(priority)s AND next_attempt_at <= now()
    ORDER BY priority, task_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE dms.batch_task t
SET state = 'running', attempts = t.attempts + 1, worker = %(runner)s, started_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM picked WHERE t.task_id = picked.task_id
RETURNING t.task_id, t.job_id, t.label, t.task_name, t.priority_class, t.config, t.data_id, t.inputs,
          t.args, t.outputs, t.attempts
"""


def claim(
    conn: psycopg.Connection, runner: str, priority_class: str, limit: int, *, lease_seconds: float = 60.0
) -> list[Claimed]:
    """Claim up to `limit` queued tasks of one class, oldest first, skipping rows other runners lock."""
    if limit <= 0:
        return []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            CLAIM,
            {"priority": rank(priority_class), "limit": limit, "runner": runner, "lease": lease_seconds},
        )
        claimed = [Claimed(*row) for row in cur.fetchall()]
        needing = [c.task_id for c in claimed if c.inputs]
        if needing:
            cur.execute(
                "SELECT i.task_id, d.name, d.value, d.written_at IS NOT NULL FROM dms.batch_task_input i "
                "JOIN dms.batch_dataset d ON d.job_id = i.job_id AND d.name = i.dataset "
                "WHERE i.task_id = ANY(%s)",
                (needing,),
            )
            by_id = {c.task_id: c for c in claimed}
            for task_id, name, value, written in cur.fetchall():
                if written:
                    by_id[task_id].values[name] = value
    return claimed


def queued_classes(conn: psycopg.Connection) -> set[str]:
    """The priority classes with a task claimable now (one index probe per class)."""
    found: set[str] = set()
    with conn.cursor() as cur:
        for index, cls in enumerate(PRIORITY_CLASSES):
            cur.execute(
                "SELECT 1 FROM dms.batch_task WHERE state = 'queued' AND priority = %s "
                "AND next_attempt_at <= now() LIMIT 1",
                (index,),
            )
            if cur.fetchone() is not None:
                found.add(cls)
    return found


# ---- finish --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What came back from one attempt of a task."""

    task_id: int
    attempt: int
    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log: str | None = None
    seconds: float | None = None
    worker: str | None = None
    config_hash: str | None = None
    started: float | None = None  # when the worker started it (epoch seconds)


def finish(
    conn: psycopg.Connection,
    outcomes: Sequence[Outcome],
    *,
    backoff_seconds: float = 2.0,
    backoff_max: float = 600.0,
) -> dict[str, int]:
    """Record a batch of outcomes in one transaction: done tasks write their outputs and release the tasks
    waiting on them; failed attempts are retried after an exponential backoff, or fail the task (and make
    its downstream tasks upstream_failed). An outcome for a task no longer running that attempt (cancelled,
    or reclaimed after its runner was presumed dead) is ignored, so outputs are written once."""
    counts = {"done": 0, "retried": 0, "failed": 0, "ignored": 0}
    good = [o for o in outcomes if o.ok]
    bad = [o for o in outcomes if not o.ok]
    with conn.transaction(), conn.cursor() as cur:
        jobs: set[int] = set()
        if good:
            cur.execute(
                "UPDATE dms.batch_task t SET state = 'done', finished_at = now(), seconds = v.seconds, "
                "log_excerpt = v.log, worker = v.worker, error = NULL, lease_expires_at = NULL, "
                "config_hash = coalesce(v.config_hash, t.config_hash), "
                "started_at = coalesce(to_timestamp(v.started), t.started_at) "
                "FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::text[], %s::text[], %s::text[], "
                "%s::float8[]) AS v(task_id, attempt, seconds, log, worker, config_hash, started) "
                "WHERE t.task_id = v.task_id AND t.state = 'running' AND t.attempts = v.attempt "
                "RETURNING t.task_id, t.job_id",
                (
                    [o.task_id for o in good],
                    [o.attempt for o in good],
                    [o.seconds for o in good],
                    [o.log for o in good],
                    [o.worker for o in good],
                    [o.config_hash for o in good],
                    [o.started for o in good],
                ),
            )
            accepted = {int(task_id): int(job_id) for task_id, job_id in cur.fetchall()}
            jobs.update(accepted.values())
            counts["done"] = len(accepted)
            rows = [(o.task_id, n, v) for o in good if o.task_id in accepted for n, v in o.outputs.items()]
            if rows:
                cur.execute(
                    "UPDATE dms.batch_dataset d SET value = v.value, written_at = now() "
                    "FROM unnest(%s::bigint[], %s::text[], %s::jsonb[]) AS v(producer, name, value) "
                    "WHERE d.producer = v.producer AND d.name = v.name",
                    ([r[0] for r in rows], [r[1] for r in rows], [Jsonb(r[2]) for r in rows]),
                )
            if accepted:
                _release(cur, list(accepted))
        if bad:
            cur.execute(
                "UPDATE dms.batch_task t SET "
                "state = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'queued' END, "
                "next_attempt_at = now() + make_interval(secs => least(%s * power(2, t.attempts - 1), %s)), "
                "finished_at = CASE WHEN t.attempts >= t.max_attempts THEN now() END, "
                "error = v.error, log_excerpt = v.log, worker = v.worker, seconds = v.seconds, "
                "lease_expires_at = NULL "
                "FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[], %s::float8[]) "
                "AS v(task_id, attempt, error, log, worker, seconds) "
                "WHERE t.task_id = v.task_id AND t.state = 'running' AND t.attempts = v.attempt "
                "RETURNING t.task_id, t.job_id, t.state",
                (
                    backoff_seconds,
                    backoff_max,
                    [o.task_id for o in bad],
                    [o.attempt for o in bad],
                    [o.error or "failed" for o in bad],
                    [o.log for o in bad],
                    [o.worker for o in bad],
                    [o.seconds for o in bad],
                ),
            )
            failed = []
            for task_id, job_id, state in cur.fetchall():
                jobs.add(int(job_id))
                if state == "failed":
                    failed.append(int(task_id))
                else:
                    counts["retried"] += 1
            counts["failed"] = len(failed)
            _fail_downstream(cur, failed)
        counts["ignored"] = len(outcomes) - counts["done"] - counts["retried"] - counts["failed"]
        _close_jobs(cur, jobs)
    return counts


def _release(cur: psycopg.Cursor[Any], producers: list[int]) -> None:
    """Tasks reading what `producers` wrote wait on one task fewer; those waiting on none are queued."""
    cur.execute(
        "UPDATE dms.batch_task t SET waiting_on = t.waiting_on - s.n, "
        "state = CASE WHEN t.state = 'blocked' AND t.waiting_on - s.n = 0 THEN 'queued' ELSE t.state END, "
        "next_attempt_at = now() "
        "FROM (SELECT i.task_id, count(DISTINCT d.producer) AS n FROM dms.batch_dataset d "
        "      JOIN dms.batch_task_input i ON i.job_id = d.job_id AND i.dataset = d.name "
        "      WHERE d.producer = ANY(%s) GROUP BY i.task_id) AS s "
        "WHERE t.task_id = s.task_id",
        (producers,),
    )


#: The tasks downstream of `%s` (an array of task ids), each with the first upstream task it comes from.
DOWNSTREAM = """
WITH RECURSIVE down(task_id, root) AS (
    SELECT i.task_id, d.producer FROM dms.batch_dataset d
    JOIN dms.batch_task_input i ON i.job_id = d.job_id AND i.dataset = d.name
    WHERE d.producer = ANY(%s)
  UNION
    SELECT i.task_id, down.root FROM down
    JOIN dms.batch_dataset d ON d.producer = down.task_id
    JOIN dms.batch_task_input i ON i.job_id = d.job_id AND i.dataset = d.name
), r AS (
    SELECT DISTINCT ON (down.task_id) down.task_id, root.label FROM down
    JOIN dms.batch_task root ON root.task_id = down.root ORDER BY down.task_id, down.root
)
"""
FAIL_DOWNSTREAM = (
    DOWNSTREAM
    + """
UPDATE dms.batch_task t SET state = 'upstream_failed', finished_at = now(),
    error = format('upstream task %%L failed', r.label)
FROM r WHERE t.task_id = r.task_id AND t.state = 'blocked'
"""
)
UNFAIL_DOWNSTREAM = (
    DOWNSTREAM
    + """
UPDATE dms.batch_task t SET state = 'blocked', finished_at = NULL, error = NULL
FROM r WHERE t.task_id = r.task_id AND t.state IN ('upstream_failed', 'cancelled')
"""
)


def _fail_downstream(cur: psycopg.Cursor[Any], failed: list[int]) -> None:
    if failed:
        cur.execute(FAIL_DOWNSTREAM, (failed,))


def _close_jobs(cur: psycopg.Cursor[Any], jobs: Iterable[int]) -> None:
    """Jobs with no task left to run are done, or failed if any task failed."""
    ids = sorted(jobs)
    if not ids:
        return
    # A big job's open tasks are many, so the planner reads them by a sequential or bitmap scan to find one
    # (28 ms per call at 1M tasks with 100k open, measured; it grows with the job); one probe of
    # idx_batch_task_job_state finds the first in microseconds. The settings end with this statement.
    cur.execute("SET LOCAL enable_seqscan = off")
    cur.execute("SET LOCAL enable_bitmapscan = off")
    cur.execute(
        "UPDATE dms.batch_job j SET finished_at = now(), state = CASE WHEN EXISTS ("
        "  SELECT 1 FROM dms.batch_task t WHERE t.job_id = j.job_id"
        "  AND t.state IN ('failed', 'upstream_failed')"
        ") THEN 'failed' ELSE 'done' END "
        "WHERE j.job_id = ANY(%s) AND j.state = 'active' AND NOT EXISTS ("
        "  SELECT 1 FROM dms.batch_task t WHERE t.job_id = j.job_id"
        "  AND t.state IN ('blocked', 'queued', 'running'))",
        (ids,),
    )
    cur.execute("SET LOCAL enable_seqscan = DEFAULT")
    cur.execute("SET LOCAL enable_bitmapscan = DEFAULT")


# ---- leases --------------------------------------------------------------------------------------------


def renew(conn: psycopg.Connection, runner: str, task_ids: Sequence[int], lease_seconds: float) -> list[int]:
    """Extend the leases of a runner's running tasks; returns those no longer running (cancelled)."""
    if not task_ids:
        return []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "UPDATE dms.batch_task SET lease_expires_at = now() + make_interval(secs => %s) "
            "WHERE task_id = ANY(%s) AND state = 'running' AND worker = %s RETURNING task_id",
            (lease_seconds, list(task_ids), runner),
        )
        alive = {int(row[0]) for row in cur.fetchall()}
    return [t for t in task_ids if t not in alive]


def reap(conn: psycopg.Connection, *, runner: str | None = None, refund: bool = False) -> int:
    """Give back the running tasks whose runner stopped renewing its lease (or, with `runner`, every task
    that runner held: it is restarting). They are retried unless out of attempts; with `refund` (a runner
    stopping on purpose) the interrupted attempt is not counted."""
    with conn.transaction(), conn.cursor() as cur:
        condition = "worker = %s" if runner is not None else "lease_expires_at < now()"
        if refund:
            cur.execute(
                "UPDATE dms.batch_task SET attempts = greatest(attempts - 1, 0) "
                f"WHERE state = 'running' AND {condition}",
                (runner,) if runner is not None else (),
            )
        cur.execute(
            "UPDATE dms.batch_task SET "
            "state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, "
            "finished_at = CASE WHEN attempts >= max_attempts THEN now() END, "
            "error = format('attempt %%s lost: runner %%s stopped before it finished', attempts, worker), "
            f"next_attempt_at = now(), lease_expires_at = NULL WHERE state = 'running' AND {condition} "
            "RETURNING task_id, job_id, state",
            (runner,) if runner is not None else (),
        )
        rows = cur.fetchall()
        _fail_downstream(cur, [int(r[0]) for r in rows if r[2] == "failed"])
        _close_jobs(cur, {int(r[1]) for r in rows})
    if rows:
        log.warning("gave back %d tasks of stopped runners", len(rows))
    return len(rows)


def any_work(conn: psycopg.Connection, job_ids: Sequence[int] | None = None) -> bool:
    """Whether any task is queued or running (of `job_ids`, if given)."""
    with conn.cursor() as cur:
        if job_ids:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM dms.batch_task WHERE job_id = ANY(%s) "
                "AND state IN ('queued', 'running', 'blocked'))",
                (list(job_ids),),
            )
        else:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM dms.batch_task WHERE state = 'queued') "
                "OR EXISTS (SELECT 1 FROM dms.batch_task WHERE state = 'running')"
            )
        return bool(cur.fetchone()[0])  # type: ignore[index]


# ---- operator actions ----------------------------------------------------------------------------------


def _check_job(cur: psycopg.Cursor[Any], job_id: int) -> str:
    cur.execute("SELECT state FROM dms.batch_job WHERE job_id = %s", (job_id,))
    row = cur.fetchone()
    if row is None:
        raise JobNotFoundError(f"no batch job {job_id} (dms batch status lists the jobs)")
    return str(row[0])


def cancel(conn: psycopg.Connection, job_id: int) -> int:
    """Cancel a job: its unfinished tasks become cancelled (running ones are stopped by their runner, and
    their results ignored). Finished tasks and written datasets are kept. Returns the tasks cancelled."""
    with conn.transaction(), conn.cursor() as cur:
        _check_job(cur, job_id)
        cur.execute(
            "UPDATE dms.batch_task SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL "
            "WHERE job_id = %s AND state IN ('blocked', 'queued', 'running')",
            (job_id,),
        )
        count = cur.rowcount
        cur.execute(
            "UPDATE dms.batch_job SET state = 'cancelled', finished_at = now() WHERE job_id = %s "
            "AND state = 'active'",
            (job_id,),
        )
    return count


def retry(conn: psycopg.Connection, job_id: int, labels: Sequence[str] = ()) -> int:
    """Queue a job's failed tasks again (all, or those labelled), with fresh attempts, and put their
    upstream_failed downstream tasks back to waiting. Tasks that failed at submission (unknown task,
    invalid configuration, missing input, cycle) need a corrected workflow and are refused."""
    with conn.transaction(), conn.cursor() as cur:
        _check_job(cur, job_id)
        cur.execute(
            "SELECT task_id, label, attempts, state FROM dms.batch_task WHERE job_id = %s "
            "AND state IN ('failed', 'cancelled') AND (cardinality(%s::text[]) = 0 OR label = ANY(%s))",
            (job_id, list(labels), list(labels)),
        )
        rows = cur.fetchall()
        unknown = set(labels) - {r[1] for r in rows}
        if unknown:
            raise BatchError(
                f"job {job_id} has no failed or cancelled task labelled "
                + ", ".join(sorted(map(repr, unknown)))
            )
        never_ran = [r[1] for r in rows if r[2] == 0 and r[3] == "failed"]
        if never_ran and labels:
            raise BatchError(
                f"task {never_ran[0]!r} of job {job_id} failed at submission (see dms batch status "
                f"{job_id}): fix the workflow and submit it again"
            )
        ids = [int(r[0]) for r in rows if not (r[2] == 0 and r[3] == "failed")]
        if not ids:
            return 0
        cur.execute(
            "UPDATE dms.batch_task SET state = CASE WHEN waiting_on = 0 THEN 'queued' ELSE 'blocked' END, "
            "attempts = 0, next_attempt_at = now(), finished_at = NULL WHERE task_id = ANY(%s)",
            (ids,),
        )
        cur.execute(
            UNFAIL_DOWNSTREAM,
            (ids,),
        )
        cur.execute(
            "UPDATE dms.batch_job SET state = 'active', finished_at = NULL WHERE job_id = %s", (job_id,)
        )
    return len(ids)


# ---- status and quotas ---------------------------------------------------------------------------------


def jobs(conn: psycopg.Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest jobs with their task counts per state."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT j.job_id, j.name, j.production, j.priority_class, j.state, j.submitted_at, "
            "  j.finished_at, (SELECT jsonb_object_agg(state, n) FROM (SELECT state, count(*) AS n "
            "   FROM dms.batch_task t WHERE t.job_id = j.job_id GROUP BY state) s) AS tasks "
            "FROM dms.batch_job j ORDER BY j.job_id DESC LIMIT %s",
            (limit,),
        )
        return list(cur.fetchall())


def job_status(conn: psycopg.Connection, job_id: int, *, tasks: int = 1000) -> dict[str, Any]:
    """A job, its task counts per state and its first `tasks` tasks (failures first)."""
    with conn.cursor() as plain:
        _check_job(plain, job_id)
    with conn.cursor(row_factory=dict_row) as cur:
        job = next(iter(_job_rows(cur, job_id)))
        cur.execute(
            "SELECT task_id, label, task_name, priority_class, state, attempts, max_attempts, "
            "next_attempt_at, config_hash, dms_version, worker, seconds, error, log_excerpt, data_id, "
            "outputs FROM dms.batch_task WHERE job_id = %s "
            "ORDER BY state NOT IN ('failed', 'upstream_failed'), task_id LIMIT %s",
            (job_id, tasks),
        )
        job["task_list"] = list(cur.fetchall())
    return job


def _job_rows(cur: psycopg.Cursor[Any], job_id: int) -> Iterable[dict[str, Any]]:
    cur.execute(
        "SELECT j.job_id, j.name, j.production, j.priority_class, j.state, j.submitted_at, j.finished_at, "
        "  j.dms_version, (SELECT jsonb_object_agg(state, n) FROM (SELECT state, count(*) AS n "
        "  FROM dms.batch_task t WHERE t.job_id = j.job_id GROUP BY state) s) AS tasks "
        "FROM dms.batch_job j WHERE j.job_id = %s",
        (job_id,),
    )
    return cur.fetchall()


def dataset_values(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    """The written datasets of a job, by name."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT name, value FROM dms.batch_dataset WHERE job_id = %s AND written_at IS NOT NULL "
            "AND name NOT LIKE '@%%'",
            (job_id,),
        )
        return {name: value for name, value in cur.fetchall()}


def quotas(conn: psycopg.Connection) -> dict[str, Quota]:
    with conn.cursor() as cur:
        cur.execute("SELECT priority_class, reserved_workers, max_workers FROM dms.batch_quota")
        return {cls: Quota(int(reserved), None if cap is None else int(cap)) for cls, reserved, cap in cur}


def set_quota(conn: psycopg.Connection, priority_class: str, quota: Quota) -> None:
    """Set a class's reserved minimum and flexible maximum of workers."""
    rank(priority_class)
    if quota.reserved < 0 or (quota.maximum is not None and quota.maximum < quota.reserved):
        raise BatchError(
            f"quota of {priority_class}: the maximum ({quota.maximum}) must be at least the reserved minimum "
            f"({quota.reserved}), and the minimum not negative"
        )
    with conn.transaction():
        conn.execute(
            "INSERT INTO dms.batch_quota (priority_class, reserved_workers, max_workers) VALUES (%s, %s, %s) "
            "ON CONFLICT (priority_class) DO UPDATE SET reserved_workers = EXCLUDED.reserved_workers, "
            "max_workers = EXCLUDED.max_workers, updated_at = now()",
            (priority_class, quota.reserved, quota.maximum),
        )


def running_by_runner(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The runners holding running tasks, with their counts per class and latest lease."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT split_part(worker, ' ', 1) AS runner, priority_class, count(*) AS running, "
            "max(lease_expires_at) AS lease_expires_at FROM dms.batch_task WHERE state = 'running' "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return list(cur.fetchall())
