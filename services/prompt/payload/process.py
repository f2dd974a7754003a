"""ProcessDetectorTask ("prompt.process_detector"): one detector of one visit, calibrated exposure and
template in, DiaSources, forced photometry, the difference image and QC metrics out.

Steps (each timed): background (sep's mesh background of the science image), align (the template reprojected
onto the science WCS), psf_match (an Alard-Lupton kernel fitted on bright isolated stars; the sharper image
is the one convolved), subtract, detect (the PSF-matched-filter S/N image above `threshold` sigma, both
signs), measure (PSF flux and error, position, shape, dipole and mask flags, ra/dec through the WCS, science
and template fluxes), forced (PSF fluxes of the known DiaObjects on the difference and science images).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sep
from astropy.stats import sigma_clipped_stats
from astropy.time import Time
from pydantic import Field
from scipy import ndimage
from scipy.signal import fftconvolve

from dms.services.archiver.camera import camera
from dms.services.prompt.exposure import MASK_EDGE, MASK_NO_DATA, MASK_SAT, DetectorResult, Exposure
from dms.services.prompt.payload import measure
from dms.services.prompt.payload.align import align
from dms.services.prompt.payload.detect import detect, psf_kernel, snr_image
from dms.services.prompt.payload.errors import NoTemplateError, PayloadError, UnknownDetectorError
from dms.services.prompt.payload.ids import dia_source_id
from dms.services.prompt.payload.kernel import (
    FWHM_PER_SIGMA,
    KernelConfig,
    MatchingKernel,
    basis_for,
    convolve,
    fit_kernel,
)
from dms.tasks import Resources, Task, TaskConfig, register_task

PIXEL_SCALE = 0.2  # arcsec per pixel


class ProcessDetectorConfig(TaskConfig):
    threshold: float = Field(
        default=5.0, gt=0, description="Detection threshold on the difference, in sigma."
    )
    background_mesh: int = Field(default=128, ge=16, le=1024, description="Background mesh size, pixels.")
    kernel: KernelConfig = Field(default_factory=KernelConfig, description="Alard-Lupton PSF matching.")
    dipole_radius_fwhm: float = Field(
        default=2.0, gt=0, description="A positive and a negative peak this close (in PSF FWHM) are a dipole."
    )
    max_sources: int = Field(default=20_000, ge=1, description="Most DiaSources kept per detector.")


@register_task
class ProcessDetectorTask(Task[ProcessDetectorConfig, DetectorResult]):
    """Difference imaging and measurement of one detector (Alard-Lupton PSF matching)."""

    name = "prompt.process_detector"
    ConfigClass = ProcessDetectorConfig
    resources = Resources(cpus=1, memory_mb=2048)
    _psf_kernel: np.ndarray | None = None  # set by _subtract: the difference's PSF for measurement
    _psf_sigma: float = 1.0

    def run(
        self, science: Exposure, template: Exposure | None, known_objects: pd.DataFrame | None = None
    ) -> DetectorResult:
        where = f"visit {science.visit} detector {science.detector}"
        geometry = camera(str(science.metadata.get("instrument", "LSSTCam"))) or camera("LSSTCam")
        assert geometry is not None
        if science.detector not in {d.id for d in geometry.detectors.values()}:
            raise UnknownDetectorError(f"{where}: the camera has no detector {science.detector}")
        if template is None:
            raise NoTemplateError(f"{where}: no template covers the detector; nothing to subtract")
        if template.band != science.band:
            raise PayloadError(
                f"{where}: the template is for band {template.band}, the visit is {science.band}"
            )
        warnings: list[str] = []
        with self.timed("background"):
            sci_image, sci_level = _subtract_background(science, self.config.background_mesh)
        with self.timed("align"):
            aligned = align(template, science)
            tmpl_image, _ = _subtract_background(aligned, self.config.background_mesh)
        with self.timed("psf_match"):
            kernel, convolve_template = self._match(science, sci_image, aligned, tmpl_image)
        with self.timed("subtract"):
            difference, diff_sigma = self._subtract(
                science, sci_image, aligned, tmpl_image, kernel, convolve_template
            )
        bad = (difference.mask & (MASK_SAT | MASK_NO_DATA | MASK_EDGE)) != 0
        with self.timed("detect"):
            correlation = float(difference.metadata["noise_correlation"])
            snr = snr_image(difference.image, difference.variance, bad, diff_sigma) / correlation
            peaks = detect(snr, bad, self.config.threshold, max_sources=self.config.max_sources)
        with self.timed("measure"):
            sources = self._measure(
                peaks, snr, science, sci_image, aligned, tmpl_image, difference, diff_sigma
            )
        with self.timed("forced"):
            forced = self._forced(known_objects, science, sci_image, difference, diff_sigma)
        clipped = sigma_clipped_stats(snr[~bad & (snr != 0)], sigma=3.0) if (~bad).any() else (0.0, 0.0, 0.0)
        metrics = {
            "noise_correlation": float(difference.metadata["noise_correlation"]),
            "psf_fwhm_arcsec": science.psf_fwhm_pixels * PIXEL_SCALE,
            "template_fwhm_arcsec": template.psf_fwhm_pixels * PIXEL_SCALE,
            "background": sci_level,
            "zero_point": float(science.metadata.get("zero_point", np.nan)),
            "n_sources": float(len(sources)),
            "n_negative": float(sources["isNegative"].sum()) if len(sources) else 0.0,
            "n_dipoles": float(sources["isDipole"].sum()) if len(sources) else 0.0,
            "kernel_residual": kernel.residual_rms,
            "kernel_stamps": float(kernel.stamps),
            "kernel_sum": kernel.sum,
            "template_coverage": float(np.mean((difference.mask & MASK_NO_DATA) == 0)),
            "difference_snr_std": float(clipped[2]),
        }
        if kernel.residual_rms > 2.0:
            warnings.append(f"{where}: PSF-matching residuals are {kernel.residual_rms:.2f} sigma (stamps)")
        return DetectorResult(
            visit=science.visit,
            detector=science.detector,
            dia_sources=sources,
            difference=difference,
            forced_sources=forced,
            metrics=metrics,
            timings=dict(self.timings),
            warnings=warnings,
        )

    def _match(
        self, science: Exposure, sci_image: np.ndarray, aligned: Exposure, tmpl_image: np.ndarray
    ) -> tuple[MatchingKernel, bool]:
        """The kernel convolving the sharper image into the other (ip_diffim's auto mode)."""
        sci_sigma = science.psf_fwhm_pixels / FWHM_PER_SIGMA
        tmpl_sigma = aligned.psf_fwhm_pixels / FWHM_PER_SIGMA
        convolve_template = tmpl_sigma <= sci_sigma
        if convolve_template:
            ref, _ref_var, ref_sigma, target, target_var, target_sigma = (
                tmpl_image,
                aligned.variance,
                tmpl_sigma,
                sci_image,
                science.variance,
                sci_sigma,
            )
        else:
            ref, _ref_var, ref_sigma, target, target_var, target_sigma = (
                sci_image,
                science.variance,
                sci_sigma,
                tmpl_image,
                aligned.variance,
                tmpl_sigma,
            )
        config = self.config.kernel
        half, basis = basis_for(ref_sigma, target_sigma, config)
        # stamps of three FWHM: big enough that a broad kernel term cannot pass for the background term
        stamp_half = int(max(half + 2, np.ceil(3.0 * target_sigma * FWHM_PER_SIGMA)))
        bad = ((science.mask | aligned.mask) & (MASK_SAT | MASK_NO_DATA | MASK_EDGE)) != 0
        # stars come from the template, whichever image is convolved: a science image's brightest isolated
        # point sources may be the very transients and movers the difference is for
        stars = _kernel_stars(
            tmpl_image, aligned.variance, bad, half + stamp_half, config.stamp_snr, 4 * config.max_stamps
        )
        stars, ratio = _consistent(stars, sci_image, tmpl_image, 2.0 * target_sigma * FWHM_PER_SIGMA)
        stars = stars[: config.max_stamps]
        kernel_sum = None
        if config.fix_sum and np.isfinite(ratio) and ratio > 0:
            kernel_sum = ratio if convolve_template else 1.0 / ratio
        kernel = fit_kernel(
            ref,
            target,
            target_var,
            stars,
            half,
            basis,
            stamp_half=stamp_half,
            min_stamps=config.min_stamps,
            clip_sigma=config.clip_sigma,
            kernel_sum=kernel_sum,
        )
        return kernel, convolve_template

    def _psf_model(self) -> np.ndarray:
        """The difference's PSF as the measurement uses it (pixels, centred)."""
        psf = psf_kernel(self._psf_sigma)
        return psf if self._psf_kernel is None else fftconvolve(psf, self._psf_kernel, mode="full")

    def _subtract(
        self,
        science: Exposure,
        sci_image: np.ndarray,
        aligned: Exposure,
        tmpl_image: np.ndarray,
        kernel: MatchingKernel,
        convolve_template: bool,
    ) -> tuple[Exposure, float]:
        k2 = kernel.image**2
        tmpl_var = np.where(np.isfinite(aligned.variance) & (aligned.variance < 1e29), aligned.variance, 0.0)
        # the difference's PSF for measurement: the science PSF, or it convolved with the kernel
        self._psf_kernel = None if convolve_template else kernel.image
        self._psf_sigma = science.psf_fwhm_pixels / FWHM_PER_SIGMA
        if convolve_template:
            matched = convolve(tmpl_image, kernel.image) + kernel.background
            image = sci_image - matched
            variance = science.variance + convolve(tmpl_var, k2)
            sigma = science.psf_fwhm_pixels / FWHM_PER_SIGMA
        else:
            image = convolve(sci_image, kernel.image) + kernel.background - tmpl_image
            variance = convolve(science.variance.astype(np.float64), k2) + tmpl_var
            sigma = aligned.psf_fwhm_pixels / FWHM_PER_SIGMA
        # a masked pixel spoils every pixel the kernel spreads it to
        half = kernel.image.shape[0] // 2
        spread = (aligned.mask if convolve_template else science.mask) & (MASK_SAT | MASK_NO_DATA)
        grown = np.zeros_like(science.mask)
        for bit in (MASK_SAT, MASK_NO_DATA):
            plane = (spread & bit) != 0
            if plane.any():
                grown[ndimage.maximum_filter(plane, size=2 * half + 1)] |= bit
        mask = science.mask | aligned.mask | grown
        variance = np.clip(np.nan_to_num(variance, nan=1e30), 1e-12, 1e30)
        difference = Exposure(
            image=np.nan_to_num(image).astype(np.float32),
            variance=variance.astype(np.float32),
            mask=mask.astype(np.uint32),
            wcs=science.wcs,
            psf_fwhm_pixels=float(sigma * FWHM_PER_SIGMA),
            band=science.band,
            visit=science.visit,
            detector=science.detector,
            mjd_tai=science.mjd_tai,
            exposure_time=science.exposure_time,
            metadata={
                "kernel_sum": kernel.sum,
                "convolved": "template" if convolve_template else "science",
                "noise_correlation": _noise_correlation(
                    kernel.image,
                    self._psf_model(),
                    convolved=float(np.median(tmpl_var if convolve_template else science.variance)),
                    unconvolved=float(np.median(science.variance if convolve_template else tmpl_var)),
                ),
            },
        )
        return difference, float(sigma)

    def _measure(
        self,
        peaks: pd.DataFrame,
        snr: np.ndarray,
        science: Exposure,
        sci_image: np.ndarray,
        aligned: Exposure,
        tmpl_image: np.ndarray,
        difference: Exposure,
        sigma: float,
    ) -> pd.DataFrame:
        if len(peaks) == 0:
            return _empty_sources()
        peaks = peaks.reset_index(drop=True)
        refined = [
            measure.refine_peak(snr, int(xp), int(yp), int(sign))
            for xp, yp, sign in zip(peaks["xpeak"], peaks["ypeak"], peaks["sign"], strict=True)
        ]
        peaks["x"] = [r[0] for r in refined]
        peaks["y"] = [r[1] for r in refined]
        fwhm = sigma * FWHM_PER_SIGMA
        pairs = measure.pair_dipoles(peaks, self.config.dipole_radius_fwhm * fwhm)
        all_peaks = peaks
        correlation = float(difference.metadata["noise_correlation"])
        good_diff = (difference.mask & (MASK_SAT | MASK_NO_DATA)) == 0
        good_sci = (science.mask & MASK_SAT) == 0
        good_tmpl = (aligned.mask & (MASK_SAT | MASK_NO_DATA)) == 0
        sci_sigma = science.psf_fwhm_pixels / FWHM_PER_SIGMA
        tmpl_sigma = aligned.psf_fwhm_pixels / FWHM_PER_SIGMA
        now = float(Time.now().tai.mjd)
        rows = []
        half = int(np.ceil(3 * sigma)) + 1
        columns = [pairs[c].to_numpy() for c in ("x", "y", "sign", "peak", "partner")]
        for x, y, sign, peak_snr, partner in zip(*columns, strict=True):
            x, y, sign = float(x), float(y), int(sign)
            fit = measure.psf_flux(
                difference.image,
                difference.variance,
                good_diff,
                x,
                y,
                self._psf_sigma,
                correlation,
                self._psf_kernel,
            )
            sci = measure.psf_flux(sci_image, science.variance, good_sci, x, y, sci_sigma)
            tmpl = measure.psf_flux(tmpl_image, aligned.variance, good_tmpl, x, y, tmpl_sigma)
            ixx, iyy, ixy = measure.shape_of(difference.image, x, y, sign, sigma)
            flags = measure.stamp_flags(difference.mask, x, y, half)
            row: dict[str, object] = {
                "x": x,
                "y": y,
                "psfFlux": fit.flux,
                "psfFluxErr": fit.error,
                "psfChi2": fit.chi2,
                "psfNdata": fit.ndata,
                "psfFlux_flag": not np.isfinite(fit.flux),
                "psfFlux_flag_edge": fit.truncated,
                "psfFlux_flag_noGoodPixels": fit.ndata == 0,
                "scienceFlux": sci.flux,
                "scienceFluxErr": sci.error,
                "templateFlux": tmpl.flux,
                "templateFluxErr": tmpl.error,
                "snr": abs(fit.flux) / fit.error if fit.error and np.isfinite(fit.flux) else float(peak_snr),
                "ixx": ixx,
                "iyy": iyy,
                "ixy": ixy,
                "ixxPSF": sigma**2,
                "iyyPSF": sigma**2,
                "ixyPSF": 0.0,
                "shape_flag": not np.isfinite(ixx),
                "isNegative": sign < 0,
                "isDipole": False,
                "dipoleFitAttempted": True,
                "dipoleNdata": 0,
                "bboxSize": 2 * half + 1,
                **flags,
            }
            if int(partner) >= 0:
                ox, oy = float(all_peaks["x"].iloc[int(partner)]), float(all_peaks["y"].iloc[int(partner)])
                neg = measure.psf_flux(
                    difference.image,
                    difference.variance,
                    good_diff,
                    ox,
                    oy,
                    self._psf_sigma,
                    correlation,
                    self._psf_kernel,
                )
                dx, dy = ox - x, oy - y
                row.update(
                    {
                        "isDipole": True,
                        "isNegative": False,
                        "dipoleMeanFlux": 0.5 * (abs(fit.flux) + abs(neg.flux)),
                        "dipoleMeanFluxErr": 0.5 * float(np.hypot(fit.error, neg.error)),
                        "dipoleFluxDiff": abs(fit.flux) - abs(neg.flux),
                        "dipoleFluxDiffErr": float(np.hypot(fit.error, neg.error)),
                        "dipoleLength": float(np.hypot(dx, dy)),
                        "dipoleAngle": float(np.degrees(np.arctan2(dy, dx))),
                        "dipoleNdata": fit.ndata + neg.ndata,
                    }
                )
            rows.append(row)
        frame = pd.DataFrame(rows)
        position_error = np.sqrt(2.0) * sigma / np.clip(frame["snr"].to_numpy(float), 1e-3, None)
        ra, dec = science.wcs.pixel_to_world_values(frame["x"].to_numpy(), frame["y"].to_numpy())
        frame.insert(
            0, "diaSourceId", [dia_source_id(science.visit, science.detector, k) for k in range(len(frame))]
        )
        frame.insert(1, "visit", np.int64(science.visit))
        frame.insert(2, "detector", np.int16(science.detector))
        frame.insert(3, "ra", np.asarray(ra) % 360.0)
        frame.insert(4, "dec", np.asarray(dec))
        frame["xErr"] = position_error
        frame["yErr"] = position_error
        frame["raErr"] = position_error * PIXEL_SCALE / 3600.0
        frame["decErr"] = position_error * PIXEL_SCALE / 3600.0
        frame["band"] = science.band
        frame["midpointMjdTai"] = science.mjd_tai
        frame["exposureTime"] = science.exposure_time
        frame["trailNdata"] = 0
        frame["timeProcessedMjdTai"] = now
        return _typed(frame)

    def _forced(
        self,
        known: pd.DataFrame | None,
        science: Exposure,
        sci_image: np.ndarray,
        difference: Exposure,
        sigma: float,
    ) -> pd.DataFrame | None:
        if known is None:
            return None
        missing = {"diaObjectId", "ra", "dec"} - set(known.columns)
        if missing:
            raise PayloadError(f"known_objects lacks columns {sorted(missing)} (needs diaObjectId, ra, dec)")
        columns = [
            "diaForcedSourceId",
            "diaObjectId",
            "ra",
            "dec",
            "visit",
            "detector",
            "psfFlux",
            "psfFluxErr",
            "midpointMjdTai",
            "scienceFlux",
            "scienceFluxErr",
            "band",
            "timeProcessedMjdTai",
        ]
        if len(known) == 0:
            return pd.DataFrame(columns=columns)
        x, y = science.wcs.world_to_pixel_values(known["ra"].to_numpy(float), known["dec"].to_numpy(float))
        rows_n, cols_n = science.image.shape
        inside = (x >= 0) & (x <= cols_n - 1) & (y >= 0) & (y <= rows_n - 1)
        good_diff = (difference.mask & (MASK_SAT | MASK_NO_DATA)) == 0
        good_sci = (science.mask & MASK_SAT) == 0
        sci_sigma = science.psf_fwhm_pixels / FWHM_PER_SIGMA
        now = float(Time.now().tai.mjd)
        rows: list[dict[str, object]] = []
        for k in np.flatnonzero(inside):
            fit = measure.psf_flux(
                difference.image,
                difference.variance,
                good_diff,
                float(x[k]),
                float(y[k]),
                self._psf_sigma,
                float(difference.metadata["noise_correlation"]),
                self._psf_kernel,
            )
            sci = measure.psf_flux(sci_image, science.variance, good_sci, float(x[k]), float(y[k]), sci_sigma)
            if fit.ndata == 0:
                continue
            rows.append(
                {
                    "diaForcedSourceId": dia_source_id(science.visit, science.detector, len(rows)),
                    "diaObjectId": int(known["diaObjectId"].iloc[k]),
                    "ra": float(known["ra"].iloc[k]),
                    "dec": float(known["dec"].iloc[k]),
                    "visit": science.visit,
                    "detector": science.detector,
                    "psfFlux": fit.flux,
                    "psfFluxErr": fit.error,
                    "midpointMjdTai": science.mjd_tai,
                    "scienceFlux": sci.flux,
                    "scienceFluxErr": sci.error,
                    "band": science.band,
                    "timeProcessedMjdTai": now,
                }
            )
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype(
            {"diaForcedSourceId": "int64", "diaObjectId": "int64", "visit": "int64", "detector": "int16"}
        )


def _noise_correlation(kernel: np.ndarray, psf: np.ndarray, *, convolved: float, unconvolved: float) -> float:
    """How much the noise the kernel correlates inflates a PSF-weighted sum over the per-pixel variance.

    The difference's noise is K * n_c + n_u (n_c the convolved image's, n_u the other's). Its per-pixel
    variance is v_c sum(K^2) + v_u, which a PSF fit treats as independent; the PSF-weighted sum's true
    variance is v_c sum((K x P)^2) + v_u sum(P^2)
    (x: correlation; P the PSF model the fit uses). The square root of their ratio (>= 1 for a smoothing
    kernel) scales PSF-flux errors and the detection S/N (the role of ip_diffim's decorrelation, for the
    point-source measurements the payload makes)."""
    smoothed = fftconvolve(psf, kernel[::-1, ::-1], mode="full")  # the noise's correlation with the weights
    true = convolved * float((smoothed**2).sum()) + unconvolved * float((psf**2).sum())
    assumed = (convolved * float((kernel**2).sum()) + unconvolved) * float((psf**2).sum())
    return float(np.sqrt(true / assumed)) if assumed > 0 else 1.0


def _subtract_background(exposure: Exposure, mesh: int) -> tuple[np.ndarray, float]:
    data = np.ascontiguousarray(exposure.image, dtype=np.float64)
    bad = np.ascontiguousarray((exposure.mask & (MASK_SAT | MASK_NO_DATA)) != 0)
    size = int(min(mesh, max(16, min(data.shape) // 2)))
    background = sep.Background(data, mask=bad, bw=size, bh=size)
    return data - background.back(), float(background.globalback)


def _kernel_stars(
    image: np.ndarray, variance: np.ndarray, bad: np.ndarray, edge: int, min_snr: float, count: int
) -> np.ndarray:
    """Bright, isolated, unmasked sources for the kernel fit (x, y), brightest first."""
    data = np.ascontiguousarray(image, dtype=np.float64)
    err = np.ascontiguousarray(np.sqrt(np.clip(np.nan_to_num(variance, nan=1e30), 1e-12, 1e30)))
    found = sep.extract(data, 10.0, err=err, mask=np.ascontiguousarray(bad), minarea=5)
    if len(found) == 0:
        return np.zeros((0, 2))
    xs, ys = found["x"], found["y"]
    rows, cols = image.shape
    distance = np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :])
    np.fill_diagonal(distance, np.inf)
    peak_snr = found["peak"] / err[np.clip(ys.astype(int), 0, rows - 1), np.clip(xs.astype(int), 0, cols - 1)]
    ok = (
        (found["flag"] == 0)
        & (peak_snr > min_snr)
        & (distance.min(axis=1) > edge)
        & (xs > edge)
        & (xs < cols - 1 - edge)
        & (ys > edge)
        & (ys < rows - 1 - edge)
    )
    grown_bad = ndimage.maximum_filter(bad, size=2 * edge + 1)
    ok &= ~grown_bad[ys.astype(int).clip(0, rows - 1), xs.astype(int).clip(0, cols - 1)]
    chosen = np.flatnonzero(ok)
    chosen = chosen[np.argsort(-found["flux"][chosen])][:count]
    return np.stack([xs[chosen], ys[chosen]], axis=1)


def _consistent(
    stars: np.ndarray, science: np.ndarray, template: np.ndarray, radius: float
) -> tuple[np.ndarray, float]:
    """The stars whose science/template aperture-flux ratio is the common one (not variables, not blended
    with a transient): within three robust sigmas of the median ratio; and that ratio (nan if unknown)."""
    if len(stars) < 3:
        return stars, float("nan")
    reach = int(np.ceil(radius))
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    disk = xx**2 + yy**2 <= radius**2
    ratios = []
    for x, y in np.round(stars).astype(int):
        window = (slice(y - reach, y + reach + 1), slice(x - reach, x + reach + 1))
        sci, tmpl = science[window], template[window]
        if sci.shape != disk.shape:
            ratios.append(np.nan)
            continue
        ratios.append(float(sci[disk].sum() / tmpl[disk].sum()) if tmpl[disk].sum() > 0 else np.nan)
    ratio = np.asarray(ratios)
    finite = np.isfinite(ratio)
    if finite.sum() < 3:
        return stars[finite], float("nan")
    centre = np.median(ratio[finite])
    spread = 1.4826 * np.median(np.abs(ratio[finite] - centre)) + 0.01 * abs(centre)
    keep = finite & (np.abs(ratio - centre) < 3 * spread)
    return stars[keep], float(np.median(ratio[keep]))


def _empty_sources() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "diaSourceId": pd.Series([], dtype="int64"),
            "visit": pd.Series([], dtype="int64"),
            "detector": pd.Series([], dtype="int16"),
            "ra": pd.Series([], dtype="float64"),
            "dec": pd.Series([], dtype="float64"),
            "x": pd.Series([], dtype="float32"),
            "y": pd.Series([], dtype="float32"),
            "psfFlux": pd.Series([], dtype="float32"),
            "psfFluxErr": pd.Series([], dtype="float32"),
            "snr": pd.Series([], dtype="float32"),
            "band": pd.Series([], dtype="object"),
            "midpointMjdTai": pd.Series([], dtype="float64"),
            "isNegative": pd.Series([], dtype="bool"),
            "isDipole": pd.Series([], dtype="bool"),
            "psfNdata": pd.Series([], dtype="int32"),
            "trailNdata": pd.Series([], dtype="int32"),
            "dipoleNdata": pd.Series([], dtype="int32"),
            "bboxSize": pd.Series([], dtype="int32"),
            "timeProcessedMjdTai": pd.Series([], dtype="float64"),
        }
    )


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """DiaSource columns with apdb.yaml's types (float columns float32 except ra, dec, times)."""
    ints = {"psfNdata": "int32", "trailNdata": "int32", "dipoleNdata": "int32", "bboxSize": "int32"}
    frame = frame.astype(ints)
    doubles = {"ra", "dec", "midpointMjdTai", "timeProcessedMjdTai"}
    for column in frame.columns:
        if frame[column].dtype == np.float64 and column not in doubles:
            frame[column] = frame[column].astype(np.float32)
    for column in (
        "dipoleMeanFlux",
        "dipoleMeanFluxErr",
        "dipoleFluxDiff",
        "dipoleFluxDiffErr",
        "dipoleLength",
        "dipoleAngle",
    ):
        if column not in frame:
            frame[column] = np.float32(np.nan)
    return frame
