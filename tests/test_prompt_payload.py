"""The Alert Production payload on simulated detectors, against the simulator's truth: completeness and
purity per injected kind, PSF fluxes and their errors, positions, forced photometry; the Alard-Lupton kernel
against a known convolution; alignment against reproject; detection against photutils on a real image; and
bad inputs (corrupt raw, missing or mismatched calibration, unknown detector, no template)."""

from __future__ import annotations

import io
from pathlib import Path

import astropy
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from night_support import INJECTED, Night, Processed
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from dms.services.apdb.tables import apdb_table
from dms.services.prompt.exposure import MASK_NO_DATA, Exposure
from dms.services.prompt.payload.align import align
from dms.services.prompt.payload.detect import detect, psf_kernel, snr_image
from dms.services.prompt.payload.errors import (
    CalibrationError,
    CorruptRawError,
    NoTemplateError,
    UnknownDetectorError,
)
from dms.services.prompt.payload.isr import IsrTask
from dms.services.prompt.payload.kernel import KernelConfig, basis_for, fit_kernel
from dms.services.prompt.payload.process import ProcessDetectorTask, _kernel_stars
from dms.services.prompt.payload.psf import FWHM_PER_SIGMA, adaptive_moments
from dms.tasks import TaskError, lookup_task, run_task

pytest_plugins = ["night_support"]  # the simulated night and the payload's results on it

MATCH_PIXELS = 5.0  # 1 arcsec


def matched(item: Processed) -> pd.DataFrame:
    """The injected sources of one detector-visit with their expected S/N (forced error at the true
    position) and the nearest detection within 1 arcsec (NaN columns when none)."""
    truth = item.truth[item.truth["kind"].isin(INJECTED)].reset_index(drop=True)
    forced = item.result.forced_sources
    assert forced is not None
    errors = forced.set_index("diaObjectId")["psfFluxErr"].reindex(range(len(truth))).to_numpy()
    truth = truth.assign(forced_err=errors, expected_snr=np.abs(truth["dflux"]) / errors)
    sources = item.result.dia_sources
    if len(sources) == 0:
        return truth.assign(found=False)
    tree = cKDTree(sources[["x", "y"]].to_numpy(float))
    distance, index = tree.query(truth[["x", "y"]].to_numpy(float))
    found = distance <= MATCH_PIXELS
    picked = sources.iloc[np.minimum(index, len(sources) - 1)].reset_index(drop=True)
    return truth.assign(
        found=found,
        distance=np.where(found, distance, np.nan),
        psfFlux=np.where(found, picked["psfFlux"], np.nan),
        psfFluxErr=np.where(found, picked["psfFluxErr"], np.nan),
        ra_found=np.where(found, picked["ra"], np.nan),
        dec_found=np.where(found, picked["dec"], np.nan),
    )


@pytest.fixture(scope="module")
def matches(processed: dict[tuple[int, int], Processed]) -> pd.DataFrame:
    return pd.concat([matched(item) for item in processed.values()], ignore_index=True)


def test_the_task_is_registered_and_runs_through_run_task(simulated: Night) -> None:
    assert lookup_task("prompt.process_detector") is ProcessDetectorTask
    assert lookup_task("prompt.isr") is IsrTask
    night, backbone = simulated.night, simulated.backbone
    visit, detector = night.visits[0], night.detectors[0]
    outcome = run_task(
        ProcessDetectorTask,
        {"threshold": 6.0},
        science=night.science(backbone, visit.visit, detector),
        template=night.load_template(backbone, detector, visit.band),
        data_id={"visit": visit.visit, "detector": detector},
    )
    assert outcome.ok and outcome.result is not None
    steps = {"background", "align", "psf_match", "subtract", "detect", "measure", "forced"}
    assert steps <= set(outcome.timings)
    assert (outcome.result.dia_sources["snr"] >= 5.5).all()  # a 6 sigma detection has a PSF S/N near 6


def test_completeness_per_kind_for_bright_sources(matches: pd.DataFrame) -> None:
    """Injected sources with an expected S/N above 10 are found (>= 90% per kind; the simulation has a few
    dozen of each, so one miss in ten is allowed for blends with bright stars and chip edges)."""
    bright = matches[matches["expected_snr"] > 10]
    report = bright.groupby("kind")["found"].agg(["mean", "size"])
    print(report)
    assert set(report.index) == set(INJECTED)
    for kind, row in report.iterrows():
        assert row["size"] >= 5, f"too few bright {kind}s to judge ({row['size']})"
        assert row["mean"] >= 0.9, f"{kind}: {row['mean']:.0%} of {row['size']} recovered"
    # and the faint ones are not all found (the threshold is real): S/N < 3 are mostly missed
    faint = matches[matches["expected_snr"] < 3]
    if len(faint) >= 5:
        assert faint["found"].mean() < 0.5


def test_purity_spurious_detections_per_detector(processed: dict[tuple[int, int], Processed]) -> None:
    """Detections away from every injected source (static stars and galaxies should subtract away)."""
    spurious = []
    for item in processed.values():
        sources = item.result.dia_sources
        truth = item.truth[item.truth["kind"].isin(INJECTED)]
        if len(sources) == 0:
            spurious.append(0)
            continue
        distance, _ = cKDTree(truth[["x", "y"]].to_numpy(float)).query(sources[["x", "y"]].to_numpy(float))
        clean = ~sources["pixelFlags_saturated"].to_numpy(bool)
        spurious.append(int(((distance > MATCH_PIXELS) & clean).sum()))
        if spurious[-1] > 3:
            print(
                sources[(distance > MATCH_PIXELS) & clean][
                    ["x", "y", "psfFlux", "snr", "isNegative", "isDipole"]
                ]
            )
    print("spurious per detector-visit:", spurious)
    assert np.mean(spurious) <= 3.0
    assert max(spurious) <= 8


def test_psf_flux_against_truth_and_the_pull_distribution(matches: pd.DataFrame) -> None:
    found = matches[matches["found"] & (matches["expected_snr"] > 10)]
    bright = found[found["expected_snr"] > 50]
    ratio = bright["psfFlux"] / bright["dflux"]
    assert len(bright) >= 10
    assert abs(float(np.median(ratio)) - 1.0) < 0.03, ratio.describe()
    # pulls where noise dominates: S/N < 50 in the science image too (a bright variable star's difference
    # carries ~1% of its whole flux as PSF-matching residual, which outweighs the noise there)
    moderate = found[np.abs(found["flux"]) / found["forced_err"] < 50]
    assert len(moderate) >= 15
    pull = (moderate["psfFlux"] - moderate["dflux"]) / moderate["psfFluxErr"]
    clipped_mean, _, clipped_std = sigma_clipped_stats(pull.to_numpy(), sigma=4.0)
    print(f"pull: mean {clipped_mean:.2f} std {clipped_std:.2f} over {len(pull)}")
    assert 0.8 <= clipped_std <= 1.3
    assert abs(clipped_mean) < 0.5


def test_positions_against_truth(matches: pd.DataFrame) -> None:
    found = matches[matches["found"] & (matches["expected_snr"] > 20)]
    cos_dec = np.cos(np.radians(found["dec"]))
    separation = (
        np.hypot((found["ra_found"] - found["ra"]) * cos_dec, found["dec_found"] - found["dec"]) * 3600
    )
    assert float(np.median(separation)) < 0.1
    assert float(np.percentile(separation, 90)) < 0.2


def test_forced_photometry_at_known_objects(processed: dict[tuple[int, int], Processed]) -> None:
    """Forced PSF fluxes on the difference equal the change in flux; on the science image the flux."""
    pulls, ratios = [], []
    for item in processed.values():
        forced = item.result.forced_sources
        assert forced is not None and len(forced) > 0
        assert set(apdb_table("DiaForcedSource").required) <= set(forced.columns)
        truth = item.truth[item.truth["kind"].isin(INJECTED)].reset_index(drop=True)
        joined = forced.merge(truth, left_on="diaObjectId", right_index=True, suffixes=("", "_truth"))
        moderate = joined[np.abs(joined["flux"]) / joined["psfFluxErr"] < 50]  # noise-dominated (see above)
        pulls.extend(((moderate["psfFlux"] - moderate["dflux"]) / moderate["psfFluxErr"]).tolist())
        bright = joined[joined["flux"] / joined["scienceFluxErr"] > 50]
        ratios.extend((bright["scienceFlux"] / bright["flux"]).tolist())
    _, _, std = sigma_clipped_stats(np.asarray(pulls), sigma=4.0)
    assert 0.8 <= std <= 1.3
    assert abs(np.median(ratios) - 1.0) < 0.03


def test_dia_sources_have_apdb_columns_and_unique_ids(processed: dict[tuple[int, int], Processed]) -> None:
    table = apdb_table("DiaSource")
    frames = [item.result.dia_sources for item in processed.values()]
    everything = pd.concat(frames, ignore_index=True)
    assert set(everything.columns) <= set(table.columns), set(everything.columns) - set(table.columns)
    assert set(table.required) <= set(everything.columns)
    assert everything["diaSourceId"].is_unique
    assert everything["diaSourceId"].dtype == np.int64 and (everything["diaSourceId"] > 0).all()
    for (visit, detector), item in processed.items():
        sources = item.result.dia_sources
        assert (sources["visit"] == visit).all() and (sources["detector"] == detector).all()
        assert (sources["band"] == "r").all()


def test_qc_metrics(processed: dict[tuple[int, int], Processed], simulated: Night) -> None:
    for (visit, detector), item in processed.items():
        metrics = item.result.metrics
        print(visit, detector, {k: round(v, 3) for k, v in metrics.items()})
        seeing = simulated.night.visit(visit).seeing_arcsec
        assert metrics["psf_fwhm_arcsec"] == pytest.approx(seeing, rel=0.05)
        assert metrics["kernel_residual"] < 1.5
        assert metrics["kernel_sum"] == pytest.approx(1.0, abs=0.03)  # both images in nJy
        assert metrics["n_sources"] == len(item.result.dia_sources)
        assert 0.8 < metrics["difference_snr_std"] < 1.2


def test_template_minus_itself_is_zero_and_an_independent_visit_is_noise(
    processed: dict[tuple[int, int], Processed],
) -> None:
    item = next(iter(processed.values()))
    template = item.template
    same = ProcessDetectorTask().run(template_as_science(template), template)
    assert len(same.dia_sources) == 0
    assert same.difference is not None
    residual = same.difference.image / np.sqrt(same.difference.variance)
    good = same.difference.mask == 0
    assert float(np.std(residual[good])) < 0.2  # the kernel is a delta function: nothing is left
    # a science visit minus the template, away from the injected sources: unit-variance noise
    difference = item.result.difference
    assert difference is not None
    snr = difference.image / np.sqrt(difference.variance)
    keep = difference.mask == 0
    yy, xx = np.mgrid[0 : snr.shape[0], 0 : snr.shape[1]]
    for x, y in item.truth[item.truth["kind"].isin(INJECTED)][["x", "y"]].to_numpy():
        keep &= (xx - x) ** 2 + (yy - y) ** 2 > 15**2
    mean, _, std = sigma_clipped_stats(snr[keep], sigma=4.0)
    assert abs(mean) < 0.05 and 0.85 < std < 1.15


def template_as_science(template: Exposure) -> Exposure:
    return Exposure(
        image=template.image,
        variance=template.variance,
        mask=template.mask & ~np.uint32(MASK_NO_DATA),
        wcs=template.wcs,
        psf_fwhm_pixels=template.psf_fwhm_pixels,
        band=template.band,
        visit=7,
        detector=template.detector,
        mjd_tai=template.mjd_tai,
        metadata={"instrument": "LSSTCamSim"},
    )


def test_alard_lupton_recovers_a_known_gaussian_convolution(
    processed: dict[tuple[int, int], Processed],
) -> None:
    template = next(iter(processed.values())).template
    image = template.image.astype(np.float64)
    sigma = 1.6
    y, x = np.mgrid[-15:16, -15:16]
    truth = np.exp(-0.5 * (x**2 + y**2) / sigma**2)
    truth *= 0.9 / truth.sum()  # and a photometric scale of 0.9
    rng = np.random.default_rng(3)
    noise = float(np.median(template.variance))
    science = fftconvolve(image, truth, mode="same") + rng.normal(0.0, np.sqrt(noise), image.shape) + 25.0
    template_sigma = template.psf_fwhm_pixels / FWHM_PER_SIGMA
    half, basis = basis_for(template_sigma, float(np.hypot(template_sigma, sigma)), KernelConfig())
    stars = _kernel_stars(image, template.variance, template.mask != 0, 2 * half, 20.0, 80)
    kernel = fit_kernel(image, science, np.full(image.shape, noise), stars, half, basis, stamp_half=half)
    assert kernel.sum == pytest.approx(0.9, rel=0.01)  # template noise biases it low a little
    assert kernel.background == pytest.approx(25.0, abs=2.0)
    centre = truth[15 - half : 15 + half + 1, 15 - half : 15 + half + 1]
    # widths by adaptive moments (one estimator for both; plain second moments amplify the fit's noisy wings)
    _, _, ixx, iyy, _ = adaptive_moments(kernel.image, half, half, sigma)
    _, _, txx, tyy, _ = adaptive_moments(centre, half, half, sigma)
    assert ixx + iyy == pytest.approx(txx + tyy, rel=0.03)
    # what matters: a star of the template PSF convolved with either kernel looks the same (to 2% of the peak)
    star = psf_kernel(template_sigma)
    ours, theirs = fftconvolve(star, kernel.image), fftconvolve(star, centre)
    assert np.max(np.abs(ours - theirs)) < 0.02 * theirs.max()
    assert kernel.residual_rms < 1.2


def test_alignment_equals_reproject(processed: dict[tuple[int, int], Processed]) -> None:
    from reproject import reproject_interp

    item = next(iter(processed.values()))
    ours = align(item.template, item.science)
    theirs, footprint = reproject_interp(
        (item.template.image.astype(np.float64), item.template.wcs),
        item.science.wcs,
        shape_out=item.science.image.shape,
        order="bicubic",
    )
    inside = ((ours.mask & MASK_NO_DATA) == 0) & (footprint > 0.99)
    assert inside.mean() > 0.8
    scale = float(np.sqrt(np.median(item.template.variance)))
    difference = np.abs(ours.image[inside] - theirs[inside])
    assert float(np.percentile(difference, 99)) < 0.5 * scale  # equal up to the two cubic kernels


def test_detection_agrees_with_photutils_on_a_real_image() -> None:
    """A real photographic plate astropy ships (DSS, 100 x 100; or photutils' star image when it can be
    fetched): the brightest stars DAOStarFinder finds are the ones our matched-filter detection finds."""
    photutils = pytest.importorskip("photutils.detection")
    try:
        from photutils.datasets import load_star_image

        data = load_star_image().data[:400, :400].astype(np.float64)
    except Exception:  # offline: the astropy sample plate
        path = Path(astropy.__file__).parent / "wcs/tests/data/dss.14.29.56-62.41.05.fits.gz"
        if not path.exists():
            pytest.skip("no real FITS image available offline")
        data = fits.getdata(path).astype(np.float64)
    _, median, std = sigma_clipped_stats(data, sigma=3.0)
    finder = photutils.DAOStarFinder(fwhm=3.0, threshold=10.0 * std)
    stars = finder(data - median)
    assert stars is not None and len(stars) >= 5
    theirs = np.stack([stars["xcentroid"], stars["ycentroid"]], axis=1)
    variance = np.full(data.shape, std**2)
    bad = np.zeros(data.shape, bool)
    snr = snr_image(data - median, variance, bad, 3.0 / FWHM_PER_SIGMA)
    ours = detect(snr, bad, 10.0)
    ours = ours[ours["sign"] > 0]
    distance, _ = cKDTree(ours[["x", "y"]].to_numpy(float)).query(theirs)
    assert np.mean(distance < 1.5) >= 0.9


# ---- bad input -------------------------------------------------------------------------------------------


def test_corrupt_raw_is_a_clear_error(simulated: Night) -> None:
    night, backbone = simulated.night, simulated.backbone
    visit, detector = night.visits[0], night.detectors[0]
    raw_bytes = night.visits[0].raw_paths[detector].read_bytes()
    bias, flat = night.bias[detector].get(backbone), night.flat(detector, visit.band).get(backbone)
    with pytest.raises(CorruptRawError, match="not a readable FITS raw"):
        IsrTask().run(raw=raw_bytes[: len(raw_bytes) // 2], bias=bias, flat=flat)
    with pytest.raises(CorruptRawError, match="not a readable FITS raw"):
        IsrTask().run(raw=b"SIMPLE  = garbage" * 100, bias=bias, flat=flat)
    hdus = fits.open(io.BytesIO(raw_bytes))
    del hdus[0].header["EXPTIME"]
    with pytest.raises(CorruptRawError, match="EXPTIME"):
        IsrTask().run(raw=hdus, bias=bias, flat=flat)


def test_missing_or_mismatched_calibration(simulated: Night) -> None:
    night, backbone = simulated.night, simulated.backbone
    visit = night.visits[0]
    first, second = night.detectors[:2]
    raw = night.raw(visit.visit, first).get(backbone)
    bias, flat = night.bias[first].get(backbone), night.flat(first, visit.band).get(backbone)
    with pytest.raises(CalibrationError, match="no master bias"):
        IsrTask().run(raw=raw, bias=None, flat=flat)
    with pytest.raises(CalibrationError, match="no master flat"):
        IsrTask().run(raw=raw, bias=bias, flat=None)
    other_flat = night.flat(second, visit.band).get(backbone)
    with pytest.raises(CalibrationError, match=f"for detector {second}"):
        IsrTask().run(raw=raw, bias=bias, flat=other_flat)
    with pytest.raises(CalibrationError, match="pixels, the raw"):
        IsrTask().run(raw=raw, bias=fits.HDUList([fits.PrimaryHDU(np.zeros((10, 10)))]), flat=flat)
    with pytest.raises(CalibrationError, match="given a flat as the master bias"):
        IsrTask().run(raw=raw, bias=flat, flat=flat)


def test_unknown_detector(simulated: Night) -> None:
    night, backbone = simulated.night, simulated.backbone
    visit, detector = night.visits[0], night.detectors[0]
    hdus = fits.open(io.BytesIO(night.visits[0].raw_paths[detector].read_bytes()))
    hdus[0].header["CCDSLOT"] = "S99"
    bias, flat = night.bias[detector].get(backbone), night.flat(detector, visit.band).get(backbone)
    with pytest.raises(UnknownDetectorError, match="no detector R22_S99"):
        IsrTask().run(raw=hdus, bias=bias, flat=flat)
    science = night.science(backbone, visit.visit, detector)
    science.detector = 999
    with pytest.raises(UnknownDetectorError, match="no detector 999"):
        ProcessDetectorTask().run(science, night.load_template(backbone, detector, visit.band))


def test_no_template_is_a_clear_error_the_service_can_record(simulated: Night) -> None:
    night, backbone = simulated.night, simulated.backbone
    visit, detector = night.visits[0], night.detectors[0]
    science = night.science(backbone, visit.visit, detector)
    with pytest.raises(NoTemplateError, match="no template"):
        ProcessDetectorTask().run(science, None)
    outcome = run_task(ProcessDetectorTask, science=science, template=None, raise_errors=False)
    assert not outcome.ok and "no template" in (outcome.error or "")
    with pytest.raises(TaskError, match=r"prompt\.process_detector"):
        run_task(ProcessDetectorTask, science=science, template=None)
    # a template of another field does not overlap: also no template
    far = night.load_template(backbone, detector, visit.band)
    far.wcs.wcs.crval = [far.wcs.wcs.crval[0] + 10.0, far.wcs.wcs.crval[1]]
    far.wcs.wcs.set()
    with pytest.raises(NoTemplateError, match="does not overlap"):
        ProcessDetectorTask().run(science, far)


def test_the_apdb_accepts_the_payload_frames_as_they_are(processed: dict[tuple[int, int], Processed]) -> None:
    """The APDB's own input check (types of apdb.yaml, required columns, `_healpix_29`) takes the frames."""
    from dms.services.apdb.api import _prepare

    item = next(iter(processed.values()))
    sources = _prepare(apdb_table("DiaSource"), item.result.dia_sources)
    assert sources.num_rows == len(item.result.dia_sources)
    assert item.result.forced_sources is not None
    forced = _prepare(apdb_table("DiaForcedSource"), item.result.forced_sources)
    assert forced.num_rows == len(item.result.forced_sources)
