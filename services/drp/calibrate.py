"""DRP steps of single visits: the Gaia reference stars of the region (read from the partitioned catalog
through the query engine), ISR and measurement of each raw (`drp.characterize`), and the calibration of
each visit (`drp.calibrate_visit`): a WCS offset and a photometric scale fitted on the Gaia stars of all
its detectors, applied to its single-visit Source catalog.

A visit's pointing error and its clouds are the same on every detector, so they are fitted per visit: a
field of LSSTCam detectors holds only a few Gaia stars brighter than G = 10 (the reference catalog here).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from astropy.wcs import WCS, FITSFixedWarning
from pydantic import Field

from dms.services.drp import io
from dms.services.drp import measure as drp_measure
from dms.services.drp.errors import DrpError
from dms.services.prompt import photometry
from dms.services.prompt.payload.fitsio import exposure_to_hdus
from dms.services.prompt.payload.ids import dia_source_id
from dms.services.prompt.payload.isr import IsrTask
from dms.tasks import Resources, Task, TaskConfig, register_task

PHYSICAL_FILTERS = {"u": "u_24", "g": "g_6", "r": "r_57", "i": "i_39", "z": "z_20", "y": "y_10"}


class ReferenceConfig(TaskConfig):
    table: str = Field(default="gaia", min_length=1, description="Catalog table of the reference stars.")
    margin_deg: float = Field(default=0.2, ge=0, le=5, description="Read this far beyond the region (deg).")


@register_task
class ReferenceTask(Task[ReferenceConfig, list[dict[str, Any]]]):
    """The reference stars of a region (id, ra, dec, G), read from the partitioned catalog."""

    name = "drp.reference"
    ConfigClass = ReferenceConfig

    def run(self, data_dir: str, release: str, ra: float, dec: float, radius: float) -> list[dict[str, Any]]:
        from dms.query.engine import QueryEngine

        sql = (
            "SELECT source_id, ra, dec, phot_g_mean_mag FROM {table} "
            "WHERE scisql_s2PtInCircle(ra, dec, {ra!r}, {dec!r}, {radius!r}) = 1"
        )
        # only numbers and a validated table name reach the text; the engine parses and checks it
        query = sql.format(
            table=_table_name(self.config.table),
            ra=float(ra),
            dec=float(dec),
            radius=float(radius + self.config.margin_deg),
        )
        with io.deployment_at(data_dir) as deployment, self.timed("query"), QueryEngine(deployment) as engine:
            table = engine.execute(query).table
        frame = table.to_pandas()
        self.log.info("release %s: %d reference stars from %s", release, len(frame), self.config.table)
        return [
            {
                "source_id": int(r.source_id),
                "ra": float(r.ra),
                "dec": float(r.dec),
                "mag": float(r.phot_g_mean_mag),
            }
            for r in frame.itertuples()
        ]


def _table_name(name: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", name):
        raise DrpError(f"reference table {name!r} is not a table name (schema.table)")
    return name


class CharacterizeConfig(TaskConfig):
    threshold: float = Field(default=5.0, gt=0, description="Detection threshold, in S/N of a point source.")
    background_mesh: int = Field(default=128, ge=16, le=1024, description="Background mesh size, pixels.")
    match_radius_arcsec: float = Field(
        default=6.0, gt=0, le=60, description="Search radius around a reference star's predicted place."
    )


@register_task
class CharacterizeTask(Task[CharacterizeConfig, dict[str, Any]]):
    """One raw: ISR with its master bias and flat from the Data Backbone, sources detected and measured,
    the reference stars on it fitted (their wings: they saturate). Writes the calexp and the sources."""

    name = "drp.characterize"
    ConfigClass = CharacterizeConfig
    resources = Resources(cpus=1, memory_mb=1024)

    def run(
        self, data_dir: str, release: str, raw: dict[str, Any], band: str, refs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        from dms.services.backbone import Backbone

        instrument, detector = raw["instrument"], int(raw["detector"])
        where = f"raw {raw}"
        with io.deployment_at(data_dir) as deployment, self.timed("read"):
            backbone = Backbone(deployment)
            raw_hdus = backbone.get("raw", raw)
            try:
                where_calibs = io.calibration_collections(backbone, instrument, int(raw["exposure"]))
                bias = backbone.get("bias", {"instrument": instrument, "detector": detector}, where_calibs)
                flat = backbone.get(
                    "flat", {"instrument": instrument, "detector": detector, "band": band}, where_calibs
                )
            except Exception as exc:  # not found, corrupted: the calibration's own message says which
                raise DrpError(f"{where}: no usable master calibration: {exc}") from None
        exposure = self.subtask_isr().run(raw=raw_hdus, bias=bias, flat=flat)
        sigma = exposure.psf_fwhm_pixels / drp_measure.FWHM_PER_SIGMA
        with self.timed("detect"):
            image, sky = drp_measure.subtract_background(
                exposure.image, exposure.mask, self.config.background_mesh
            )
            found, _ = drp_measure.find_sources(
                image, exposure.variance, exposure.mask, sigma, self.config.threshold
            )
        with self.timed("measure"):
            phot = drp_measure.psf_photometry(
                image, exposure.variance, exposure.mask, found["x"], found["y"], sigma
            )
            sources = pd.concat([found, phot], axis=1)
            ra, dec = exposure.wcs.pixel_to_world_values(sources["x"].to_numpy(), sources["y"].to_numpy())
            sources["ra"], sources["dec"] = np.asarray(ra) % 360.0, np.asarray(dec)
        with self.timed("references"):
            matched = self._fit_references(image, exposure, refs, sigma)
        work = io.work_dir(data_dir, release)
        stem = f"{exposure.visit}_{exposure.detector}"
        with self.timed("write"):
            calexp = io.write_fits(exposure_to_hdus(exposure), work / "calexp" / f"{stem}.fits")
            source_path = io.write_parquet(sources, work / "icSrc" / f"{stem}.parquet")
        rows, cols = exposure.image.shape
        corner_x, corner_y = [-0.5, cols - 0.5, cols - 0.5, -0.5], [-0.5, -0.5, rows - 0.5, rows - 0.5]
        cra, cdec = exposure.wcs.pixel_to_world_values(corner_x, corner_y)
        return io.json_safe(
            {
                "visit": exposure.visit,
                "detector": exposure.detector,
                "band": exposure.band,
                "calexp": calexp,
                "sources": source_path,
                "n_sources": len(sources),
                "psf_fwhm_pixels": exposure.psf_fwhm_pixels,
                "sky": sky,
                "mjd": exposure.mjd_tai,
                "exposure_time": exposure.exposure_time,
                "zero_point": float(exposure.metadata["zero_point"]),
                "shape": [rows, cols],
                "corners_ra": [float(v) % 360.0 for v in cra],
                "corners_dec": [float(v) for v in cdec],
                "refs": matched,
            }
        )

    def subtask_isr(self) -> IsrTask:
        return IsrTask(data_id=self.data_id)

    def _fit_references(
        self, image: np.ndarray, exposure: Any, refs: list[dict[str, Any]], sigma: float
    ) -> list[dict[str, Any]]:
        if not refs:
            return []
        rows, cols = image.shape
        ra = np.array([r["ra"] for r in refs])
        dec = np.array([r["dec"] for r in refs])
        x, y = exposure.wcs.world_to_pixel_values(ra, dec)
        search = self.config.match_radius_arcsec / photometry.PIXEL_SCALE
        matched = []
        for k in np.flatnonzero((x > 0) & (x < cols - 1) & (y > 0) & (y < rows - 1)):
            fit = drp_measure.fit_saturated_star(
                image, exposure.variance, exposure.mask, float(x[k]), float(y[k]), sigma, search
            )
            if fit is None:
                continue
            mra, mdec = exposure.wcs.pixel_to_world_values(fit["x"], fit["y"])
            matched.append({**refs[k], **fit, "ra_measured": float(mra) % 360.0, "dec_measured": float(mdec)})
        return matched


class CalibrateVisitConfig(TaskConfig):
    min_references: int = Field(default=1, ge=1, description="Fewest reference stars a calibration needs.")
    max_offset_arcsec: float = Field(default=10.0, gt=0, description="Largest credible WCS offset, arcsec.")


@register_task
class CalibrateVisitTask(Task[CalibrateVisitConfig, dict[str, Any]]):
    """One visit: its WCS offset and photometric scale from the Gaia stars of its detectors, applied to
    the single-visit Source catalog; the Visit and CcdVisit rows."""

    name = "drp.calibrate_visit"
    ConfigClass = CalibrateVisitConfig

    def run(
        self, data_dir: str, release: str, detectors: list[dict[str, Any]], boresight: list[float]
    ) -> dict[str, Any]:
        if not detectors:
            raise DrpError(f"visit {self.data_id.get('visit')}: no characterized detector to calibrate")
        visit, band = int(detectors[0]["visit"]), str(detectors[0]["band"])
        refs = [r for d in detectors for r in d["refs"]]
        with self.timed("fit"):
            offset, scale, scatter = self._fit(visit, refs)
        frames, ccds = [], []
        with self.timed("apply"):
            for d in sorted(detectors, key=lambda d: int(d["detector"])):
                frame, ccd = self._apply(d, offset, scale, scatter)
                frames.append(frame)
                ccds.append(ccd)
        work = io.work_dir(data_dir, release)
        sources = pd.concat(frames, ignore_index=True)
        path = io.write_parquet(sources, work / "src" / f"{visit}.parquet")
        first = detectors[0]
        return io.json_safe(
            {
                "visit": visit,
                "band": band,
                "offset_arcsec": [offset[0] * 3600.0, offset[1] * 3600.0],
                "flux_scale": scale,
                "n_references": len(refs),
                "sources": path,
                "n_sources": len(sources),
                "ccds": ccds,
                "visit_row": {
                    "visit": visit,
                    "band": band,
                    "physical_filter": PHYSICAL_FILTERS.get(band, band),
                    "ra": float(boresight[0]),
                    "dec": float(boresight[1]),
                    "expMidptMJD": float(first["mjd"]),
                    "obsStartMJD": float(first["mjd"]) - float(first["exposure_time"]) / 2 / 86400.0,
                    "skyRotation": 0.0,
                    "expTime": float(first["exposure_time"]),
                },
            }
        )

    def _fit(self, visit: int, refs: list[dict[str, Any]]) -> tuple[tuple[float, float], float, float]:
        """(east, north) offset in degrees to add to measured positions, flux scale, astrometric rms."""
        if len(refs) < self.config.min_references:
            raise DrpError(
                f"visit {visit}: {len(refs)} reference stars measured, {self.config.min_references} needed "
                "for its astrometric and photometric calibration"
            )
        cos_dec = np.cos(np.radians([r["dec"] for r in refs]))
        east = np.array([((r["ra"] - r["ra_measured"] + 180) % 360 - 180) for r in refs]) * cos_dec
        north = np.array([r["dec"] - r["dec_measured"] for r in refs])
        offset = (float(np.median(east)), float(np.median(north)))
        if np.hypot(*offset) * 3600.0 > self.config.max_offset_arcsec:
            raise DrpError(
                f"visit {visit}: WCS offset {np.hypot(*offset) * 3600:.1f} arcsec exceeds "
                f"{self.config.max_offset_arcsec} arcsec; the references are not the stars matched"
            )
        ratios = np.array([photometry.mag_to_njy(r["mag"]) / r["flux"] for r in refs if r["flux"] > 0])
        if len(ratios) == 0:
            raise DrpError(f"visit {visit}: no reference star has a positive flux")
        residual = np.hypot(east - offset[0], north - offset[1]) * 3600.0
        scatter = float(np.sqrt(np.mean(residual**2))) if len(refs) > 1 else float("nan")
        return offset, float(np.median(ratios)), scatter

    def _apply(
        self, d: dict[str, Any], offset: tuple[float, float], scale: float, scatter: float
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        visit, detector = int(d["visit"]), int(d["detector"])
        raw = pd.read_parquet(d["sources"])
        wcs = corrected_wcs(calexp_wcs(d["calexp"]), offset)
        ra, dec = wcs.pixel_to_world_values(raw["x"].to_numpy(), raw["y"].to_numpy())
        sigma = float(d["psf_fwhm_pixels"]) / drp_measure.FWHM_PER_SIGMA
        position_error = np.sqrt(2.0) * sigma / np.clip(raw["snr"].to_numpy(float), 1e-3, None)
        frame = pd.DataFrame(
            {
                "sourceId": [dia_source_id(visit, detector, k) for k in range(len(raw))],
                "visit": np.int64(visit),
                "detector": np.int32(detector),
                "band": d["band"],
                "physical_filter": PHYSICAL_FILTERS.get(d["band"], d["band"]),
                "ra": np.asarray(ra) % 360.0,
                "dec": np.asarray(dec),
                "coord_ra": np.asarray(ra) % 360.0,
                "coord_dec": np.asarray(dec),
                "x": raw["x"].to_numpy(float),
                "y": raw["y"].to_numpy(float),
                "xErr": position_error,
                "yErr": position_error,
                "raErr": position_error * photometry.PIXEL_SCALE / 3600.0,
                "decErr": position_error * photometry.PIXEL_SCALE / 3600.0,
                "psfFlux": raw["psfFlux"].to_numpy(float) * scale,
                "psfFluxErr": raw["psfFluxErr"].to_numpy(float) * scale,
                "psfFlux_flag": raw["psfFlux_flag"].to_numpy(bool),
                "pixelFlags_saturated": raw["pixelFlags_saturated"].to_numpy(bool),
                "pixelFlags_edge": raw["pixelFlags_edge"].to_numpy(bool),
            }
        )
        rows, cols = d["shape"]
        cra, cdec = wcs.pixel_to_world_values((cols - 1) / 2, (rows - 1) / 2)
        llc = wcs.pixel_to_world_values(-0.5, -0.5)
        fwhm_arcsec = float(d["psf_fwhm_pixels"]) * photometry.PIXEL_SCALE
        ccd = {
            "visit": visit,
            "detector": detector,
            "band": d["band"],
            "calexp": d["calexp"],
            "offset_deg": list(offset),
            "flux_scale": scale,
            "psf_fwhm_pixels": float(d["psf_fwhm_pixels"]),
            "corners_ra": d["corners_ra"],
            "corners_dec": d["corners_dec"],
            "row": {
                "ccdVisitId": packed_ccd_visit(visit, detector),
                "visitId": visit,
                "detector": detector,
                "band": d["band"],
                "physical_filter": PHYSICAL_FILTERS.get(d["band"], d["band"]),
                "ra": float(cra) % 360.0,
                "dec": float(cdec),
                "expMidptMJD": float(d["mjd"]),
                "obsStartMJD": float(d["mjd"]) - float(d["exposure_time"]) / 2 / 86400.0,
                "zeroPoint": float(d["zero_point"]) - 2.5 * np.log10(scale),
                "seeing": fwhm_arcsec,
                "psfSigma": fwhm_arcsec / drp_measure.FWHM_PER_SIGMA / photometry.PIXEL_SCALE,
                "pixelScale": photometry.PIXEL_SCALE,
                "skyBg": float(d["sky"]),
                "llcra": float(llc[0]) % 360.0,
                "llcdec": float(llc[1]),
                "skyRotation": 0.0,
                "expTime": float(d["exposure_time"]),
                "xSize": int(cols),
                "ySize": int(rows),
                "astromOffsetMean": scatter,
            },
        }
        return frame, ccd


def packed_ccd_visit(visit: int, detector: int) -> int:
    """ccdVisitId: the packed visit (ids.py) times 1000 plus the detector."""
    from dms.services.prompt.payload.ids import packed_visit

    return packed_visit(visit) * 1000 + detector


def calexp_wcs(path: str) -> WCS:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(hdus["IMAGE"].header)


def corrected_wcs(wcs: WCS, offset: tuple[float, float] | list[float]) -> WCS:
    """The WCS moved by the fitted (east, north) offset in degrees (a shift of the tangent point)."""
    moved = wcs.deepcopy()
    ra0, dec0 = moved.wcs.crval
    moved.wcs.crval = [(ra0 + offset[0] / np.cos(np.radians(dec0))) % 360.0, dec0 + offset[1]]
    moved.wcs.set()
    return moved
