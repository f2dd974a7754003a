"""`dms batch`: submit workflows to the Batch Processing service, watch, cancel and retry them, manage the
workers' quotas, and run the runner that executes the tasks on Dask."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from dms.cli import _friendly_errors, _open, data_dir_option


def _conninfo(ctx: click.Context) -> str:
    url = _open(ctx).control_url().set(drivername="postgresql")
    return str(url.render_as_string(hide_password=False))


def _connect(ctx: click.Context) -> Any:
    import psycopg

    return psycopg.connect(_conninfo(ctx), autocommit=True)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group()
def batch() -> None:
    """The Batch Processing service: DAGs of registered tasks, tracked in PostgreSQL, run on Dask."""


@batch.command("submit")
@click.argument("workflow_file", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_submit(ctx: click.Context, workflow_file: Path) -> None:
    """Submit the workflow in WORKFLOW_FILE (YAML or JSON: name, priority, tasks with task, config,
    data_id, inputs, args, outputs, after). Prints the job id; per-task problems show in `status`."""
    from dms.services.batch import store, workflow

    flow = workflow.load(workflow_file)
    with _connect(ctx) as conn:
        job_id = store.submit(conn, flow)
        status = store.job_status(conn, job_id, tasks=0)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(status["tasks"].items()))
    click.echo(f"Submitted job {job_id} ({flow.name}): {counts}")


@batch.command("status")
@click.argument("job_id", type=int, required=False)
@click.option(
    "--tasks",
    "max_tasks",
    type=click.IntRange(0, 100_000),
    default=50,
    show_default=True,
    help="Tasks listed (failures first).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_status(ctx: click.Context, job_id: int | None, max_tasks: int, as_json: bool) -> None:
    """Show the latest jobs, or JOB_ID's state, task counts and tasks (errors and log excerpts)."""
    from dms.services.batch import store

    with _connect(ctx) as conn:
        if job_id is None:
            rows = store.jobs(conn)
            if as_json:
                _echo_json(rows)
                return
            if not rows:
                click.echo("No batch jobs.")
            for row in rows:
                counts = ", ".join(f"{n} {s}" for s, n in sorted((row["tasks"] or {}).items()))
                click.echo(
                    f"{row['job_id']:>6} {row['state']:10} {row['priority_class']:7} {row['name']}: {counts}"
                )
            return
        status = store.job_status(conn, job_id, tasks=max_tasks)
    if as_json:
        _echo_json(status)
        return
    counts = ", ".join(f"{n} {s}" for s, n in sorted((status["tasks"] or {}).items()))
    click.echo(
        f"job {status['job_id']} {status['name']} ({status['priority_class']}): {status['state']}; {counts}"
    )
    for t in status["task_list"]:
        tried = f"attempts {t['attempts']}/{t['max_attempts']}"
        line = f"  {t['label']:24} {t['task_name']:20} {t['state']:15} {tried}"
        click.echo(line + (f"  config {t['config_hash']}" if t["config_hash"] else ""))
        if t["error"]:
            click.echo(f"      error: {t['error']}")


@batch.command("cancel")
@click.argument("job_id", type=int)
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_cancel(ctx: click.Context, job_id: int) -> None:
    """Cancel JOB_ID: its unfinished tasks stop; finished tasks and their outputs are kept."""
    from dms.services.batch import store

    with _connect(ctx) as conn:
        count = store.cancel(conn, job_id)
    click.echo(f"Cancelled job {job_id}: {count} tasks stopped")


@batch.command("retry")
@click.argument("job_id", type=int)
@click.argument("labels", nargs=-1)
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_retry(ctx: click.Context, job_id: int, labels: tuple[str, ...]) -> None:
    """Queue JOB_ID's failed or cancelled tasks again (or only LABELS), with fresh attempts."""
    from dms.services.batch import store

    with _connect(ctx) as conn:
        count = store.retry(conn, job_id, labels)
    click.echo(f"Retrying {count} tasks of job {job_id}")


@batch.command("workers")
@click.option("--class", "priority_class", help="Set the quota of this priority class.")
@click.option("--reserved", type=click.IntRange(0), help="Workers reserved for the class.")
@click.option("--max", "maximum", type=click.IntRange(0), help="Most workers the class may use.")
@click.option("--no-max", is_flag=True, help="Remove the class's maximum.")
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_workers(
    ctx: click.Context, priority_class: str | None, reserved: int | None, maximum: int | None, no_max: bool
) -> None:
    """Show the quotas per priority class and the runners with running tasks; with --class, set a quota."""
    from dms.errors import ConfigError
    from dms.services.batch import store
    from dms.services.batch.classes import PRIORITY_CLASSES, Quota

    with _connect(ctx) as conn:
        quotas = store.quotas(conn)
        if priority_class is not None:
            old = quotas.get(priority_class, Quota())
            new = Quota(
                reserved if reserved is not None else old.reserved,
                None if no_max else (maximum if maximum is not None else old.maximum),
            )
            store.set_quota(conn, priority_class, new)
            quotas = store.quotas(conn)
        elif reserved is not None or maximum is not None or no_max:
            raise ConfigError(
                "--reserved, --max and --no-max need --class (one of " + ", ".join(PRIORITY_CLASSES) + ")"
            )
        running = store.running_by_runner(conn)
    click.echo("class    reserved  max")
    for cls in PRIORITY_CLASSES:
        quota = quotas.get(cls, Quota())
        click.echo(f"{cls:8} {quota.reserved:>8}  {'-' if quota.maximum is None else quota.maximum}")
    if not running:
        click.echo("No runner has running tasks.")
    for row in running:
        click.echo(
            f"runner {row['runner']}: {row['running']} {row['priority_class']} running "
            f"(lease until {row['lease_expires_at']})"
        )


@batch.command("run")
@click.option(
    "--scheduler", envvar="DMS_DASK_SCHEDULER", help="Dask scheduler address (default: a LocalCluster)."
)
@click.option(
    "--workers",
    "n_workers",
    type=click.IntRange(1, 1024),
    default=os.cpu_count() or 1,
    show_default="the cores",
    help="LocalCluster worker processes.",
)
@click.option(
    "--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="Threads per worker."
)
@click.option("--name", help="Runner name (default host:pid); restarting with the same name resumes at once.")
@click.option("--job", "job_ids", type=int, multiple=True, help="Stop when these jobs are finished.")
@click.option("--forever", is_flag=True, help="Keep waiting for new tasks instead of stopping when idle.")
@click.option("--lease", type=click.FloatRange(1), default=60.0, show_default=True, help="Lease seconds.")
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_run(
    ctx: click.Context,
    scheduler: str | None,
    n_workers: int,
    threads: int,
    name: str | None,
    job_ids: tuple[int, ...],
    forever: bool,
    lease: float,
) -> None:
    """Run queued tasks on Dask until there are none left (or forever)."""
    from dms.services.batch.runner import BatchRunner, RunnerSettings, default_runner_name, open_cluster

    conninfo = _conninfo(ctx)
    client = open_cluster(scheduler, workers=n_workers, threads=threads)
    try:
        settings = RunnerSettings(name=name or default_runner_name(), lease_seconds=lease)
        counts = BatchRunner(conninfo, client, settings).run(until_idle=not forever, job_ids=job_ids or None)
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None and scheduler is None:
            cluster.close()
    click.echo(
        "Runner stopped: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if n) or "nothing ran"
    )


@batch.command("serve-ocs")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True, help="Port.")
@data_dir_option
@click.pass_context
@_friendly_errors
def batch_serve_ocs(ctx: click.Context, host: str, port: int) -> None:
    """Serve OCS-driven batch commands over HTTP (POST /ocs/commands; tokens with scope ocs). Run
    `dms batch run --forever` beside it to execute the productions."""
    import uvicorn

    from dms.services.batch.ocs import make_app

    deployment = _open(ctx)
    click.echo(f"OCS batch commands on http://{host}:{port}/ocs/commands")
    app = make_app(_conninfo(ctx), deployment.engine, data_dir=str(deployment.data_dir))
    uvicorn.run(app, host=host, port=port, log_level="warning")
