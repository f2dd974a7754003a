"""The Prompt Processing service: next-visit and visit-ready events in, a processed visit out.

A next-visit event records the visit (dms.prompt_visit) and starts fetching what it needs (templates,
calibrations, the field's DiaObjects) in the background, so the work is done when the shutter closes. A
visit-ready event claims the visit (a repeated one is refused: the visit is processed once) and queues it;
a single processing thread takes visits in order and runs each one's detectors in parallel on the worker
pool (services/prompt/pipeline.py). Its outcome and timings are in the visit's row, read by GET /visits/{id}.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dms.deployment import Deployment
from dms.errors import ConfigError
from dms.services.prompt.calibration import CalibrationPayload
from dms.services.prompt.payloads import Payload, WorkerPool, make_pool
from dms.services.prompt.pipeline import PipelineConfig, Prefetched, VisitOutcome, VisitProcessor
from dms.services.prompt.visits import PROMPT_CLAIMABLE, NextVisit, VisitRecord, VisitStore

log = logging.getLogger(__name__)


class PromptConfig(BaseModel):
    """Configuration of `dms prompt serve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: str = Field(default="local", description="Where detectors run: local (process pool) or dask.")
    workers: int | None = Field(default=None, gt=0, le=256, description="Worker processes (default: cores).")
    dask_address: str | None = Field(default=None, description="Dask scheduler address (pool=dask).")
    window_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A visit not done this long after readout is late (offline redoes it).",
    )
    association_radius_arcsec: float = Field(default=1.0, gt=0, le=60, description="Association radius.")
    cutout_size: int = Field(default=30, ge=8, le=256, description="Side of the alert cutouts, pixels.")


def default_science_payload() -> Payload:
    """The Alert Production payload (services/prompt/payload: ISR, subtraction, detection, measurement)."""
    try:
        from dms.services.prompt.ap_payload import AlertProductionPayload
    except ImportError as exc:
        raise ConfigError(f"the Alert Production payload is not installed: {exc}") from None
    return AlertProductionPayload()


class PromptService:
    """Holds the processor, the prefetches under way and the queue of visits to process."""

    def __init__(
        self,
        deployment: Deployment,
        science_payload: Payload | None = None,
        config: PromptConfig | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.deployment = deployment
        self.config = config or PromptConfig()
        self.pool = pool or make_pool(
            self.config.pool, workers=self.config.workers, address=self.config.dask_address
        )
        payloads: dict[str, Payload] = {"calibration": CalibrationPayload()}
        payloads["science"] = science_payload or default_science_payload()
        self.processor = VisitProcessor(
            deployment,
            payloads,
            self.pool,
            PipelineConfig(self.config.association_radius_arcsec, self.config.cutout_size),
        )
        self.visits = VisitStore(deployment)
        warm = getattr(self.pool, "warm", None)
        if warm is not None:
            warm()
        self._prefetching: dict[int, Future[Prefetched]] = {}
        self._done: dict[int, Future[VisitOutcome]] = {}
        self._lock = threading.Lock()
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="prompt-prefetch")
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="prompt-visit")

    def next_visit(self, event: NextVisit) -> dict[str, Any]:
        created = self.visits.record_next_visit(event)
        with self._lock:
            if created or event.visit not in self._prefetching:
                self._prefetching[event.visit] = self._prefetcher.submit(self.processor.prefetch, event)
        return {"visit": event.visit, "state": "expected", "created": created}

    def visit_ready(self, visit: int) -> dict[str, Any]:
        """Claim the visit and queue it; a VisitStateError when it was claimed before."""
        self.visits.mark_ready(visit)
        event = self.visits.claim(visit, PROMPT_CLAIMABLE, "prompt")
        with self._lock:
            prefetch = self._prefetching.pop(visit, None)
            self._done[visit] = self._runner.submit(self._process, event, prefetch)
        return {"visit": visit, "state": "processing", "status": f"/visits/{visit}"}

    def _process(self, event: NextVisit, prefetch: Future[Prefetched] | None) -> VisitOutcome:
        prefetched = None
        if prefetch is not None:
            try:
                prefetched = prefetch.result()
            except Exception as exc:  # fetched again at processing time
                log.warning("visit %s: prefetch failed (%s); fetching now", event.visit, exc)
        outcome = self.processor.process(event, prefetched)
        if prefetched is not None:
            outcome.timings.setdefault("prefetch_before_readout", prefetched.seconds)
        return outcome

    def status(self, visit: int) -> VisitRecord:
        return self.visits.get(visit)

    def wait(self, visit: int, timeout: float = 300.0) -> VisitOutcome:
        """Block until a queued visit is processed (tests, `dms night simulate`)."""
        with self._lock:
            future = self._done.get(visit)
        if future is None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                record = self.visits.get(visit)
                if record.state not in ("expected", "processing"):
                    return VisitOutcome(
                        visit, record.state, record.error, record.n_dia_sources or 0, record.n_alerts or 0
                    )
                time.sleep(0.1)
            raise TimeoutError(f"visit {visit} not processed within {timeout} s")
        return future.result(timeout=timeout)

    def close(self) -> None:
        self._prefetcher.shutdown(wait=True, cancel_futures=True)
        self._runner.shutdown(wait=True)
        self.processor.close()
        self.pool.close()
