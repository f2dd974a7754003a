"""The night simulator: raws the archiver accepts as LSSTCamSim, calibrations and templates in the Data
Backbone, and truth that the pixels honour (checked with photutils aperture photometry, astropy statistics
and the archiver's own header translation)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from click.testing import CliRunner
from night_support import INJECTED, SIZE, VISITS, Night
from photutils.aperture import CircularAperture, aperture_photometry

from dms.cli import main
from dms.services.archiver.ingest import read_metadata
from dms.services.prompt import photometry
from dms.services.prompt.simulate import simulate_night

pytest_plugins = ["night_support"]  # the simulated night


def test_raws_are_archived_as_lsstcamsim_exposures(simulated: Night) -> None:
    night, backbone = simulated.night, simulated.backbone
    assert len(night.visits) == VISITS
    for visit in night.visits:
        assert set(visit.raws) == set(night.detectors)
        for detector, path in visit.raw_paths.items():
            meta = read_metadata(path)
            assert (meta.instrument, meta.exposure_id, meta.detector) == ("LSSTCamSim", visit.visit, detector)
            assert meta.band == visit.band and meta.simulated and meta.observation_type == "science"
            assert meta.exposure_time == 30.0
            ref = backbone.find("raw", visit.raws[detector].data_id, [visit.raws[detector].run])
            assert ref is not None
    # revisits of the field about half an hour apart, seeing within 0.6-1.2 arcsec
    mjds = [v.mjd for v in night.visits]
    assert np.all(np.diff(mjds) > 0.01)
    assert all(0.6 <= v.seeing_arcsec <= 1.2 for v in night.visits)


def test_truth_kinds_and_their_behaviour(simulated: Night) -> None:
    truth = simulated.night.truth
    science = truth[truth["visit"] != 0]
    template = truth[truth["visit"] == 0]
    assert set(INJECTED) | {"star", "galaxy"} <= set(science["kind"])
    assert not set(template["kind"]) & {"transient", "mover"}  # templates hold neither
    transients = science[science["kind"] == "transient"]
    assert transients.groupby("id")["visit"].nunique().max() == 1  # each in one visit only
    assert (transients["template_flux"] == 0).all()
    movers = science[science["kind"] == "mover"].sort_values(["id", "visit"])
    steps = []
    for _, track in movers.groupby("id"):
        ra, dec = track["ra"].to_numpy(), track["dec"].to_numpy()
        steps.extend(np.hypot(np.diff(ra) * np.cos(np.radians(dec[1:])), np.diff(dec)) * 3600)
    assert steps and 1.5 < np.median(steps) < 6.5  # a few arcsec per visit
    variables = science[science["kind"] == "variable"]
    assert variables.groupby("id")["flux"].std().gt(0).all()  # they vary
    gaia = truth[truth["kind"] == "gaia_star"]
    if len(gaia):
        assert (gaia["id"] > 1_000_000).all()  # real Gaia DR3 source ids


def test_calibrated_pixels_honour_the_truth(simulated: Night) -> None:
    """ISR'd science pixels: sky level, noise, seeing, WCS and the fluxes of isolated bright transients."""
    night, backbone = simulated.night, simulated.backbone
    visit, detector = night.visits[0], night.detectors[0]
    exposure = night.science(backbone, visit.visit, detector)
    scale = photometry.njy_per_electron(visit.band, 30.0)
    sky = photometry.sky_electrons_per_pixel(visit.band, 30.0) * scale
    _mean, median, std = sigma_clipped_stats(exposure.image, sigma=3.0)
    assert median == pytest.approx(sky, rel=0.01)
    assert std**2 == pytest.approx(float(np.median(exposure.variance)), rel=0.08)
    assert exposure.psf_fwhm_pixels * photometry.PIXEL_SCALE == pytest.approx(visit.seeing_arcsec, rel=0.05)
    truth = night.truth[(night.truth["visit"] == visit.visit) & (night.truth["detector"] == detector)]
    x, y = exposure.wcs.world_to_pixel_values(truth["ra"].to_numpy(), truth["dec"].to_numpy())
    assert np.allclose(x, truth["x"], atol=1e-6) and np.allclose(y, truth["y"], atol=1e-6)
    others = truth[["x", "y"]].to_numpy()
    bright = truth[(truth["kind"] == "transient") & (truth["flux"] > 20_000)]
    ratios = []
    radius = 3.0 * exposure.psf_fwhm_pixels
    for _, row in bright.iterrows():
        distance = np.hypot(others[:, 0] - row["x"], others[:, 1] - row["y"])
        inside = radius < row["x"] < SIZE[1] - radius and radius < row["y"] < SIZE[0] - radius
        if np.sort(distance)[1] < 4 * radius or not inside:
            continue  # blended or at the edge
        table = aperture_photometry(exposure.image - median, CircularAperture((row["x"], row["y"]), radius))
        ratios.append(float(table["aperture_sum"][0]) / row["flux"])
    if len(ratios) < 2:
        pytest.skip("too few isolated bright transients on this detector")
    # a 3-FWHM aperture holds all but ~1e-6 of a Gaussian PSF's flux
    assert np.median(ratios) == pytest.approx(1.0, abs=0.03)


def test_templates_and_calibrations_are_in_the_backbone(simulated: Night) -> None:
    night, backbone = simulated.night, simulated.backbone
    for detector in night.detectors:
        bias = night.bias[detector].get(backbone)[0]
        assert bias.header["DETECTOR"] == detector and bias.data.shape == SIZE
        flat = night.flat(detector, "r").get(backbone)[0].data
        assert float(np.mean(flat)) == pytest.approx(1.0, abs=1e-4)
        template = night.load_template(backbone, detector, "r")
        assert template.image.shape == SIZE
        assert template.psf_fwhm_pixels * photometry.PIXEL_SCALE < 0.72  # good-seeing visits only
        # the coadd of three visits is quieter than one visit
        visit = night.science(backbone, night.visits[0].visit, detector)
        assert np.median(template.variance) < 0.5 * np.median(visit.variance)


def test_bad_arguments_are_refused(simulated: Night) -> None:
    deployment = simulated.deployment
    with pytest.raises(ValueError, match="visits must be at least 1"):
        simulate_night(deployment, 0, 1)
    with pytest.raises(ValueError, match=r"detectors must be 1\.\.189"):
        simulate_night(deployment, 1, 500, size=(64, 64))
    with pytest.raises(ValueError, match="bands must be letters"):
        simulate_night(deployment, 1, 1, size=(64, 64), bands="rq")
    with pytest.raises(ValueError, match="size must be within"):
        simulate_night(deployment, 1, 1, size=(8000, 64))


def test_the_command_line_simulates_and_is_repeatable(simulated: Night) -> None:
    runner = CliRunner()
    args = ["night", "simulate", "--visits", "1", "--detectors", "1", "--size", "128", "--seed", "99"]
    args += ["--data-dir", str(simulated.deployment.data_dir)]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "Simulated 1 visits x 1 detectors (128 x 128 pixels)" in first.output
    again = runner.invoke(main, args)  # same seed: the same files, already archived
    assert again.exit_code == 0, again.output
    bad = runner.invoke(
        main, ["night", "simulate", "--size", "8", "--data-dir", str(simulated.deployment.data_dir)]
    )
    assert bad.exit_code != 0 and "--size" in bad.output
