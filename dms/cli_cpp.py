"""`dms cpp`: the Calibration Products Production (daily, intermediate or annual) on the batch service."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from dms.cli import _friendly_errors, _open, data_dir_option


@click.group()
def cpp() -> None:
    """The Calibration Products Production: master bias, dark, flat and crosstalk from archived raws."""


@cpp.command("run")
@click.option(
    "--kind",
    type=click.Choice(["daily", "intermediate", "annual"]),
    required=True,
    help="daily: one night; intermediate: 30 nights; annual: 365 nights up to --day-obs.",
)
@click.option("--day-obs", type=int, required=True, help="Last observing day of the run (YYYYMMDD).")
@click.option("--instrument", default="LSSTCam", show_default=True, help="Instrument of the raws.")
@click.option("--detector", "detectors", type=int, multiple=True, help="Only these detectors (repeatable).")
@click.option("--submit-only", is_flag=True, help="Submit the job and return (`dms batch run` runs it).")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True, help="Dask workers.")
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True, help="Threads each.")
@click.option(
    "--certify/--no-certify",
    default=True,
    show_default=True,
    help="Register the masters in the calibration registry, valid from the day_obs on.",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def cpp_run(
    ctx: click.Context,
    kind: str,
    day_obs: int,
    instrument: str,
    detectors: tuple[int, ...],
    submit_only: bool,
    workers: int,
    threads: int,
    certify: bool,
) -> None:
    """Build the `cpp` production for the day range, submit it and (unless --submit-only) run it on a
    local Dask cluster; prints each task's outcome. Exits non-zero when a task failed."""
    import psycopg

    from dms.services.batch import store
    from dms.services.batch.productions import workflow_for
    from dms.services.batch.runner import BatchRunner, RunnerSettings, open_cluster
    from dms.services.cpp import registry

    deployment = _open(ctx)
    parameters: dict[str, Any] = {
        "kind": kind,
        "day_obs": day_obs,
        "instrument": instrument,
        "data_dir": str(deployment.data_dir),
    }
    if detectors:
        parameters["detectors"] = list(detectors)
    flow = workflow_for("cpp", parameters)
    url = deployment.control_url().set(drivername="postgresql")
    conninfo = str(url.render_as_string(hide_password=False))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        job_id = store.submit(conn, flow)
    click.echo(f"Submitted job {job_id} ({flow.name}): {len(flow.tasks)} task(s)")
    if submit_only:
        return
    client = open_cluster(workers=workers, threads=threads, processes=False)
    try:
        BatchRunner(conninfo, client, RunnerSettings()).run(job_ids=[job_id])
    finally:
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        status = store.job_status(conn, job_id, tasks=len(flow.tasks))
        failed = [t for t in status["task_list"] if t["state"] != "done"]
        for t in status["task_list"]:
            line = f"  {t['label']:24} {t['state']}"
            click.echo(line + (f": {t['error']}" if t.get("error") else ""))
        if certify and any(t["state"] == "done" for t in status["task_list"]):
            start = dt.datetime.strptime(str(day_obs), "%Y%m%d") + dt.timedelta(hours=12)
            ids = registry.certify(conn, job_id, start)
            click.echo(f"Certified {len(ids)} master calibration(s), valid from {start.isoformat()}")
    if failed:
        raise click.ClickException(f"job {job_id}: {len(failed)} of {len(flow.tasks)} task(s) did not finish")
