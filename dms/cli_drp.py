"""`dms drp`: the Data Release Production over a region of the sky (run, resume, hot-fix, status) and the
small simulated survey it can be tried on."""

from __future__ import annotations

import json
from typing import Any

import click

from dms.cli import _friendly_errors, _open, data_dir_option


def _region(value: str) -> tuple[float, float, float]:
    try:
        ra, dec, radius = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not RA,DEC,RADIUS_DEG (three numbers)") from None
    return ra, dec, radius


def _configs(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    import yaml

    from dms.services.drp.production import STEPS

    config: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        step, dot, field = key.partition(".")
        if not sep or not dot or not field:
            raise click.BadParameter(f"{item!r} is not STEP.FIELD=VALUE (steps: {', '.join(STEPS)})")
        config.setdefault(step, {})[field] = yaml.safe_load(raw)
    return config


drp: click.Group = click.Group(
    "drp", help="The Data Release Production: raws and calibrations in, a dp1-shaped release in the catalog."
)


@drp.command("run")
@click.option("--region", required=True, help="RA,DEC,RADIUS_DEG of the region to process.")
@click.option(
    "--release", default="dp1", show_default=True, help="Release name (its tables: RELEASE.Object, ...)."
)
@click.option("--bands", default="", help="Comma-separated bands (default: every band in the region).")
@click.option("--mini/--full", default=False, help="Only the mini-DRP, or the mini-DRP then the full region.")
@click.option(
    "--mini-radius",
    type=click.FloatRange(min=0.001),
    default=0.05,
    show_default=True,
    help="Radius of the mini-DRP that gates the full run (deg).",
)
@click.option(
    "--patch", "patches", type=int, multiple=True, help="Hot-fix: re-run only this patch (repeatable)."
)
@click.option(
    "--config", "configs", multiple=True, help="STEP.FIELD=VALUE configuration override (repeatable)."
)
@click.option(
    "--patch-order",
    type=click.IntRange(6, 13),
    default=11,
    show_default=True,
    help="HEALPix order of patches.",
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=2, show_default=True, help="Dask worker threads."
)
@click.option("--scheduler", default=None, help="Dask scheduler address (default: a local cluster).")
@click.option(
    "--qc/--no-qc",
    default=True,
    show_default=True,
    help="Compute the release's Level 2 QC metrics (as `dms qc release`) once it is loaded.",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def drp_run(
    ctx: click.Context,
    region: str,
    release: str,
    bands: str,
    mini: bool,
    mini_radius: float,
    patches: tuple[int, ...],
    configs: tuple[str, ...],
    patch_order: int,
    workers: int,
    scheduler: str | None,
    qc: bool,
) -> None:
    """Run the DRP over a region (resuming the release's unfinished job if there is one). Without --mini the
    mini-DRP over --mini-radius runs first, and the full region only if it loaded Objects."""
    from dms.services.drp.production import DrpParameters, gate, mini_parameters, run_release
    from dms.services.drp.release import check_release_name

    ra, dec, radius = _region(region)
    check_release_name(release)
    deployment = _open(ctx)
    try:
        params = DrpParameters(
            release=release,
            data_dir=str(deployment.data_dir),
            ra=ra,
            dec=dec,
            radius=radius,
            bands=[b for b in bands.split(",") if b],
            patch_order=patch_order,
            config=_configs(configs),
            patches=list(patches),
        )
    except ValueError as exc:
        raise click.ClickException(f"invalid DRP parameters: {str(exc).splitlines()[-1]}") from None
    client = None
    if scheduler:
        from dms.services.batch.runner import open_cluster

        client = open_cluster(scheduler)
    runs = []
    if not patches:
        first = run_release(
            deployment, mini_parameters(params, mini_radius), client=client, workers=workers, progress=True
        )
        runs.append(first)
        _report(first)
        if not mini:
            gate(first)
    if patches or not mini:
        runs.append(run_release(deployment, params, client=client, workers=workers, progress=True))
        _report(runs[-1])
    if qc and any(r.rows for r in runs):
        _level2(deployment, release)
    if any(r.errors for r in runs):
        click.echo("Some tasks failed (the rest of the release went on): see `dms drp status`", err=True)


def _level2(deployment: Any, release: str) -> None:
    """The release's Level 2 QC: its metrics and the alarms they raised (a metric that cannot be computed
    is reported; the release stays loaded)."""
    from dms.errors import DMSError
    from dms.services.drp.release import level2_tables, release_info
    from dms.services.prompt.qc import connect
    from dms.services.qc import level2

    info = release_info(deployment, release)
    try:
        results = level2.level2_metrics(
            deployment, release, tables=level2_tables(release), truth=info["truth"]
        )
    except DMSError as exc:
        click.echo(f"Level 2 QC of {release} not computed: {exc}", err=True)
        return
    with connect(deployment) as conn:
        alarms = level2.alarms_of(conn, release)
    click.echo(f"Level 2 QC: {len(results)} measurement(s), {len(alarms)} open alarm(s) (`dms qc release`)")
    for r in results:
        click.echo(f"  {r.metric:28} {r.value:12.4g} {r.unit:7} {r.production}")
    for a in alarms:
        click.echo(f"  alarm [{a['severity']}] {a['message']}")


def _report(run: Any) -> None:
    verb = "resumed" if run.resumed else "ran"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(run.tasks.items()))
    click.echo(
        f"release {run.release}: {verb} job {run.job_id} in {run.seconds:.1f} s: {run.state} ({counts})"
    )
    if run.rows:
        click.echo("  loaded " + ", ".join(f"{run.release}.{t}: {n:,}" for t, n in run.rows.items()))
    for error in run.errors[:10]:
        click.echo(f"  failed {error}")


@drp.command("status")
@click.option("--release", default=None, help="One release (default: all DRP releases).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
@click.pass_context
@_friendly_errors
def drp_status(ctx: click.Context, release: str | None, as_json: bool) -> None:
    """The DRP releases: their jobs, task counts, failures and the rows each table holds."""
    from dms.services.drp.status import releases

    rows = releases(_open(ctx), release)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("No DRP releases." if release is None else f"No DRP jobs for release {release!r}.")
    for row in rows:
        click.echo(f"release {row['release']}:")
        for job in row["jobs"]:
            counts = ", ".join(f"{n} {s}" for s, n in sorted((job["tasks"] or {}).items()))
            click.echo(f"  job {job['job_id']} {job['state']}: {counts}")
            for error in job["errors"][:5]:
                click.echo(f"    failed {error}")
        for table, count in row["rows"].items():
            click.echo(f"  {table:28} {count:>10,} rows" if count is not None else f"  {table:28} not loaded")


@drp.command("simulate")
@click.option(
    "--visits", type=click.IntRange(1, 100), default=6, show_default=True, help="Visits of the field."
)
@click.option(
    "--detectors", type=click.IntRange(1, 189), default=9, show_default=True, help="Detectors per visit."
)
@click.option(
    "--size", type=click.IntRange(64, 4000), default=512, show_default=True, help="Pixels per side simulated."
)
@click.option("--bands", default="gr", show_default=True, help="Bands, cycled over the visits.")
@click.option("--seed", type=int, default=3, show_default=True, help="Random seed (one field per seed).")
@data_dir_option
@click.pass_context
@_friendly_errors
def drp_simulate(ctx: click.Context, visits: int, detectors: int, size: int, bands: str, seed: int) -> None:
    """Simulate a small survey into the Data Backbone (raws, master bias and flats, truth) and load the
    Gaia reference catalog; prints the region to give `dms drp run`."""
    from dms.services.drp.survey import SurveySpec, simulate_survey

    try:
        night = simulate_survey(
            _open(ctx), SurveySpec(visits, detectors, (size, size), bands, seed), progress=True
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    ra, dec = night.field_center
    click.echo(f"Simulated {visits} visits x {detectors} detectors in {bands}; truth: {night.truth_path}")
    click.echo(f"Run: dms drp run --region {ra:.5f},{dec:.5f},1.0")
