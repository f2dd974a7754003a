"""The `dms demo` step of the Data Backbone: archive real sample FITS images, replicate them, show them.

The images are the real observations astropy ships as test data (HST WFPC2, ACS and STIS, Chandra ACIS,
a DSS plate, a small-telescope frame with a SIP WCS): real headers, several conventions. Running the demo
again finds them archived already.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from dms.deployment import Deployment
from dms.services.archiver.ingest import archive_files
from dms.services.backbone import Backbone
from dms.services.backbone.replication import Policy, add_policy, replicate


def sample_images() -> list[Path]:
    """Real FITS observations installed with astropy (its test data)."""
    import astropy

    root = Path(astropy.__file__).parent
    names = (
        "io/fits/tests/data/test0.fits",
        "wcs/tests/data/j94f05bgq_flt.fits",
        "io/fits/tests/data/o4sp040b0_raw.fits",
        "nddata/tests/data/sip-wcs.fits",
        "io/fits/tests/data/chandra_time.fits",
        "wcs/tests/data/dss.14.29.56-62.41.05.fits.gz",
    )
    return [root / name for name in names if (root / name).exists()]


def archive_samples(deployment: Deployment, echo: Callable[[str], None] = print) -> None:
    """Archive the sample images (idempotent), copy them to the Archive site, and show the ObsCore rows."""
    backbone = Backbone(deployment)
    results = archive_files(backbone, sample_images())
    archived = sum(r.status == "archived" for r in results)
    unchanged = sum(r.status == "unchanged" for r in results)
    echo(f"Data Backbone: {archived} sample images archived, {unchanged} already archived")
    for result in results:
        if result.status == "failed":
            echo(f"  {result.message}")
    with backbone.begin() as conn:
        known = conn.execute(
            sa.text("SELECT 1 FROM dms.replication_policy WHERE name = 'raw-to-archive'")
        ).first()
        if known is None:
            add_policy(conn, Policy("raw-to-archive", "archive", dataset_type="raw", priority=1))
    report = replicate(backbone)
    echo(f"  replicated {report.copied} files to the archive site (`dms backbone status`)")
    with backbone.begin() as conn:
        rows = conn.execute(
            sa.text(
                'SELECT obs_id, instrument_name, s_ra, s_dec, t_min FROM ivoa."ObsCore" '
                "WHERE dataproduct_type = 'image' ORDER BY t_min"
            )
        ).all()
    for row in rows:
        position = f"({row.s_ra:.4f}, {row.s_dec:.4f})" if row.s_ra is not None else "(no position)"
        echo(f"  ObsCore: {row.obs_id:<24} {row.instrument_name:<20} {position:<22} MJD {row.t_min:.5f}")
    echo("  Try: dms backbone list --type raw | dms backbone verify | dms archive FILE.fits")
