"""The night simulator: realistic raws, calibrations, templates and truth for prompt processing."""

from dms.services.prompt.simulate.night import (
    DatasetHandle,
    SimulatedNight,
    SimulatedVisit,
    simulate_night,
)
from dms.services.prompt.simulate.scene import Densities

__all__ = ["DatasetHandle", "Densities", "SimulatedNight", "SimulatedVisit", "simulate_night"]
