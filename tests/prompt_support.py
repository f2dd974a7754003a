"""Shared fixtures of the prompt service tests: a migrated deployment on the session's PostgreSQL, and a
small real detector payload for the tests to drive the service with.

`SepPayload` is a test payload, not the Alert Production payload (services/prompt/payload): it subtracts a
same-seeing template pixel by pixel and detects with sep on the difference, which is all the service's tests
need (real detections with a truth to check). The field is synthetic: a TAN WCS per detector (0.2"/pixel,
detectors side by side in RA), Gaussian stars, noise, and point transients injected into the science images.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import sep
from astropy.io import fits
from astropy.wcs import WCS

from dms import migrate
from dms.deployment import Deployment
from dms.services.backbone import Backbone
from dms.services.backbone.errors import BackboneError
from dms.services.prompt.errors import DetectorInputError
from dms.services.prompt.exposure import MASK_EDGE, DetectorResult, Exposure
from dms.services.prompt.payloads import DetectorWork, ProcessedDetector
from dms.services.prompt.visits import NextVisit
from tests.pg_support import control_database, drop_database, seed_default_shard

INSTRUMENT = "LSSTCamSim"
PIXEL_SCALE = 0.2 / 3600.0  # degrees per pixel
SIZE = 256
FWHM = 3.5  # pixels
NOISE = 10.0  # nJy per pixel
TEMPLATE = "prompt_test_template"
SCIENCE = "prompt_test_science"
BIAS = "prompt_test_bias"
RUN = "prompt/test"
RESET_TABLES = (
    'apdb."DiaObject"',
    'apdb."DiaObjectLast"',
    'apdb."DiaSource"',
    'apdb."DiaForcedSource"',
    "dms.alert",
    "dms.prompt_detector_run",
    "dms.prompt_visit",
    "dms.qc_alarm",
    "dms.qc_measurement",
)


@pytest.fixture(scope="module")
def prompt_deployment(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    name = control_database(pg_server, "prompt")
    dep = Deployment.create(tmp_path_factory.mktemp("promptdep"), database_url=pg_server.get_uri(name))  # type: ignore[attr-defined]
    seed_default_shard(dep, pg_server)
    migrate.upgrade(dep)
    yield dep
    dep.dispose()
    drop_database(pg_server, name)


def conninfo(deployment: Deployment) -> str:
    return deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)


def reset(deployment: Deployment) -> None:
    """Empty the APDB, the alert archive, the prompt and QC tables (the Backbone's datasets stay)."""
    with psycopg.connect(conninfo(deployment), autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(RESET_TABLES) + " CASCADE")


def count(deployment: Deployment, query: str, params: tuple[Any, ...] = ()) -> int:
    with psycopg.connect(conninfo(deployment), autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


# -- the synthetic field ---------------------------------------------------------------------------------


def detector_wcs(ra0: float, dec0: float, detector: int, size: int = SIZE) -> WCS:
    """A TAN WCS of one detector: detectors side by side along RA, 10% gaps."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra0, dec0]
    offset = (detector - 0) * size * 1.1
    wcs.wcs.crpix = [size / 2 + 0.5 - offset, size / 2 + 0.5]
    wcs.wcs.cdelt = [-PIXEL_SCALE, PIXEL_SCALE]
    return wcs


def render(
    shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, fluxes: np.ndarray, fwhm: float
) -> np.ndarray:
    """Gaussian point sources (flux in nJy) on an empty image, each drawn on a stamp of +-4 sigma."""
    sigma = fwhm / 2.3548
    image = np.zeros(shape, np.float64)
    half = int(np.ceil(4 * sigma))
    for x, y, flux in zip(xs, ys, fluxes, strict=True):
        x0, y0 = round(x), round(y)
        ylo, yhi = max(0, y0 - half), min(shape[0], y0 + half + 1)
        xlo, xhi = max(0, x0 - half), min(shape[1], x0 + half + 1)
        if ylo >= yhi or xlo >= xhi:
            continue
        yy, xx = np.mgrid[ylo:yhi, xlo:xhi]
        image[ylo:yhi, xlo:xhi] += (
            flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        )
    return image


@dataclass
class TestField:
    """A field of `detectors` detectors: its stars, and per visit the injected transients (truth)."""

    ra: float
    dec: float
    detectors: tuple[int, ...]
    stars: dict[int, pd.DataFrame]
    truth: list[pd.DataFrame]

    def event(self, visit: int, mjd: float, detectors: tuple[int, ...] | None = None) -> NextVisit:
        return NextVisit(
            visit=visit,
            instrument=INSTRUMENT,
            band="r",
            ra=self.ra,
            dec=self.dec,
            mjd_tai=mjd,
            detectors=detectors or self.detectors,
        )


def tract_of(ra: float) -> int:
    """Each test field has templates of its own (a field's "tract": its RA in units of 0.01 deg)."""
    return round(ra * 100)


def image_fits(image: np.ndarray, wcs: WCS, **cards: Any) -> bytes:
    header = wcs.to_header()
    for key, value in cards.items():
        header[key.upper()] = value
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(image, np.float32), header=header).writeto(buffer)
    return buffer.getvalue()


def make_field(
    backbone: Backbone, ra: float, dec: float, detectors: tuple[int, ...], seed: int = 0, bias: bool = True
) -> TestField:
    """Stars per detector and a noisy template of each, archived in the Data Backbone (with a bias)."""
    rng = np.random.default_rng(seed)
    stars = {}
    for detector in detectors:
        n = 60
        frame = pd.DataFrame(
            {
                "x": rng.uniform(10, SIZE - 10, n),
                "y": rng.uniform(10, SIZE - 10, n),
                "flux": rng.lognormal(np.log(3e4), 0.8, n),
            }
        )
        stars[detector] = frame
        wcs = detector_wcs(ra, dec, detector)
        template = render((SIZE, SIZE), frame.x.to_numpy(), frame.y.to_numpy(), frame.flux.to_numpy(), FWHM)
        template += rng.normal(0, NOISE / 2, template.shape)  # a coadd: less noise than one visit
        ids = {"instrument": INSTRUMENT, "detector": detector, "tract": tract_of(ra)}
        _put(backbone, TEMPLATE, ids, image_fits(template, wcs, noise=NOISE / 2))
        if bias:
            _put(backbone, BIAS, ids, image_fits(np.full((SIZE, SIZE), 100.0), wcs))
    return TestField(ra, dec, detectors, stars, [])


def observe(
    backbone: Backbone,
    field: TestField,
    visit: int,
    transients_per_detector: int = 5,
    seed: int | None = None,
    detectors: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Archive the science images of one visit (stars + transients + noise + bias 100); returns the truth."""
    rng = np.random.default_rng(visit if seed is None else seed)
    truth = []
    for detector in detectors or field.detectors:
        stars = field.stars[detector]
        wcs = detector_wcs(field.ra, field.dec, detector)
        xs = rng.uniform(20, SIZE - 20, transients_per_detector)
        ys = rng.uniform(20, SIZE - 20, transients_per_detector)
        fluxes = rng.uniform(8e3, 2e4, transients_per_detector)  # S/N ~ 40-100 in a 3.5-pixel PSF
        image = render(
            (SIZE, SIZE),
            np.concatenate([stars.x.to_numpy(), xs]),
            np.concatenate([stars.y.to_numpy(), ys]),
            np.concatenate([stars.flux.to_numpy(), fluxes]),
            FWHM,
        )
        image += rng.normal(0, NOISE, image.shape) + 100.0
        ra, dec = wcs.pixel_to_world_values(xs, ys)
        truth.append(
            pd.DataFrame({"detector": detector, "x": xs, "y": ys, "ra": ra, "dec": dec, "flux": fluxes})
        )
        _put(
            backbone,
            SCIENCE,
            {"instrument": INSTRUMENT, "visit": visit, "detector": detector},
            image_fits(image, wcs, noise=NOISE),
        )
    frame = pd.concat(truth, ignore_index=True)
    field.truth.append(frame)
    return frame


def _put(backbone: Backbone, dataset_type: str, data_id: dict[str, Any], data: bytes) -> None:
    dims = list(data_id)
    backbone.put(fits.HDUList.fromstring(data), dataset_type, data_id, run=RUN, dimensions=dims)


# -- the test payload ------------------------------------------------------------------------------------


def _read_image(data: bytes, label: str) -> tuple[np.ndarray, WCS, fits.Header]:
    try:
        hdus = fits.HDUList.fromstring(data)
        image = np.asarray(hdus[0].data, np.float64)
        header = hdus[0].header
    except Exception as exc:
        raise DetectorInputError(
            f"{label}: not a readable FITS image ({type(exc).__name__}: {exc})"
        ) from None
    if image.ndim != 2:
        raise DetectorInputError(f"{label}: not a 2-d image")
    return image, WCS(header), header


class SepPayload:
    """Difference of the science image and a same-seeing template, detection with sep above `threshold`."""

    name = "test-sep"

    def __init__(self, threshold: float = 5.0, crash_detectors: tuple[int, ...] = ()) -> None:
        self.threshold = threshold
        self.crash_detectors = crash_detectors  # detectors whose worker process dies (os._exit)

    def prefetch(self, backbone: Backbone, visit: NextVisit, detector: int) -> dict[str, bytes]:
        out = {}
        for kind in (TEMPLATE, BIAS):
            ids = {"instrument": visit.instrument, "detector": detector, "tract": tract_of(visit.ra or 0.0)}
            ref = backbone.find(kind, ids, [RUN])
            if ref is None:
                what = "template" if kind == TEMPLATE else "calibration (bias)"
                raise DetectorInputError(f"detector {detector}: no {what} in the Data Backbone")
            out[kind] = backbone.read_bytes(ref)
        return out

    def fetch_raw(self, backbone: Backbone, visit: NextVisit, detector: int) -> bytes:
        ref = backbone.find(
            SCIENCE, {"instrument": visit.instrument, "visit": visit.visit, "detector": detector}, [RUN]
        )
        if ref is None:
            raise DetectorInputError(f"detector {detector}: no raw for visit {visit.visit}")
        try:
            return backbone.read_bytes(ref)
        except BackboneError as exc:
            raise DetectorInputError(f"detector {detector}: {exc}") from None

    def process(self, work: DetectorWork) -> ProcessedDetector:
        if work.detector in self.crash_detectors:
            import os

            os._exit(9)  # the worker dies, as a killed process would
        event = work.visit
        label = f"visit {event.visit} detector {work.detector}"
        science_image, wcs, header = _read_image(work.raw, f"{label} raw")
        template_image, _, theader = _read_image(work.prefetched[TEMPLATE], f"{label} template")
        bias, _, _ = _read_image(work.prefetched[BIAS], f"{label} bias")
        science_image = science_image - bias
        noise = float(header.get("NOISE", NOISE))
        variance = np.full(science_image.shape, noise**2 + float(theader.get("NOISE", 0.0)) ** 2, np.float32)
        difference = (science_image - template_image).astype(np.float32)
        mask = np.zeros(science_image.shape, np.uint32)
        mask[:5, :] = mask[-5:, :] = mask[:, :5] = mask[:, -5:] = MASK_EDGE
        err = np.sqrt(variance)
        found = sep.extract(np.ascontiguousarray(difference), self.threshold, err=err, minarea=5)
        order = np.lexsort((found["x"], found["y"]))
        found = found[order]
        n = len(found)
        radius = 1.5 * FWHM
        flux, flux_err, _ = sep.sum_circle(
            np.ascontiguousarray(difference), found["x"], found["y"], radius, err=err
        )
        ra, dec = wcs.pixel_to_world_values(found["x"], found["y"])
        base = event.visit * 10_000_000 + work.detector * 100_000
        mjd = float(event.mjd_tai or 0.0)
        sources = pd.DataFrame(
            {
                "diaSourceId": base + np.arange(n, dtype=np.int64),
                "visit": np.full(n, event.visit, np.int64),
                "detector": np.full(n, work.detector, np.int16),
                "midpointMjdTai": np.full(n, mjd),
                "ra": np.asarray(ra) % 360.0,
                "dec": np.asarray(dec),
                "x": found["x"].astype(np.float32),
                "y": found["y"].astype(np.float32),
                "psfFlux": flux.astype(np.float32),
                "psfFluxErr": flux_err.astype(np.float32),
                "snr": (flux / flux_err).astype(np.float32),
                "band": np.full(n, event.band or "r"),
                "psfNdata": np.full(n, int(np.pi * radius**2), np.int32),
                "trailNdata": np.zeros(n, np.int32),
                "dipoleNdata": np.zeros(n, np.int32),
                "bboxSize": np.full(n, 15, np.int32),
                "timeProcessedMjdTai": np.full(n, mjd + 1e-3),
            }
        )
        forced = None
        if work.known_objects is not None and len(work.known_objects):
            known = work.known_objects.sort_values("diaObjectId")
            px, py = wcs.world_to_pixel_values(known["ra"].to_numpy(), known["dec"].to_numpy())
            inside = (px >= 0) & (px < SIZE - 1) & (py >= 0) & (py < SIZE - 1)
            known, px, py = known[inside], px[inside], py[inside]
            if len(known):
                fflux, ferr, _ = sep.sum_circle(np.ascontiguousarray(difference), px, py, radius, err=err)
                m = len(known)
                forced = pd.DataFrame(
                    {
                        "diaForcedSourceId": base + 50_000 + np.arange(m, dtype=np.int64),
                        "diaObjectId": known["diaObjectId"].to_numpy(np.int64),
                        "ra": known["ra"].to_numpy(),
                        "dec": known["dec"].to_numpy(),
                        "visit": np.full(m, event.visit, np.int64),
                        "detector": np.full(m, work.detector, np.int16),
                        "psfFlux": fflux.astype(np.float32),
                        "psfFluxErr": ferr.astype(np.float32),
                        "midpointMjdTai": np.full(m, mjd),
                        "band": np.full(m, event.band or "r"),
                        "timeProcessedMjdTai": np.full(m, mjd + 1e-3),
                    }
                )
        background = float(np.median(science_image))
        exposure = Exposure(
            difference, variance, mask, wcs, FWHM, event.band or "r", event.visit, work.detector, mjd
        )
        science = Exposure(
            science_image.astype(np.float32),
            variance,
            mask,
            wcs,
            FWHM,
            event.band or "r",
            event.visit,
            work.detector,
            mjd,
        )
        template = Exposure(
            template_image.astype(np.float32),
            variance,
            mask,
            wcs,
            FWHM,
            event.band or "r",
            event.visit,
            work.detector,
            mjd,
        )
        result = DetectorResult(
            event.visit,
            work.detector,
            sources,
            exposure,
            forced,
            metrics={"psf_fwhm_arcsec": FWHM * 0.2, "background_njy": background, "n_sources": float(n)},
            timings={"detect": 0.0},
        )
        return ProcessedDetector(result, science, template)
