"""`simulate_night`: a night of one field for prompt processing, with the truth to test it against.

Per science visit and detector: the scene's sources at that visit's epoch (variable stars on their light
curves, the visit's transients, movers where they are), rendered with the visit's seeing (Gaussian PSF, FWHM
0.6-1.2 arcsec) onto the detector's pixels (TAN WCS from the dithered boresight), plus dark sky, through the
flat field, Poisson and read noise, the gain and the bias: a raw FITS file with LSSTCamSim's primary-header
keywords, archived into the Data Backbone by the archiver. Per detector: the master bias and flat (calibration
datasets) and the template, a coadd of `template_visits` good-seeing earlier visits of the same field without
the transients and movers (a template dataset). The truth (every source in every visit and the template, with
its pixel position and flux in nJy) is a Parquet file, also in the Backbone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow as pa
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from tqdm import tqdm

from dms.deployment import Deployment
from dms.services.archiver.ingest import archive_file, raw_run
from dms.services.archiver.rubin import exposure_id
from dms.services.backbone import Backbone
from dms.services.prompt import photometry
from dms.services.prompt.exposure import MASK_SAT, Exposure
from dms.services.prompt.payload.fitsio import exposure_to_hdus
from dms.services.prompt.simulate import render
from dms.services.prompt.simulate.camera import INSTRUMENT, detector_wcs, science_detectors
from dms.services.prompt.simulate.scene import (
    Densities,
    Scene,
    make_scene,
    mover_positions,
    pick_field,
    variable_mag,
)

log = logging.getLogger(__name__)

PHYSICAL_FILTERS = {"u": "u_24", "g": "g_6", "r": "r_57", "i": "i_39", "z": "z_20", "y": "y_10"}
GAIN = 1.6  # electrons per ADU (ITL sensors)
READ_NOISE = 6.0  # electrons
FULL_WELL = 100_000.0  # electrons
BIAS_LEVEL = 15_000.0  # ADU
EXPOSURE_TIME = 30.0
VISIT_SPACING_DAYS = 0.023  # ~33 minutes between revisits of the field
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

BIAS, FLAT, TEMPLATE, TRUTH = "bias", "flat", "template", "simTruth"
CALIB_DIMENSIONS = {BIAS: ["instrument", "detector"], FLAT: ["instrument", "detector", "band"]}
TEMPLATE_DIMENSIONS = ["instrument", "detector", "band"]
TRUTH_DIMENSIONS = ["instrument", "day_obs"]


@dataclass(frozen=True)
class DatasetHandle:
    """How to get one dataset from the Data Backbone: its type, data ID and RUN collection."""

    dataset_type: str
    data_id: dict[str, Any]
    run: str

    def get(self, backbone: Backbone) -> Any:
        """The dataset (an astropy HDUList for FITS, a pyarrow Table for Parquet)."""
        return backbone.get(self.dataset_type, self.data_id, [self.run])


@dataclass
class SimulatedVisit:
    visit: int  # = the exposure id the archiver gives the raws
    band: str
    mjd: float  # exposure midpoint, TAI
    seeing_arcsec: float  # PSF FWHM
    boresight: tuple[float, float]
    detectors: list[int]
    raws: dict[int, DatasetHandle]  # detector -> raw
    raw_paths: dict[int, Path]


@dataclass
class SimulatedNight:
    """What `simulate_night` made: visits with their raws, per-detector calibrations and templates, truth."""

    instrument: str
    day_obs: int
    field_center: tuple[float, float]  # (ra, dec) of the nominal boresight, degrees
    shape: tuple[int, int]
    detectors: list[int]
    visits: list[SimulatedVisit]
    bias: dict[int, DatasetHandle]
    flats: dict[tuple[int, str], DatasetHandle]
    templates: dict[tuple[int, str], DatasetHandle]
    truth: pd.DataFrame  # kind, id, visit (0 = template), detector, ra, dec, x, y, flux, template_flux
    truth_path: Path
    calib_run: str
    template_run: str
    template_fwhm_arcsec: dict[tuple[int, str], float] = field(default_factory=dict)

    def visit(self, visit: int) -> SimulatedVisit:
        for item in self.visits:
            if item.visit == visit:
                return item
        raise KeyError(f"visit {visit} is not one of this night's {[v.visit for v in self.visits]}")

    def raw(self, visit: int, detector: int) -> DatasetHandle:
        return self.visit(visit).raws[detector]

    def flat(self, detector: int, band: str) -> DatasetHandle:
        return self.flats[(detector, band)]

    def template(self, detector: int, band: str) -> DatasetHandle:
        return self.templates[(detector, band)]

    def science(self, backbone: Backbone, visit: int, detector: int) -> Exposure:
        """The calibrated exposure of a visit's detector: its raw through ISR with the night's calibs."""
        from dms.services.prompt.payload.isr import IsrTask

        band = self.visit(visit).band
        return IsrTask().run(
            raw=self.raw(visit, detector).get(backbone),
            bias=self.bias[detector].get(backbone),
            flat=self.flat(detector, band).get(backbone),
        )

    def load_template(self, backbone: Backbone, detector: int, band: str) -> Exposure:
        from dms.services.prompt.payload.fitsio import exposure_from_hdus

        return exposure_from_hdus(self.template(detector, band).get(backbone), "template")


def simulate_night(
    deployment: Deployment,
    visits: int,
    detectors: int,
    *,
    size: tuple[int, int] = (2048, 2048),
    seed: int = 0,
    template_visits: int = 3,
    bands: str = "r",
    densities: Densities | None = None,
    dither_arcsec: float = 4.0,
    progress: bool = False,
    backbone: Backbone | None = None,
    pointing_error_arcsec: float = 0.0,
    extinction_mag: float = 0.0,
) -> SimulatedNight:
    """Simulate `visits` visits of one field on `detectors` detectors and put everything in the Backbone.

    `pointing_error_arcsec` (rms per axis) offsets each visit's header WCS from the true one, and each
    visit loses up to `extinction_mag` of its light to clouds (uniform), so that a production's
    astrometric and photometric calibration have something to correct (the truth keeps the real positions
    and fluxes). Deterministic in `seed`: running it again makes the same files (the archiver finds them
    archived)."""
    if visits < 1:
        raise ValueError(f"visits must be at least 1, not {visits}")
    if template_visits < 1:
        raise ValueError(f"template_visits must be at least 1, not {template_visits}")
    unknown = [b for b in bands if b not in photometry.ZERO_POINTS]
    if not bands or unknown:
        raise ValueError(f"bands must be letters of {''.join(photometry.ZERO_POINTS)}, not {bands!r}")
    rows, cols = size
    if not (32 <= rows <= 4000 and 32 <= cols <= 4072):
        raise ValueError(f"size must be within 32..4000 rows and 32..4072 columns (a detector), not {size}")
    densities = densities or Densities()
    backbone = backbone or Backbone(deployment)
    rng = np.random.default_rng(seed)
    chosen = science_detectors(detectors)
    ra0, dec0 = pick_field(rng)
    day_obs = _day_obs(seed)
    night_start = Time(f"{str(day_obs)[:4]}-{str(day_obs)[4:6]}-{str(day_obs)[6:]}T23:30:00", scale="tai").mjd
    tag = f"sim{day_obs}"
    calib_run, template_run = f"{INSTRUMENT}/calib/{tag}", f"{INSTRUMENT}/templates/{tag}"
    out_dir = Path(deployment.data_dir) / "simulations" / tag
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)

    plan = []
    for k in range(visits):
        seq = k + 1
        mjd = night_start + k * VISIT_SPACING_DAYS
        offset = rng.uniform(-dither_arcsec, dither_arcsec, 2) / 3600.0
        pointing = ((ra0 + offset[0] / np.cos(np.radians(dec0))) % 360.0, dec0 + offset[1])
        seeing = float(rng.uniform(0.6, 1.2))
        pointing = (float(pointing[0]), float(pointing[1]))
        plan.append(
            (exposure_id(day_obs, seq, "S"), seq, bands[k % len(bands)], float(mjd), seeing, pointing)
        )
    visit_ids = [p[0] for p in plan]
    night = SimulatedNight(
        instrument=INSTRUMENT,
        day_obs=day_obs,
        field_center=(ra0, dec0),
        shape=(rows, cols),
        detectors=[d.id for d in chosen],
        visits=[
            SimulatedVisit(v, band, mjd, seeing, pointing, [d.id for d in chosen], {}, {})
            for v, _, band, mjd, seeing, pointing in plan
        ],
        bias={},
        flats={},
        templates={},
        truth=pd.DataFrame(),
        truth_path=out_dir / "truth.parquet",
        calib_run=calib_run,
        template_run=template_run,
    )
    truth_frames: list[pd.DataFrame] = []
    work = tqdm(total=len(chosen) * (visits + 1), desc="simulate", unit="detector", disable=not progress)
    for index, detector in enumerate(chosen):
        det_rng = np.random.default_rng([seed, detector.id])
        nominal = detector_wcs(detector, (rows, cols), ra0, dec0)
        scene = make_scene(
            det_rng, nominal, (rows, cols), visit_ids, [p[3] for p in plan], densities, (index + 1) * 10**7
        )
        bias = render.master_bias(det_rng, (rows, cols), BIAS_LEVEL)
        night.bias[detector.id] = _put_calib(backbone, bias, BIAS, detector.id, None, calib_run)
        flats = {}
        for band in sorted(set(bands)):
            flats[band] = render.master_flat(det_rng, (rows, cols))
            night.flats[(detector.id, band)] = _put_calib(
                backbone, flats[band], FLAT, detector.id, band, calib_run
            )
        for band in sorted(set(bands)):
            template, fwhm, frame = _template(
                det_rng, scene, nominal, detector.id, band, night_start, template_visits, (rows, cols)
            )
            ref = DatasetHandle(
                TEMPLATE, {"instrument": INSTRUMENT, "detector": detector.id, "band": band}, template_run
            )
            backbone.put(
                exposure_to_hdus(template, "template"),
                TEMPLATE,
                ref.data_id,
                run=template_run,
                dimensions=TEMPLATE_DIMENSIONS,
            )
            night.templates[(detector.id, band)] = ref
            night.template_fwhm_arcsec[(detector.id, band)] = fwhm
            truth_frames.append(frame)
        work.update(1)
        template_flux = _template_fluxes(truth_frames, detector.id)
        for visit, (visit_id, seq, band, mjd, seeing, pointing) in zip(night.visits, plan, strict=True):
            wcs = detector_wcs(detector, (rows, cols), pointing[0], pointing[1])
            sources = _sources_at(scene, visit_id, mjd)
            error, extinction = _visit_errors(seed, visit_id, pointing_error_arcsec, extinction_mag)
            electrons = _render(sources, wcs, (rows, cols), seeing, band) * 10 ** (-0.4 * extinction)
            raw = render.expose(
                det_rng,
                electrons,
                photometry.sky_electrons_per_pixel(band, EXPOSURE_TIME),
                bias,
                flats[band],
                gain=GAIN,
                read_noise=READ_NOISE,
                full_well=FULL_WELL,
            )
            path = out_dir / "raw" / f"{INSTRUMENT}_{visit_id}_{detector.name}.fits"
            header_wcs = wcs.deepcopy()
            header_wcs.wcs.crval = [
                (wcs.wcs.crval[0] + error[0] / 3600.0 / np.cos(np.radians(wcs.wcs.crval[1]))) % 360.0,
                wcs.wcs.crval[1] + error[1] / 3600.0,
            ]
            _raw_hdus(raw, header_wcs, detector, day_obs, seq, band, mjd, pointing, seeing).writeto(
                path, overwrite=True
            )
            result = archive_file(backbone, path)
            assert result.ref is not None
            visit.raws[detector.id] = DatasetHandle("raw", dict(result.ref.data_id), raw_run(INSTRUMENT))
            visit.raw_paths[detector.id] = path
            truth_frames.append(_truth(sources, wcs, (rows, cols), visit_id, detector.id, template_flux))
            work.update(1)
    work.close()
    night.truth = pd.concat(truth_frames, ignore_index=True)
    night.truth.to_parquet(night.truth_path, index=False)
    backbone.put(
        pa.Table.from_pandas(night.truth, preserve_index=False),
        TRUTH,
        {"instrument": INSTRUMENT, "day_obs": day_obs},
        run=template_run,
        dimensions=TRUTH_DIMENSIONS,
    )
    log.info("simulated %d visits x %d detectors of field (%.4f, %.4f)", visits, len(chosen), ra0, dec0)
    return night


def _visit_errors(
    seed: int, visit: int, pointing_error_arcsec: float, extinction_mag: float
) -> tuple[np.ndarray, float]:
    """A visit's header-WCS error (east, north, arcsec) and cloud extinction (mag): the same for all
    its detectors, and drawn from their own generator so the rest of the night is unchanged."""
    rng = np.random.default_rng([seed, visit % 2**32, 7])
    error = rng.normal(0.0, pointing_error_arcsec, 2) if pointing_error_arcsec > 0 else np.zeros(2)
    extinction = float(rng.uniform(0.0, extinction_mag)) if extinction_mag > 0 else 0.0
    return error, extinction


def _day_obs(seed: int) -> int:
    """One observing day per seed (so different seeds never share exposure ids)."""
    day = Time("2026-01-01T12:00:00", scale="tai") + (seed % 20000) * u.day
    return int(day.strftime("%Y%m%d"))


def _put_calib(
    backbone: Backbone, data: np.ndarray, kind: str, detector: int, band: str | None, run: str
) -> DatasetHandle:
    header = fits.Header()
    header["INSTRUME"] = INSTRUMENT
    header["DETECTOR"] = detector
    header["CALIBTYP"] = kind
    if band is not None:
        header["BAND"] = band
    data_id: dict[str, Any] = {"instrument": INSTRUMENT, "detector": detector}
    if band is not None:
        data_id["band"] = band
    backbone.put(
        fits.HDUList([fits.PrimaryHDU(data, header)]),
        kind,
        data_id,
        run=run,
        dimensions=CALIB_DIMENSIONS[kind],
    )
    return DatasetHandle(kind, data_id, run)


def _sources_at(scene: Scene, visit: int | None, mjd: float) -> pd.DataFrame:
    """Point sources and galaxies at an epoch: kind, id, ra, dec, mag (+ galaxy shape columns).
    `visit=None` is a template epoch: no transients, no movers."""
    frames = [
        scene.stars.assign(sigma_arcsec=0.0, q=1.0, theta=0.0),
        scene.galaxies.assign(kind="galaxy"),
        scene.variables.assign(
            kind="variable", mag=variable_mag(scene.variables, mjd), sigma_arcsec=0.0, q=1.0, theta=0.0
        )[["id", "kind", "ra", "dec", "mag", "sigma_arcsec", "q", "theta"]],
    ]
    if visit is not None:
        transients = scene.transients[scene.transients["visit"] == visit]
        frames.append(
            transients.assign(kind="transient", sigma_arcsec=0.0, q=1.0, theta=0.0).drop(columns="visit")
        )
        ra, dec = mover_positions(scene.movers, mjd)
        frames.append(
            pd.DataFrame(
                {
                    "id": scene.movers["id"],
                    "kind": "mover",
                    "ra": ra,
                    "dec": dec,
                    "mag": scene.movers["mag"],
                    "sigma_arcsec": 0.0,
                    "q": 1.0,
                    "theta": 0.0,
                }
            )
        )
    columns = ["id", "kind", "ra", "dec", "mag", "sigma_arcsec", "q", "theta"]
    result = pd.concat([f[columns] for f in frames if len(f)], ignore_index=True)
    result["flux"] = 10 ** ((photometry.NJY_AB_ZERO - result["mag"].to_numpy(float)) / 2.5)
    return result


def _render(sources: pd.DataFrame, wcs: WCS, shape: tuple[int, int], seeing: float, band: str) -> np.ndarray:
    """Expected source electrons per pixel (noiseless)."""
    sigma = seeing / photometry.PIXEL_SCALE * FWHM_TO_SIGMA
    x, y = wcs.world_to_pixel_values(sources["ra"].to_numpy(), sources["dec"].to_numpy())
    electrons = sources["flux"].to_numpy() / photometry.njy_per_electron(band, EXPOSURE_TIME)
    image = np.zeros(shape)
    point = (sources["kind"] != "galaxy").to_numpy()
    render.add_point_sources(image, x[point], y[point], electrons[point], sigma)
    g = ~point
    render.add_galaxies(
        image,
        x[g],
        y[g],
        electrons[g],
        sources["sigma_arcsec"].to_numpy()[g] / photometry.PIXEL_SCALE,
        sources["q"].to_numpy()[g],
        sources["theta"].to_numpy()[g],
        sigma,
    )
    return image


def _template(
    rng: np.random.Generator,
    scene: Scene,
    wcs: WCS,
    detector: int,
    band: str,
    night_start: float,
    count: int,
    shape: tuple[int, int],
) -> tuple[Exposure, float, pd.DataFrame]:
    """A coadd of `count` good-seeing earlier visits (calibrated, sky subtracted, equal weights)."""
    scale = photometry.njy_per_electron(band, EXPOSURE_TIME)
    sky = photometry.sky_electrons_per_pixel(band, EXPOSURE_TIME)
    images, variances, saturated, fwhms, fluxes = [], [], np.zeros(shape, bool), [], []
    for k in range(count):
        mjd = night_start - 1.0 - k  # one per earlier night
        seeing = float(rng.uniform(0.55, 0.7))
        sources = _sources_at(scene, None, mjd)
        expected = _render(sources, wcs, shape, seeing, band) + sky
        electrons = rng.poisson(expected).astype(np.float64) + rng.normal(0.0, READ_NOISE, shape)
        saturated |= electrons >= FULL_WELL
        electrons = np.minimum(electrons, FULL_WELL)
        images.append((electrons - sky) * scale)
        variances.append((expected + READ_NOISE**2) * scale**2)
        fwhms.append(seeing)
        fluxes.append(sources.set_index(["kind", "id"])["flux"])
    image = np.mean(images, axis=0)
    variance = np.sum(variances, axis=0) / count**2
    fwhm = float(np.sqrt(np.mean(np.square(fwhms))))
    mask = np.where(saturated, MASK_SAT, 0).astype(np.uint32)
    template = Exposure(
        image=image.astype(np.float32),
        variance=variance.astype(np.float32),
        mask=mask,
        wcs=wcs,
        psf_fwhm_pixels=fwhm / photometry.PIXEL_SCALE,
        band=band,
        visit=0,
        detector=detector,
        mjd_tai=night_start - 1.0,
        exposure_time=EXPOSURE_TIME * count,
    )
    mean_flux = pd.concat(fluxes, axis=1).mean(axis=1).rename("flux").reset_index()
    first = (
        _sources_at(scene, None, night_start - 1.0).drop(columns="flux").merge(mean_flux, on=["kind", "id"])
    )
    frame = _truth(first, wcs, shape, 0, detector, None)
    return template, fwhm, frame


def _template_fluxes(frames: list[pd.DataFrame], detector: int) -> pd.Series:
    templates = pd.concat(
        [f for f in frames if len(f) and (f["visit"] == 0).all() and (f["detector"] == detector).all()]
    )
    flux = templates.set_index(["kind", "id"])["flux"]
    # one template per band; a source's flux is the same in every band (the scene has one magnitude)
    return flux[~flux.index.duplicated()]


def _truth(
    sources: pd.DataFrame,
    wcs: WCS,
    shape: tuple[int, int],
    visit: int,
    detector: int,
    template_flux: pd.Series | None,
) -> pd.DataFrame:
    x, y = wcs.world_to_pixel_values(sources["ra"].to_numpy(), sources["dec"].to_numpy())
    frame = pd.DataFrame(
        {
            "kind": sources["kind"].to_numpy(),
            "id": sources["id"].to_numpy(np.int64),
            "visit": np.int64(visit),
            "detector": np.int16(detector),
            "ra": sources["ra"].to_numpy(),
            "dec": sources["dec"].to_numpy(),
            "x": x,
            "y": y,
            "flux": sources["flux"].to_numpy(),
        }
    )
    if template_flux is None:
        frame["template_flux"] = frame["flux"]
    else:
        keys = pd.MultiIndex.from_arrays([frame["kind"], frame["id"]])
        frame["template_flux"] = template_flux.reindex(keys).fillna(0.0).to_numpy()
    inside = (x > -0.5) & (x < shape[1] - 0.5) & (y > -0.5) & (y < shape[0] - 0.5)
    return frame[inside].reset_index(drop=True)


def _raw_hdus(
    raw: np.ndarray,
    wcs: WCS,
    detector: Any,
    day_obs: int,
    seq: int,
    band: str,
    mjd: float,
    pointing: tuple[float, float],
    seeing: float,
) -> fits.HDUList:
    """A raw with LSSTCamSim's primary-header keywords and one image extension with its WCS."""
    begin = Time(mjd - EXPOSURE_TIME / 2 / 86400.0, format="mjd", scale="tai")
    end = Time(mjd + EXPOSURE_TIME / 2 / 86400.0, format="mjd", scale="tai")
    primary = fits.PrimaryHDU()
    physical = PHYSICAL_FILTERS[band]
    primary.header.update(
        {
            "INSTRUME": INSTRUMENT,
            "TELESCOP": "Rubin:Simonyi",
            "TIMESYS": "TAI",
            "OBSID": f"MC_S_{day_obs}_{seq:06d}",
            "DAYOBS": day_obs,
            "SEQNUM": seq,
            "CONTRLLR": "S",
            "DATE-BEG": begin.isot,
            "DATE-END": end.isot,
            "MJD-BEG": begin.mjd,
            "MJD-END": end.mjd,
            "EXPTIME": EXPOSURE_TIME,
            "DARKTIME": EXPOSURE_TIME + 0.8,
            "FILTER": physical,
            "FILTBAND": band,
            "RA": pointing[0],
            "DEC": pointing[1],
            "RASTART": pointing[0],
            "DECSTART": pointing[1],
            "ROTPA": 0.0,
            "AZSTART": 140.0,
            "ELSTART": 65.0,
            "IMGTYPE": "OBJECT",
            "REASON": "science",
            "PROGRAM": "BLOCK-SIM",
            "OBJECT": "dms_sim_field",
            "GROUPID": f"{day_obs}T{seq}",
            "RAFTBAY": detector.name.split("_")[0],
            "CCDSLOT": detector.name.split("_")[1],
            "SIMFWHM": (seeing, "simulated PSF FWHM, arcsec"),
        }
    )
    image = fits.ImageHDU(raw, name="IMAGE")
    image.header.update(wcs.to_header())
    image.header["GAIN"] = (GAIN, "electrons per ADU")
    image.header["RDNOISE"] = (READ_NOISE, "read noise, electrons")
    image.header["SATURATE"] = (FULL_WELL / GAIN, "ADU above bias at full well")
    return fits.HDUList([primary, image])
