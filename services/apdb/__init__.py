"""The Alert Production Database (APDB): DiaObjects, DiaSources and DiaForcedSources of prompt processing."""

from dms.services.apdb.api import Apdb, StoreSummary
from dms.services.apdb.config import ApdbConfig
from dms.services.apdb.errors import ApdbConflictError, ApdbError, ApdbInputError
from dms.services.apdb.regions import Circle, ConvexPolygon, Region

__all__ = [
    "Apdb",
    "ApdbConfig",
    "ApdbConflictError",
    "ApdbError",
    "ApdbInputError",
    "Circle",
    "ConvexPolygon",
    "Region",
    "StoreSummary",
]
