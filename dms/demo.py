"""`dms demo`: a working deployment on the embedded default, and a tour of what it holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from dms import migrate
from dms.demo_alerts import run_alerts_demo
from dms.demo_drp import run_drp_demo
from dms.demo_efd import run_efd_demo
from dms.demo_minibroker import run_minibroker_demo
from dms.demo_prompt import run_prompt_demo
from dms.deployment import Deployment
from dms.errors import DeploymentExistsError
from dms.schema import CONTROL_NAMESPACES
from dms.services.archiver.demo import archive_samples
from dms.services.vo.server import demo_step as vo_demo_step


def run_demo(data_dir: Path | None, echo: Callable[[str], None] = print) -> Deployment:
    """Create the deployment if needed, upgrade it to head and print its contents."""
    try:
        deployment = Deployment.create(data_dir)
        echo(f"Created an {deployment.config.mode} deployment in {deployment.data_dir}")
    except DeploymentExistsError:
        deployment = Deployment.open(data_dir)
        echo(f"Reusing the deployment in {deployment.data_dir}")
    for label, before, after in migrate.upgrade(deployment):
        change = f"unchanged at {after or 'base'}" if before == after else f"{before or 'base'} -> {after}"
        echo(f"  {label}: schema {change}")
    echo(f"Control database: {deployment.describe_control()}")
    with deployment.connect() as conn:
        for namespace, tables, rows in _namespaces(conn):
            echo(f"  {namespace:<12} {tables:>3} tables, {rows:>10,} rows")
        functions = conn.execute(
            sa.text(
                "SELECT count(DISTINCT proname) FROM pg_proc "
                "WHERE proname LIKE 'scisql\\_%' OR proname LIKE 'ivo\\_%'"
            )
        ).scalar_one()
        echo(
            f"  {functions} SQL functions (scisql_*, ivo_*), e.g. SELECT ivo_healpix_index(10, 266.4, -29.0)"
        )
    for shard in deployment.shards():
        echo(f"Shard {shard.name}: {shard.kind} at {shard.location()}")
    from dms.loaders.demo_catalog import load_demo_catalog, show_examples

    echo(
        "Partitioned catalog (real Gaia DR3 and Hipparcos, synthetic DP1-shaped Object/Source/ForcedSource):"
    )
    load_demo_catalog(deployment, echo)
    show_examples(deployment, echo)
    archive_samples(deployment, echo)
    run_efd_demo(deployment, echo)
    vo_demo_step(deployment, echo)
    run_alerts_demo(deployment, echo)
    run_minibroker_demo(deployment, echo)
    run_prompt_demo(deployment, echo)
    run_drp_demo(deployment, echo)
    echo('Try: dms tables | dms query "SELECT ..." | dms status | dms --help')
    return deployment


def _namespaces(conn: sa.Connection) -> list[tuple[str, int, int]]:
    result = []
    for namespace in CONTROL_NAMESPACES:
        tables = sa.inspect(conn).get_table_names(schema=namespace)
        rows = sum(
            conn.execute(sa.text(f'SELECT count(*) FROM "{namespace}"."{t}"')).scalar_one() for t in tables
        )
        result.append((namespace, len(tables), rows))
    return result
