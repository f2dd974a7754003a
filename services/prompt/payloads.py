"""What the prompt service runs on each detector, and where: the payload interface and the worker pools.

A payload is an object with three methods: `prefetch` (in the service, on the next-visit event: templates,
calibrations), `fetch_raw` (in the service, on visit-ready: the detector's raw from the Data Backbone) and
`process` (in a worker process: the Alert Production tasks, returning the DetectorResult with the science,
template and difference exposures). `run_detector` wraps `process` for the worker: it makes the alert cutouts
and the difference image's FITS bytes there (so only small things and one image travel back) and turns a
failure into a recorded error, telling a problem with the detector's inputs (a DMSError: no template, a
corrupt raw, a missing calibration; the visit goes on without the detector) from a failure of the machinery
(anything else, a worker that died: the visit failed and offline processing redoes it).

Pools are data, chosen by name: `local` (a process pool on this machine, the default) or `dask` (a Dask
distributed scheduler address, or a LocalCluster).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from dms.errors import ConfigError, DMSError
from dms.services.alerts.cutouts import StampWriter
from dms.services.alerts.packets import AlertPacketError, Cutouts
from dms.services.archiver.ingest import RAW, raw_run
from dms.services.backbone.errors import BackboneError
from dms.services.prompt.errors import DetectorInputError
from dms.services.prompt.exposure import DetectorResult, Exposure
from dms.services.prompt.visits import NextVisit
from dms.tasks import TaskError

log = logging.getLogger(__name__)


def archived_raw(backbone: Any, visit: NextVisit, detector: int) -> bytes:
    """The raw of one detector of the visit's exposure, as the archiver stored it in the Data Backbone (the
    `fetch_raw` of every payload); a DetectorInputError when it was never archived or cannot be read."""
    data_id = {"instrument": visit.instrument, "exposure": visit.visit, "detector": detector}
    try:
        ref = backbone.find(RAW, data_id, [raw_run(visit.instrument)])
        if ref is None:
            raise DetectorInputError(
                f"detector {detector}: no raw of {visit.instrument} exposure {visit.visit} was archived"
            )
        data: bytes = backbone.read_bytes(ref)
    except BackboneError as exc:
        raise DetectorInputError(f"detector {detector}: raw: {exc}") from None
    return data


@dataclass
class DetectorWork:
    """Everything a worker needs for one detector of one visit (no database connection)."""

    visit: NextVisit
    detector: int
    raw: Any
    prefetched: Any
    known_objects: pd.DataFrame | None  # diaObjectId, ra, dec of the field's current DiaObjects
    cutout_size: int = 30


@dataclass
class ProcessedDetector:
    """What `Payload.process` gives back: the result and the exposures the cutouts are made from."""

    result: DetectorResult
    science: Exposure | None
    template: Exposure | None


@dataclass
class DetectorOutput:
    """What travels back from the worker for one detector."""

    detector: int
    result: DetectorResult | None  # with `difference` emptied (its pixels are in difference_fits)
    difference_fits: bytes | None
    cutouts: list[Cutouts] = field(default_factory=list)  # in the order of result.dia_sources
    error: str | None = None
    input_error: bool = False  # True: the detector's inputs are bad (recorded, the visit goes on)
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Payload(Protocol):
    """The Alert Production (or calibration QC) payload as the service drives it."""

    name: str

    def prefetch(self, backbone: Any, visit: NextVisit, detector: int) -> Any:
        """What the detector needs before readout (template, calibrations); DMSError when missing."""

    def fetch_raw(self, backbone: Any, visit: NextVisit, detector: int) -> Any:
        """The detector's raw data after readout; DMSError when missing."""

    def process(self, work: DetectorWork) -> ProcessedDetector:
        """Run the payload on one detector (in a worker process)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_input_error(exc: BaseException) -> bool:
    """A problem with the detector's data (DMSError, also when a task wrapped it), not with the machinery."""
    if isinstance(exc, TaskError):
        cause = exc.__cause__
        return cause is None or isinstance(cause, DMSError)
    return isinstance(exc, DMSError)


def run_detector(payload: Payload, work: DetectorWork) -> DetectorOutput:
    """The worker's entry point: the payload on one detector, then cutouts and the difference image."""
    start = time.perf_counter()
    output = DetectorOutput(work.detector, None, None, worker=worker_name())
    try:
        processed = payload.process(work)
        result = processed.result
        output.timings.update(result.timings)
        t0 = time.perf_counter()
        output.cutouts = _cutouts(result, processed, work.cutout_size)
        t1 = time.perf_counter()
        if result.difference is not None:
            output.difference_fits = exposure_fits(result.difference)
        output.timings["cutouts"] = t1 - t0
        output.timings["difference_fits"] = time.perf_counter() - t1
        result.difference = None
        output.result = result
    except Exception as exc:  # recorded for the detector; the service decides what it means for the visit
        output.error = str(exc) if isinstance(exc, DMSError) else f"{type(exc).__name__}: {exc}"
        output.input_error = is_input_error(exc)
        log.warning("visit %s detector %s: %s", work.visit.visit, work.detector, output.error)
    output.seconds = time.perf_counter() - start
    return output


def _cutouts(result: DetectorResult, processed: ProcessedDetector, size: int) -> list[Cutouts]:
    sources = result.dia_sources
    if sources is None or len(sources) == 0:
        return []
    xs = sources["x"].to_numpy(float) if "x" in sources else np.full(len(sources), np.nan)
    ys = sources["y"].to_numpy(float) if "y" in sources else np.full(len(sources), np.nan)
    images: dict[str, Exposure | None] = {
        "science": processed.science,
        "template": processed.template,
        "difference": result.difference,
    }
    writers = {
        kind: StampWriter(exposure.image, exposure.wcs, size)
        for kind, exposure in images.items()
        if exposure is not None
    }
    out = []
    for x, y in zip(xs, ys, strict=True):
        stamps: dict[str, bytes | None] = dict.fromkeys(images)
        if np.isfinite(x) and np.isfinite(y):
            for kind, writer in writers.items():
                # a source may lie off this image (e.g. outside the template's overlap): no stamp
                with contextlib.suppress(AlertPacketError):
                    stamps[kind] = writer.stamp(x, y)
        out.append(Cutouts(**stamps))
    return out


def exposure_fits(exposure: Exposure) -> bytes:
    """An Exposure as the payload's FITS layout (IMAGE, VARIANCE, MASK with the WCS and identity)."""
    from dms.services.prompt.payload.fitsio import exposure_to_hdus

    buffer = io.BytesIO()
    exposure_to_hdus(exposure, "difference").writeto(buffer)
    return buffer.getvalue()


# -- pools ---------------------------------------------------------------------------------------------


class WorkerPool(Protocol):
    """Runs `run_detector` calls in parallel and yields the outputs as they finish."""

    def run(self, payload: Payload, works: Sequence[DetectorWork]) -> Iterator[DetectorOutput]: ...

    def close(self) -> None: ...


#: Modules a worker imports when it starts (the payload's, and what the cutouts need).
WARM_MODULES = ("dms.services.prompt.ap_payload", "dms.services.alerts.cutouts", "astropy.nddata")


def _import_modules(modules: tuple[str, ...]) -> int:
    import importlib

    for module in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    time.sleep(0.2)  # hold this worker so the pool starts the others too
    return os.getpid()


class LocalPool:
    """A pool of worker processes on this machine (spawned, so a threaded server can use it safely). A worker
    that dies fails the detectors still running and the pool is started afresh for the next visit."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or (os.cpu_count() or 1))
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._executor

    def warm(self, modules: Sequence[str] = WARM_MODULES) -> None:
        """Start every worker and import the payload's modules there, so the first visit does not wait for
        process start-up and imports (seconds each)."""
        pool = self._pool()
        for future in [pool.submit(_import_modules, tuple(modules)) for _ in range(self.workers)]:
            future.result()

    def run(self, payload: Payload, works: Sequence[DetectorWork]) -> Iterator[DetectorOutput]:
        pool = self._pool()
        futures: dict[Future[DetectorOutput], int] = {
            pool.submit(run_detector, payload, work): work.detector for work in works
        }
        from concurrent.futures import as_completed

        broken = False
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool:
                broken = True
                yield _died(futures[future], "the worker process died (killed or crashed)")
            except Exception as exc:  # e.g. an input that cannot be sent to a worker
                yield _died(futures[future], f"{type(exc).__name__}: {exc}")
        if broken:
            self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class DaskPool:
    """Detectors on a Dask distributed cluster: a scheduler address, or a LocalCluster of `workers`."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        from dask.distributed import Client, LocalCluster

        self._cluster = None
        if address is None:
            self._cluster = LocalCluster(
                n_workers=max(1, workers or (os.cpu_count() or 1)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            address = self._cluster.scheduler_address
        self.client = Client(address)

    def run(self, payload: Payload, works: Sequence[DetectorWork]) -> Iterator[DetectorOutput]:
        from dask.distributed import as_completed

        futures = {
            self.client.submit(run_detector, payload, work, pure=False): work.detector for work in works
        }
        for future in as_completed(list(futures)):
            try:
                yield future.result()
            except Exception as exc:  # a worker lost (KilledWorker) or a result that cannot be read
                yield _died(futures[future], f"Dask: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _died(detector: int, why: str) -> DetectorOutput:
    return DetectorOutput(detector, None, None, error=why, input_error=False)


POOLS: dict[str, Callable[..., WorkerPool]] = {"local": LocalPool, "dask": DaskPool}


def make_pool(kind: str, *, workers: int | None = None, address: str | None = None) -> WorkerPool:
    """A pool by name: `local` or `dask` (with `address`, a scheduler; without, a LocalCluster)."""
    if kind not in POOLS:
        raise ConfigError(f"unknown worker pool {kind!r}; known pools: {', '.join(sorted(POOLS))}")
    if kind == "dask":
        return DaskPool(address, workers)
    return LocalPool(workers)
