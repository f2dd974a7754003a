"""DRP steps on sky patches: the coadd of one band (`drp.coadd`: every calibrated exposure touching the
patch, background subtracted, scaled by its photometric calibration and reprojected with `reproject` onto
the patch grid through its corrected WCS, combined with inverse-variance weights), and the Object catalog
(`drp.detect_coadd`: detection on the sum of the bands' S/N images, PSF photometry in every band)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field
from reproject import reproject_interp

from dms.services.drp import io
from dms.services.drp import measure as drp_measure
from dms.services.drp.calibrate import calexp_wcs, corrected_wcs
from dms.services.drp.errors import DrpError
from dms.services.drp.patches import object_id, patch_grid, patch_of, patches_touching
from dms.services.prompt import photometry
from dms.services.prompt.exposure import MASK_EDGE, MASK_NO_DATA, MASK_SAT, Exposure
from dms.services.prompt.payload.fitsio import exposure_from_hdus, exposure_to_hdus
from dms.tasks import Resources, Task, TaskConfig, register_task

TRACT_SHIFT = 8  # tract: the patch's parent pixel 4 orders coarser (an order-7 pixel for order-11 patches)


class CoaddConfig(TaskConfig):
    background_mesh: int = Field(default=128, ge=16, le=1024, description="Background mesh size, pixels.")
    patch_order: int = Field(default=11, ge=6, le=13, description="HEALPix order of the sky patches.")


@register_task
class CoaddTask(Task[CoaddConfig, dict[str, Any]]):
    """One band of one patch: calibrated exposures reprojected and combined (inverse-variance weights)."""

    name = "drp.coadd"
    ConfigClass = CoaddConfig
    resources = Resources(cpus=1, memory_mb=1536)

    def run(
        self, data_dir: str, release: str, patch: int, band: str, visits: list[dict[str, Any]]
    ) -> dict[str, Any]:
        wcs, shape = patch_grid(patch, self.config.patch_order)
        total_w = np.zeros(shape)
        total = np.zeros(shape)
        saturated = np.zeros(shape, bool)
        fwhm2, inputs = 0.0, 0
        for visit in visits:
            for ccd in visit["ccds"]:
                if ccd["band"] != band:
                    continue
                corners = (np.asarray(ccd["corners_ra"]), np.asarray(ccd["corners_dec"]))
                if patch not in patches_touching(*corners, self.config.patch_order):
                    continue  # another detector of the visit
                with self.timed("read"):
                    with fits.open(ccd["calexp"], memmap=False) as hdus:
                        exposure = exposure_from_hdus(hdus, ccd["calexp"])
                    image, _ = drp_measure.subtract_background(
                        exposure.image, exposure.mask, self.config.background_mesh
                    )
                scale = float(ccd["flux_scale"])
                moved = corrected_wcs(calexp_wcs(ccd["calexp"]), ccd["offset_deg"])
                box = _overlap_box(moved, exposure.image.shape, wcs, shape)
                if box is None:
                    continue
                y0, y1, x0, x1 = box
                with self.timed("reproject"):
                    planes = np.stack(
                        [
                            image * scale,
                            exposure.variance.astype(np.float64) * scale**2,
                            ((exposure.mask & (MASK_SAT | MASK_EDGE)) != 0).astype(np.float64),
                            ((exposure.mask & MASK_SAT) != 0).astype(np.float64),
                        ]
                    )
                    # one transform for every plane, onto the part of the patch the exposure covers
                    warped, footprint = reproject_interp(
                        (planes, moved), wcs[y0:y1, x0:x1], shape_out=(y1 - y0, x1 - x0)
                    )
                with self.timed("combine"):
                    value, var, bad_r, sat_r = warped
                    use = (
                        (footprint[0] > 0.99)
                        & np.isfinite(value)
                        & np.isfinite(var)
                        & (var > 0)
                        & ~(np.nan_to_num(bad_r) > 0)
                    )
                    if not use.any():
                        continue
                    w = np.where(use, 1.0 / np.where(use, var, 1.0), 0.0)
                    total[y0:y1, x0:x1] += w * np.where(use, value, 0.0)
                    total_w[y0:y1, x0:x1] += w
                    saturated[y0:y1, x0:x1] |= np.nan_to_num(sat_r) > 0
                    fwhm2 += float(ccd["psf_fwhm_pixels"]) ** 2
                    inputs += 1
        if inputs == 0:
            raise DrpError(f"patch {patch} band {band}: no calibrated exposure covers it")
        covered = total_w > 0
        coadd = np.where(covered, total / np.where(covered, total_w, 1.0), 0.0)
        variance = np.where(covered, 1.0 / np.where(covered, total_w, 1.0), 1e30)
        mask = np.where(covered, 0, MASK_NO_DATA).astype(np.uint32)
        mask[saturated] |= MASK_SAT
        exposure = Exposure(
            image=coadd.astype(np.float32),
            variance=variance.astype(np.float32),
            mask=mask,
            wcs=wcs,
            psf_fwhm_pixels=float(np.sqrt(fwhm2 / inputs)),
            band=band,
            visit=0,
            detector=0,
            mjd_tai=float(np.mean([v["visit_row"]["expMidptMJD"] for v in visits])),
            exposure_time=float(inputs * 30.0),
        )
        path = io.write_fits(
            exposure_to_hdus(exposure, "deepCoadd"),
            io.work_dir(data_dir, release) / "coadd" / f"{patch}_{band}.fits",
        )
        return io.json_safe(
            {
                "patch": patch,
                "band": band,
                "path": path,
                "inputs": inputs,
                "psf_fwhm_pixels": exposure.psf_fwhm_pixels,
                "coverage": float(covered.mean()),
            }
        )


def _overlap_box(
    source: WCS, source_shape: tuple[int, ...], target: WCS, target_shape: tuple[int, int], margin: int = 4
) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the target grid the source image covers (None when it covers none of it)."""
    rows, cols = source_shape[-2:]
    edge = np.linspace(-0.5, 1.0, 9)
    xs = np.concatenate([edge * cols, np.full(9, cols - 0.5), edge * cols, np.full(9, -0.5)])
    ys = np.concatenate([np.full(9, -0.5), edge * rows, np.full(9, rows - 0.5), edge * rows])
    ra, dec = source.pixel_to_world_values(np.clip(xs, -0.5, cols - 0.5), np.clip(ys, -0.5, rows - 0.5))
    tx, ty = target.world_to_pixel_values(ra, dec)
    x0, x1 = (
        max(0, int(np.floor(np.min(tx))) - margin),
        min(target_shape[1], int(np.ceil(np.max(tx))) + margin),
    )
    y0, y1 = (
        max(0, int(np.floor(np.min(ty))) - margin),
        min(target_shape[0], int(np.ceil(np.max(ty))) + margin),
    )
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


class DetectCoaddConfig(TaskConfig):
    threshold: float = Field(default=5.0, gt=0, description="Detection threshold on the summed S/N image.")
    patch_order: int = Field(default=11, ge=6, le=13, description="HEALPix order of the sky patches.")


@register_task
class DetectCoaddTask(Task[DetectCoaddConfig, dict[str, Any]]):
    """The Objects of one patch: detected on all its bands' coadds together, measured in each band."""

    name = "drp.detect_coadd"
    ConfigClass = DetectCoaddConfig
    resources = Resources(cpus=1, memory_mb=1024)

    def run(
        self, data_dir: str, release: str, patch: int, bands: list[str], coadds: list[dict[str, Any]]
    ) -> dict[str, Any]:
        exposures = {}
        with self.timed("read"):
            for c in coadds:
                with fits.open(c["path"], memmap=False) as hdus:
                    exposures[c["band"]] = exposure_from_hdus(hdus, c["path"])
        if not exposures:
            raise DrpError(f"patch {patch}: no coadd to detect on")
        with self.timed("detect"):
            snr_sum = None
            for e in exposures.values():
                sigma = e.psf_fwhm_pixels / drp_measure.FWHM_PER_SIGMA
                bad = (e.mask & drp_measure.BAD) != 0
                from dms.services.prompt.payload.detect import snr_image

                snr = snr_image(e.image, e.variance, bad, sigma)
                snr_sum = snr if snr_sum is None else snr_sum + snr
            assert snr_sum is not None
            combined = snr_sum / np.sqrt(len(exposures))
            any_bad = np.all([(e.mask & drp_measure.BAD) != 0 for e in exposures.values()], axis=0)
            from dms.services.prompt.payload import measure
            from dms.services.prompt.payload.detect import detect

            peaks = detect(combined, any_bad, self.config.threshold)
            peaks = peaks[peaks["sign"] > 0].reset_index(drop=True)
            xy = np.array(
                [
                    measure.refine_peak(combined, int(x), int(y), 1)
                    for x, y in zip(peaks["xpeak"], peaks["ypeak"], strict=True)
                ]
            ).reshape(-1, 2)
        wcs = next(iter(exposures.values())).wcs
        ra, dec = wcs.pixel_to_world_values(xy[:, 0], xy[:, 1])
        ra, dec = np.asarray(ra) % 360.0, np.asarray(dec)
        primary = patch_of(ra, dec, self.config.patch_order) == patch
        xy, ra, dec = xy[primary], ra[primary], dec[primary]
        snr_peak = peaks["peak"].to_numpy(float)[primary]
        sigma_ref = (
            float(np.mean([e.psf_fwhm_pixels for e in exposures.values()])) / drp_measure.FWHM_PER_SIGMA
        )
        position_error = np.sqrt(2.0) * sigma_ref / np.clip(snr_peak, 1e-3, None)
        frame = pd.DataFrame(
            {
                "objectId": np.array([object_id(patch, k) for k in range(len(ra))], dtype=np.int64),
                "coord_ra": ra,
                "coord_dec": dec,
                "coord_raErr": position_error * photometry.PIXEL_SCALE / 3600.0,
                "coord_decErr": position_error * photometry.PIXEL_SCALE / 3600.0,
                "x": xy[:, 0],
                "y": xy[:, 1],
                "xErr": position_error,
                "yErr": position_error,
                "patch": np.int64(patch),
                "tract": np.int64(patch >> TRACT_SHIFT),
                "parentObjectId": np.int64(0),
            }
        )
        best = np.full(len(frame), -np.inf)
        frame["refBand"] = ""
        with self.timed("measure"):
            for band in bands:
                coadd = exposures.get(band)
                if coadd is None:
                    for suffix, value in (
                        ("psfFlux", np.nan),
                        ("psfFluxErr", np.nan),
                        ("psfMag", np.nan),
                        ("psfMagErr", np.nan),
                        ("psfFlux_flag", True),
                    ):
                        frame[f"{band}_{suffix}"] = value
                    continue
                sigma = coadd.psf_fwhm_pixels / drp_measure.FWHM_PER_SIGMA
                phot = drp_measure.psf_photometry(
                    coadd.image, coadd.variance, coadd.mask, frame["x"], frame["y"], sigma
                )
                flux, err = phot["psfFlux"].to_numpy(float), phot["psfFluxErr"].to_numpy(float)
                frame[f"{band}_psfFlux"] = flux
                frame[f"{band}_psfFluxErr"] = err
                with np.errstate(invalid="ignore", divide="ignore"):
                    frame[f"{band}_psfMag"] = np.where(
                        flux > 0, photometry.NJY_AB_ZERO - 2.5 * np.log10(flux), np.nan
                    )
                    frame[f"{band}_psfMagErr"] = np.where(flux > 0, 2.5 / np.log(10) * err / flux, np.nan)
                frame[f"{band}_psfFlux_flag"] = phot["psfFlux_flag"].to_numpy(bool)
                with np.errstate(invalid="ignore", divide="ignore"):
                    snr = np.nan_to_num(flux / err, nan=-np.inf)
                better = snr > best
                frame.loc[better, "refBand"] = band
                best = np.where(better, snr, best)
        path = io.write_parquet(frame, io.work_dir(data_dir, release) / "object" / f"{patch}.parquet")
        return {"patch": patch, "path": path, "n_objects": len(frame)}


class ForcedConfig(TaskConfig):
    background_mesh: int = Field(default=128, ge=16, le=1024, description="Background mesh size, pixels.")


@register_task
class ForcedPhotometryTask(Task[ForcedConfig, dict[str, Any]]):
    """One visit: PSF fluxes of every Object on each of its calibrated exposures (ForcedSource)."""

    name = "drp.forced"
    ConfigClass = ForcedConfig
    resources = Resources(cpus=1, memory_mb=1024)

    def run(
        self,
        data_dir: str,
        release: str,
        calibration: dict[str, Any],
        objects: list[dict[str, Any]],
        kept_objects: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """`objects`: the patches' Object products; `kept_objects`: those a hot-fix does not redo."""
        with self.timed("read"):
            columns = ["objectId", "coord_ra", "coord_dec", "patch", "tract"]
            parts = [pd.read_parquet(o["path"], columns=columns) for o in objects + (kept_objects or [])]
            catalog = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        frames = []
        for ccd in calibration["ccds"]:
            if catalog.empty:
                break
            with self.timed("read"), fits.open(ccd["calexp"], memmap=False) as hdus:
                exposure = exposure_from_hdus(hdus, ccd["calexp"])
            wcs = corrected_wcs(calexp_wcs(ccd["calexp"]), ccd["offset_deg"])
            x, y = wcs.world_to_pixel_values(catalog["coord_ra"].to_numpy(), catalog["coord_dec"].to_numpy())
            rows, cols = exposure.image.shape
            inside = (x >= 0) & (x <= cols - 1) & (y >= 0) & (y <= rows - 1)
            if not inside.any():
                continue
            with self.timed("measure"):
                image, _ = drp_measure.subtract_background(
                    exposure.image, exposure.mask, self.config.background_mesh
                )
                sigma = float(ccd["psf_fwhm_pixels"]) / drp_measure.FWHM_PER_SIGMA
                phot = drp_measure.psf_photometry(
                    image, exposure.variance, exposure.mask, x[inside], y[inside], sigma
                )
            chosen = catalog[inside].reset_index(drop=True)
            scale = float(ccd["flux_scale"])
            frames.append(
                pd.DataFrame(
                    {
                        "objectId": chosen["objectId"].to_numpy(np.int64),
                        "coord_ra": chosen["coord_ra"].to_numpy(float),
                        "coord_dec": chosen["coord_dec"].to_numpy(float),
                        "visit": np.int64(ccd["visit"]),
                        "detector": np.int64(ccd["detector"]),
                        "band": ccd["band"],
                        "psfFlux": phot["psfFlux"].to_numpy(float) * scale,
                        "psfFluxErr": phot["psfFluxErr"].to_numpy(float) * scale,
                        "psfFlux_flag": phot["psfFlux_flag"].to_numpy(bool),
                        "pixelFlags_saturated": phot["pixelFlags_saturated"].to_numpy(bool),
                        "pixelFlags_edge": phot["pixelFlags_edge"].to_numpy(bool),
                        "tract": chosen["tract"].to_numpy(np.int64),
                        "patch": chosen["patch"].to_numpy(np.int64),
                    }
                )
            )
        visit = int(calibration["visit"])
        forced = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["objectId"])
        path = io.write_parquet(forced, io.work_dir(data_dir, release) / "forced" / f"{visit}.parquet")
        return {"visit": visit, "path": path, "n_forced": len(forced)}
