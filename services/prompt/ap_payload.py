"""The Alert Production payload as the prompt service drives it: ISR (`prompt.isr`) then difference imaging
and measurement (`prompt.process_detector`), both through `run_task`.

Before readout the service fetches each detector's master bias, flat and template from the Data Backbone
(their bytes: what travels to the worker); after readout, the raw the archiver stored. A calibration or
template that is missing is passed on as None, so ISR or the subtraction names what is missing in the
error recorded for the detector.
"""

from __future__ import annotations

from typing import Any

from astropy.io import fits

from dms.services.backbone.errors import BackboneError
from dms.services.prompt.errors import DetectorInputError
from dms.services.prompt.payload.fitsio import exposure_from_hdus
from dms.services.prompt.payload.isr import IsrTask
from dms.services.prompt.payload.process import ProcessDetectorTask
from dms.services.prompt.payloads import DetectorWork, ProcessedDetector, archived_raw
from dms.services.prompt.simulate.night import BIAS, FLAT, TEMPLATE
from dms.services.prompt.visits import NextVisit
from dms.tasks import run_task


class AlertProductionPayload:
    """ISR + ProcessDetectorTask per detector; calibrations and templates found in `calib_collections` and
    `template_collections` (every RUN, oldest first, when not given)."""

    name = "alert-production"

    def __init__(
        self,
        calib_collections: list[str] | None = None,
        template_collections: list[str] | None = None,
        isr_config: dict[str, Any] | None = None,
        process_config: dict[str, Any] | None = None,
    ) -> None:
        self.calib_collections = calib_collections
        self.template_collections = template_collections
        self.isr_config = dict(isr_config or {})
        self.process_config = dict(process_config or {})

    def prefetch(self, backbone: Any, visit: NextVisit, detector: int) -> dict[str, bytes | None]:
        base = {"instrument": visit.instrument, "detector": detector}
        wanted = {
            BIAS: (base, self.calib_collections),
            FLAT: ({**base, "band": visit.band}, self.calib_collections),
            TEMPLATE: ({**base, "band": visit.band}, self.template_collections),
        }
        out: dict[str, bytes | None] = {}
        for kind, (data_id, collections) in wanted.items():
            try:
                ref = backbone.find(kind, data_id, collections)
                out[kind] = None if ref is None else backbone.read_bytes(ref)
            except BackboneError as exc:
                raise DetectorInputError(f"detector {detector}: {kind}: {exc}") from None
        return out

    def fetch_raw(self, backbone: Any, visit: NextVisit, detector: int) -> bytes:
        return archived_raw(backbone, visit, detector)

    def process(self, work: DetectorWork) -> ProcessedDetector:
        data_id = {"visit": work.visit.visit, "detector": work.detector}
        inputs = work.prefetched or {}
        calibs = {kind: _hdus(inputs.get(kind)) for kind in (BIAS, FLAT)}
        isr = run_task(
            IsrTask, self.isr_config, data_id=data_id, raw=work.raw, bias=calibs[BIAS], flat=calibs[FLAT]
        )
        science = isr.result
        assert science is not None
        template_hdus = _hdus(inputs.get(TEMPLATE))
        template = None if template_hdus is None else exposure_from_hdus(template_hdus, "template")
        run = run_task(
            ProcessDetectorTask,
            self.process_config,
            data_id=data_id,
            science=science,
            template=template,
            known_objects=work.known_objects,
        )
        result = run.result
        assert result is not None
        result.timings = {**{f"isr.{k}": v for k, v in isr.timings.items()}, **result.timings}
        return ProcessedDetector(result, science, template)


def _hdus(data: bytes | None) -> fits.HDUList | None:
    return None if data is None else fits.HDUList.fromstring(data)
