"""The Batch Processing service: scheduling overhead against plain Dask, the database cost of tracking a
million tasks, and how fast a prompt-class task starts while DRP tasks saturate the workers.

Usage: python benchmarks/batch.py [--tasks 100000] [--tracked 1000000] [--workers 1] [--threads 2]

On an embedded PostgreSQL (pgserver) and one Dask LocalCluster (threads in this process unless --processes):
1. `--tasks` no-op tasks through the batch service (submit, then the runner claims in batches, runs each
   with dms.tasks.run_task on Dask, records outcomes) against plain Dask `client.map` of a no-op function on
   the same cluster, and `client.map` of the batch worker's `execute` on the same specs (the task framework
   without the database). Prints ms per task of overhead and tasks/s, and the ratio. Goal: < 2 ms/task.
2. `--tracked` tasks submitted in one job: insert rate, table + index size, and claim and finish latency
   of a 1000-task batch with that many tracked.
3. Priority: 4x the slots of 1 s DRP tasks queued and running, then a prompt-class task submitted; the time
   from its submission to its start, without and with one worker reserved for prompt. Goal: < 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from distributed import Client, wait  # noqa: E402

from dms import migrate  # noqa: E402
from dms.deployment import Deployment  # noqa: E402
from dms.services.batch import store, workflow  # noqa: E402
from dms.services.batch.classes import Quota  # noqa: E402
from dms.services.batch.execute import execute  # noqa: E402
from dms.services.batch.runner import BatchRunner, RunnerSettings, open_cluster  # noqa: E402


def load() -> str:
    """The 1, 5 and 15 minute load averages (other developers share the machine)."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def noop(_: Any) -> None:
    return None


def noop_workflow(n: int, name: str = "noop", priority: str = "drp") -> workflow.WorkflowFile:
    return workflow.WorkflowFile.model_validate(
        {
            "name": name,
            "priority": priority,
            "tasks": [{"label": f"t{i}", "task": "batch.noop"} for i in range(n)],
        }
    )


def truncate(conn: psycopg.Connection) -> None:
    conn.execute(
        "TRUNCATE dms.calibration, dms.ocs_command, dms.batch_quota, dms.batch_task_input, "
        "dms.batch_dataset, dms.batch_task, dms.batch_job RESTART IDENTITY"
    )
    conn.execute("VACUUM ANALYZE dms.batch_task")


def overhead(conninfo: str, client: Client, n: int) -> dict[str, float]:
    """Part 1: n no-op tasks through the batch service vs plain Dask on the same cluster."""
    start = time.perf_counter()
    futures = client.map(noop, range(n), pure=False)
    wait(futures)
    dask_s = time.perf_counter() - start
    del futures

    specs = [
        {
            "task_id": i,
            "attempt": 1,
            "task": "batch.noop",
            "config": {},
            "data_id": {},
            "arguments": {},
            "outputs": [],
        }
        for i in range(n)
    ]
    start = time.perf_counter()
    futures = client.map(execute, specs, pure=False)
    wait(futures)
    framework_s = time.perf_counter() - start
    assert all(f.result()["ok"] for f in futures[:100])
    del futures

    with psycopg.connect(conninfo, autocommit=True) as conn:
        truncate(conn)
        start = time.perf_counter()
        job = store.submit(conn, noop_workflow(n))
        submit_s = time.perf_counter() - start
        start = time.perf_counter()
        counts = BatchRunner(conninfo, client, RunnerSettings(batch_size=2000)).run()
        run_s = time.perf_counter() - start
        status = store.job_status(conn, job, tasks=0)
    assert counts.get("done") == n and status["tasks"] == {"done": n}, (counts, status["tasks"])
    return {"dask_s": dask_s, "framework_s": framework_s, "submit_s": submit_s, "run_s": run_s}


def tracking(conninfo: str, n: int) -> dict[str, float]:
    """Part 2: the database cost of n tracked tasks."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        truncate(conn)
        flow = noop_workflow(n)
        start = time.perf_counter()
        store.submit(conn, flow)
        insert_s = time.perf_counter() - start
        conn.execute("ANALYZE dms.batch_task")
        size = conn.execute(
            "SELECT pg_relation_size('dms.batch_task'), pg_indexes_size('dms.batch_task')"
        ).fetchone()
        claims, finishes = [], []
        for _ in range(10):
            t0 = time.perf_counter()
            claimed = store.claim(conn, "bench", "drp", 1000)
            t1 = time.perf_counter()
            store.finish(conn, [store.Outcome(c.task_id, c.attempt, ok=True, seconds=0.0) for c in claimed])
            t2 = time.perf_counter()
            claims.append(t1 - t0)
            finishes.append(t2 - t1)
        single = []
        for _ in range(20):
            t0 = time.perf_counter()
            claimed = store.claim(conn, "bench", "drp", 1)
            single.append(time.perf_counter() - t0)
            store.finish(conn, [store.Outcome(c.task_id, c.attempt, ok=True) for c in claimed])
    assert size is not None
    return {
        "insert_s": insert_s,
        "table_mb": size[0] / 2**20,
        "index_mb": size[1] / 2**20,
        "claim_1000_ms": 1000 * statistics.median(claims),
        "finish_1000_ms": 1000 * statistics.median(finishes),
        "claim_1_ms": 1000 * statistics.median(single),
    }


def priority_latency(conninfo: str, client: Client, reserve: bool) -> float:
    """Part 3: seconds from a prompt task's submission to its start while DRP tasks saturate the workers."""
    slots = sum(client.nthreads().values())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        truncate(conn)
        if reserve:
            store.set_quota(conn, "prompt", Quota(reserved=1))
        tasks = [
            {"label": f"d{i}", "task": "batch.sleep", "config": {"seconds": 1.0}} for i in range(4 * slots)
        ]
        store.submit(conn, workflow.WorkflowFile.model_validate({"name": "drp", "tasks": tasks}))
        stop = threading.Event()
        runner = BatchRunner(conninfo, client, RunnerSettings())
        thread = threading.Thread(target=runner.run, kwargs={"until_idle": False, "stop": stop})
        thread.start()
        while conn.execute("SELECT count(*) FROM dms.batch_task WHERE state = 'running'").fetchone()[0] < (  # type: ignore[index]
            slots - (1 if reserve else 0)
        ):
            time.sleep(0.01)
        time.sleep(0.3)  # mid-way through the running DRP tasks
        job = store.submit(conn, noop_workflow(1, "prompt", "prompt"))
        while store.job_status(conn, job, tasks=0)["state"] == "active":
            time.sleep(0.01)
        row = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) FROM dms.batch_task WHERE job_id = %s", (job,)
        ).fetchone()
        stop.set()
        thread.join()
    assert row is not None
    return float(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--tracked", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", action="store_true", help="Worker processes instead of threads.")
    args = parser.parse_args()
    import pgserver

    work = Path(tempfile.mkdtemp(prefix="batchbench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    deployment = Deployment.create(work / "dep", database_url=server.get_uri(name))
    migrate.upgrade(deployment)
    conninfo = deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    client = open_cluster(workers=args.workers, threads=args.threads, processes=args.processes)
    try:
        kind = "processes" if args.processes else "threads"
        print(f"cluster: {args.workers} worker(s) x {args.threads} thread(s) ({kind})")
        print(f"load average at start: {load()} on {os.cpu_count()} cores (shared with other jobs)")
        o = overhead(conninfo, client, args.tasks)
        n = args.tasks
        per_task = 1000 * (o["run_s"] - o["dask_s"]) / n
        print(f"\n1. {n} no-op tasks")
        print(f"   plain Dask client.map           {o['dask_s']:8.2f} s  {n / o['dask_s']:9.0f} tasks/s")
        print(
            f"   client.map of execute (no DB)   {o['framework_s']:8.2f} s  "
            f"{n / o['framework_s']:9.0f} tasks/s"
        )
        print(f"   batch service: submit           {o['submit_s']:8.2f} s  {n / o['submit_s']:9.0f} tasks/s")
        print(f"   batch service: run              {o['run_s']:8.2f} s  {n / o['run_s']:9.0f} tasks/s")
        print(f"   ratio batch run / plain Dask    {o['run_s'] / o['dask_s']:8.2f}")
        print(
            f"   overhead per task vs Dask       {per_task:8.3f} ms "
            f"(goal < 2 ms: {'met' if per_task < 2 else 'NOT met'})"
        )
        t = tracking(conninfo, args.tracked)
        print(f"\n2. {args.tracked} tracked tasks")
        print(f"   submit (COPY)     {t['insert_s']:8.1f} s  {args.tracked / t['insert_s']:9.0f} tasks/s")
        print(
            f"   table + indexes   {t['table_mb']:8.1f} MiB + {t['index_mb']:.1f} MiB "
            f"({(t['table_mb'] + t['index_mb']) * 2**20 / args.tracked:.0f} bytes/task)"
        )
        print(
            f"   claim 1000        {t['claim_1000_ms']:8.2f} ms   "
            f"finish 1000 {t['finish_1000_ms']:8.2f} ms   "
            f"claim 1 {t['claim_1_ms']:.2f} ms"
        )
        print("\n3. prompt task start while 1 s DRP tasks saturate the workers")
        for reserve in (False, True):
            latency = priority_latency(conninfo, client, reserve)
            label = "1 worker reserved for prompt" if reserve else "no reservation"
            print(f"   {label:30} {latency:6.3f} s (goal < 1 s: {'met' if latency < 1 else 'NOT met'})")
        print(f"\nload average at end: {load()}")
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
        server.cleanup()


if __name__ == "__main__":
    main()
