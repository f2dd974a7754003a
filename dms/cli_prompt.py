"""`dms prompt` (the Prompt Processing service) and `dms offline` (redo of missed visits) (issue 13)."""

from __future__ import annotations

import json
from typing import Any

import click

from dms.cli import _friendly_errors, _open, data_dir_option


def _service_options(func: Any) -> Any:
    func = click.option(
        "--pool",
        type=click.Choice(["local", "dask"]),
        default="local",
        show_default=True,
        help="Where detectors run: a local process pool, or Dask (--dask-address, else a LocalCluster).",
    )(func)
    func = click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes.")(
        func
    )
    func = click.option("--dask-address", default=None, help="Dask scheduler address (tcp://host:8786).")(
        func
    )
    func = click.option(
        "--calib-collection",
        "calib_collections",
        multiple=True,
        help="RUN collection(s) of master bias/flat (default: every RUN, oldest first).",
    )(func)
    return click.option(
        "--template-collection",
        "template_collections",
        multiple=True,
        help="RUN collection(s) of templates (default: every RUN, oldest first).",
    )(func)


def _config(pool: str, workers: int | None, dask_address: str | None, **extra: Any) -> Any:
    from dms.services.prompt.service import PromptConfig

    return PromptConfig(pool=pool, workers=workers, dask_address=dask_address, **extra)


def _payload(calib_collections: tuple[str, ...], template_collections: tuple[str, ...]) -> Any:
    from dms.services.prompt.ap_payload import AlertProductionPayload

    return AlertProductionPayload(list(calib_collections) or None, list(template_collections) or None)


@click.group()
def prompt() -> None:
    """The Prompt Processing service: next-visit / visit-ready events -> DiaSources, alerts, QC."""


@prompt.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8200, show_default=True, type=int, help="TCP port to listen on.")
@click.option(
    "--window",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds a visit may take.",
)
@_service_options
@data_dir_option
@click.pass_context
@_friendly_errors
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    window: float,
    pool: str,
    workers: int | None,
    dask_address: str | None,
    calib_collections: tuple[str, ...],
    template_collections: tuple[str, ...],
) -> None:
    """Serve POST /next-visit, POST /visit-ready and GET /visits/ID until interrupted."""
    import uvicorn

    from dms.services.prompt.app import make_app
    from dms.services.prompt.service import PromptService

    service = PromptService(
        _open(ctx),
        _payload(calib_collections, template_collections),
        _config(pool, workers, dask_address, window_seconds=window),
    )
    click.echo(f"prompt processing on http://{host}:{port}  (POST /next-visit, /visit-ready; GET /visits/ID)")
    try:
        uvicorn.run(make_app(service), host=host, port=port, log_level="warning")
    finally:
        service.close()


@prompt.command("status")
@click.argument("visit", type=int)
@data_dir_option
@click.pass_context
@_friendly_errors
def status(ctx: click.Context, visit: int) -> None:
    """A visit's state, error, timings per step and detector runs, as JSON."""
    from dms.services.prompt.visits import VisitStore

    click.echo(json.dumps(VisitStore(_open(ctx)).get(visit).as_json(), indent=2))


@click.group()
def offline() -> None:
    """Offline processing: redo visits prompt processing missed (failed, cancelled, late)."""


@offline.command("run")
@click.option(
    "--window",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="A visit unfinished this many seconds after readout is late.",
)
@click.option(
    "--within",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Redo visits of the last N hours.",
)
@click.option("--daily", is_flag=True, help="Daily pass: any age, and archived exposures never announced.")
@_service_options
@data_dir_option
@click.pass_context
@_friendly_errors
def offline_run(
    ctx: click.Context,
    window: float,
    within: float,
    daily: bool,
    pool: str,
    workers: int | None,
    dask_address: str | None,
    calib_collections: tuple[str, ...],
    template_collections: tuple[str, ...],
) -> None:
    """Find failed, cancelled and late visits and redo them without duplicate DiaSources or alerts."""
    from dms.services.prompt.calibration import CalibrationPayload
    from dms.services.prompt.offline import run_offline
    from dms.services.prompt.payloads import make_pool
    from dms.services.prompt.pipeline import VisitProcessor

    deployment = _open(ctx)
    worker_pool = make_pool(pool, workers=workers, address=dask_address)
    processor = VisitProcessor(
        deployment,
        {"science": _payload(calib_collections, template_collections), "calibration": CalibrationPayload()},
        worker_pool,
    )
    try:
        report = run_offline(
            deployment, processor, window_seconds=window, within_hours=within, daily=daily, echo=click.echo
        )
    finally:
        processor.close()
        worker_pool.close()
    done = sum(1 for o in report.outcomes if o.state == "done")
    click.echo(
        f"offline: {len(report.marked_late)} marked late, {len(report.announced)} found unannounced, "
        f"{done}/{len(report.outcomes)} redone, {len(report.skipped)} taken by another process"
    )
