"""The DRP's registered tasks (imported by batch workers and `dms task list`)."""

from dms.services.drp.calibrate import CalibrateVisitTask, CharacterizeTask, ReferenceTask
from dms.services.drp.coadd import CoaddTask, DetectCoaddTask, ForcedPhotometryTask
from dms.services.drp.release import LoadReleaseTask

__all__ = [
    "CalibrateVisitTask",
    "CharacterizeTask",
    "CoaddTask",
    "DetectCoaddTask",
    "ForcedPhotometryTask",
    "LoadReleaseTask",
    "ReferenceTask",
]
