"""Shared fixtures of the night simulator and payload tests: one simulated night per test session (its own
migrated database on the session's PostgreSQL, raws archived, calibrations and templates in the Backbone),
and the payload run once on every visit and detector of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from dms import migrate
from dms.deployment import Deployment
from dms.services.backbone import Backbone
from dms.services.prompt.exposure import DetectorResult, Exposure
from dms.services.prompt.payload.process import ProcessDetectorTask
from dms.services.prompt.simulate import Densities, SimulatedNight, simulate_night
from tests.pg_support import control_database, drop_database, seed_default_shard

SIZE = (512, 512)
VISITS = 4
DETECTORS = 2
INJECTED = ("transient", "variable", "mover")


@dataclass
class Night:
    deployment: Deployment
    backbone: Backbone
    night: SimulatedNight


@dataclass
class Processed:
    science: Exposure
    template: Exposure
    result: DetectorResult
    truth: pd.DataFrame  # this visit's truth on this detector, with `dflux` (visit minus template flux)


def make_deployment(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[Deployment, str]:
    name = control_database(pg_server, "night")
    deployment = Deployment.create(tmp_path_factory.mktemp("night"), database_url=pg_server.get_uri(name))  # type: ignore[attr-defined]
    seed_default_shard(deployment, pg_server)
    migrate.upgrade(deployment)
    return deployment, name


@pytest.fixture(scope="session")
def simulated(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    deployment, name = make_deployment(pg_server, tmp_path_factory)
    backbone = Backbone(deployment)
    # more transients and movers than the default sky, for completeness statistics from a few detectors
    densities = Densities(transients=15_000.0, movers=6_000.0, variables=3_000.0)
    night = simulate_night(
        deployment, VISITS, DETECTORS, size=SIZE, seed=11, template_visits=3, densities=densities
    )
    yield Night(deployment, backbone, night)
    deployment.dispose()
    drop_database(pg_server, name)


@pytest.fixture(scope="session")
def processed(simulated: Night) -> dict[tuple[int, int], Processed]:
    """The payload on every (visit, detector), with the truth positions of the injected sources as the
    known DiaObjects (forced photometry at the true positions)."""
    night, backbone = simulated.night, simulated.backbone
    results = {}
    for visit in night.visits:
        for detector in night.detectors:
            science = night.science(backbone, visit.visit, detector)
            template = night.load_template(backbone, detector, visit.band)
            truth = night.truth[(night.truth["visit"] == visit.visit) & (night.truth["detector"] == detector)]
            truth = truth.assign(dflux=truth["flux"] - truth["template_flux"]).reset_index(drop=True)
            injected = truth[truth["kind"].isin(INJECTED)]
            known = pd.DataFrame(
                {"diaObjectId": np.arange(len(injected)), "ra": injected["ra"], "dec": injected["dec"]}
            )
            result = ProcessDetectorTask().run(science, template, known)
            results[(visit.visit, detector)] = Processed(science, template, result, truth)
    return results
