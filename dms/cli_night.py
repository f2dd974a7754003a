"""`dms night ...`: simulated nights for prompt processing (raws, calibrations, templates, truth)."""

from __future__ import annotations

import click

from dms.cli import _data_dir, _friendly_errors, data_dir_option


@click.group()
def night() -> None:
    """Simulated observing nights: realistic raws with known truth, for prompt processing."""


@night.command("simulate")
@click.option("--visits", type=click.IntRange(1, 1000), default=5, show_default=True, help="Science visits.")
@click.option(
    "--detectors", type=click.IntRange(1, 189), default=2, show_default=True, help="Detectors per visit."
)
@click.option(
    "--size",
    type=click.IntRange(32, 4000),
    default=2048,
    show_default=True,
    help="Detector size in pixels (square; the central SIZE x SIZE pixels of each LSSTCam detector).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (one observing day each).")
@click.option(
    "--template-visits",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Good-seeing earlier visits coadded into each template.",
)
@click.option("--bands", default="r", show_default=True, help="Bands of the visits, in turn (e.g. gri).")
@click.option(
    "--process/--no-process",
    default=False,
    show_default=True,
    help="Also run the night through the Prompt Processing service (events over HTTP, APDB, alerts).",
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=None, help="Prompt worker processes (--process)."
)
@data_dir_option
@click.pass_context
@_friendly_errors
def night_simulate(
    ctx: click.Context,
    visits: int,
    detectors: int,
    size: int,
    seed: int,
    template_visits: int,
    bands: str,
    process: bool,
    workers: int | None,
) -> None:
    """Simulate a night of one field: raws archived into the Data Backbone (LSSTCamSim), master bias and
    flat per detector, a template per detector and band, and the truth of every injected source."""
    from dms.deployment import Deployment
    from dms.errors import DMSError
    from dms.services.prompt.simulate import simulate_night

    deployment = Deployment.open(_data_dir(ctx))
    try:
        result = simulate_night(
            deployment,
            visits,
            detectors,
            size=(size, size),
            seed=seed,
            template_visits=template_visits,
            bands=bands,
            progress=True,
        )
    except ValueError as exc:
        raise DMSError(f"dms night simulate: {exc}") from None
    ra, dec = result.field_center
    click.echo(
        f"Simulated {len(result.visits)} visits x {len(result.detectors)} detectors ({size} x {size} pixels) "
        f"of the field at RA {ra:.4f}, Dec {dec:.4f}, day_obs {result.day_obs}"
    )
    for visit in result.visits:
        click.echo(
            f"  visit {visit.visit}  band {visit.band}  MJD {visit.mjd:.5f}"
            f'  seeing {visit.seeing_arcsec:.2f}"  raws: {len(visit.raws)} archived'
        )
    injected = result.truth[result.truth["visit"] != 0]
    counts = {str(k): int(v) for k, v in injected.groupby("kind")["id"].nunique().items()}
    click.echo("  sources: " + ", ".join(f"{counts[k]} {k}" for k in sorted(counts)))
    click.echo(f"  calibrations: {result.calib_run}; templates: {result.template_run}")
    click.echo(f"  truth: {result.truth_path}")
    if process:
        from dms.services.prompt.night import process_night

        process_night(deployment, result, workers=workers, echo=click.echo)
