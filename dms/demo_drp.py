"""`dms demo`'s Data Release Production step: a tiny simulated survey (one detector, a g and an r visit)
through the DRP on the batch service, loaded as release `drp_demo`, and a query of its Object catalog."""

from __future__ import annotations

from collections.abc import Callable

from dms.deployment import Deployment

DEMO_RELEASE = "drp_demo"
DEMO_QUERY = (
    'SELECT o."objectId", o.coord_ra, o.coord_dec, o.g_psfMag, o.r_psfMag, COUNT(*) AS n_forced '
    f'FROM {DEMO_RELEASE}.Object o JOIN {DEMO_RELEASE}.ForcedSource f ON f."objectId" = o."objectId" '
    'GROUP BY o."objectId", o.coord_ra, o.coord_dec, o.g_psfMag, o.r_psfMag ORDER BY o.r_psfMag LIMIT 5'
)


def run_drp_demo(deployment: Deployment, echo: Callable[[str], None] = print) -> None:
    """Simulate the survey, run the DRP over it (once: a second demo finds it loaded) and query it."""
    from dms.query.engine import QueryEngine
    from dms.query.output import _text
    from dms.schema.catalog import find_table
    from dms.services.drp.production import DrpParameters, run_release
    from dms.services.drp.survey import SurveySpec, simulate_survey

    night = simulate_survey(deployment, SurveySpec(visits=2, detectors=1, size=(256, 256), seed=23))
    ra, dec = night.field_center
    with deployment.connect() as conn:
        loaded = find_table(conn, f"{DEMO_RELEASE}.Object") is not None
    if loaded:
        echo(f"Data Release Production: release {DEMO_RELEASE} already loaded")
    else:
        params = DrpParameters(
            release=DEMO_RELEASE, data_dir=str(deployment.data_dir), ra=ra, dec=dec, radius=0.1
        )
        run = run_release(deployment, params, workers=2)
        rows = ", ".join(f"{table} {n:,}" for table, n in run.rows.items())
        echo(f"Data Release Production: job {run.job_id} {run.state} in {run.seconds:.0f} s; loaded {rows}")
    echo(f'\n$ dms query "{DEMO_QUERY}"')
    with QueryEngine(deployment) as engine:
        echo(_text(engine.execute(DEMO_QUERY, max_rows=5).table).rstrip())
    echo(f"Try: dms drp status --release {DEMO_RELEASE}")
