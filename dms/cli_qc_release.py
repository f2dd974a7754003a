"""`dms qc release`: the Level 2 QC metrics of a data release, stored and checked against their specs."""

from __future__ import annotations

from pathlib import Path

import click

from dms.cli import _friendly_errors, _open, data_dir_option
from dms.cli_efd import qc


@qc.command("release")
@click.argument("release")
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Simulator truth table (Parquet: kind, id, ra, dec): adds completeness.",
)
@click.option("--object-table", default="dp1.Object", show_default=True, help="The release's Object table.")
@click.option("--source-table", default="dp1.Source", show_default=True, help="The release's Source table.")
@click.option(
    "--ccd-visit-table", default="dp1.CcdVisit", show_default=True, help="The release's CcdVisit table."
)
@click.option("--gaia-table", default="gaia", show_default=True, help="The Gaia reference catalog table.")
@click.option(
    "--specs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Metric specifications YAML (default: DMS's level2_specs.yaml).",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_release(
    ctx: click.Context,
    release: str,
    truth: Path | None,
    object_table: str,
    source_table: str,
    ccd_visit_table: str,
    gaia_table: str,
    specs: Path | None,
) -> None:
    """Compute the Level 2 QC metrics of RELEASE (astrometry against Gaia, photometric repeatability, PSF
    size, completeness against a truth table, objects per patch) from its tables, store them in the QC
    tables, and list the alarms the specifications raised."""
    from dms.services.prompt.qc import connect
    from dms.services.qc import level2

    deployment = _open(ctx)
    tables = level2.ReleaseTables(
        object=object_table, source=source_table, ccd_visit=ccd_visit_table, gaia=gaia_table
    )
    results = level2.level2_metrics(
        deployment, release, tables=tables, truth=truth, specs=specs or level2.SPECS_FILE
    )
    for r in results:
        click.echo(f"{r.metric:28} {r.value:12.4g} {r.unit:7} {r.production}")
    with connect(deployment) as conn:
        alarms = level2.alarms_of(conn, release)
    click.echo(f"{len(results)} measurement(s), {len(alarms)} open alarm(s)")
    for a in alarms:
        click.echo(f"  alarm {a['alarm_id']} [{a['severity']}] {a['message']}")
