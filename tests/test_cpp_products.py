"""The rest of the Calibration Products Production: a crosstalk matrix recovered from frames simulated with
a known one, templates that equal a numpy coadd of the good-seeing visits and that prompt processing finds
in the Data Backbone, and the `cpp` production whose kind (daily, intermediate, annual) chooses the raws
archived in a day range, run from `dms cpp run` and from an OCS command; a corrupt raw fails its task only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.wcs import WCS
from backbone_support import RESET
from batch_support import run, submit, tasks
from click.testing import CliRunner
from distributed import Client

from dms.cli import main
from dms.deployment import Deployment
from dms.services.backbone.client import Backbone
from dms.services.batch import store
from dms.services.batch.errors import BatchError
from dms.services.batch.ocs import run_command
from dms.services.batch.productions import workflow_for
from dms.services.cpp import registry
from dms.services.prompt.exposure import Exposure
from dms.services.prompt.payload.fitsio import exposure_from_hdus, exposure_to_hdus

pytest_plugins = ["batch_support"]

N_AMPS, AMP_WIDTH, ROWS = 4, 60, 120


def known_matrix(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(1e-4, 8e-4, (N_AMPS, N_AMPS)) * rng.choice([-1, 1], (N_AMPS, N_AMPS))
    np.fill_diagonal(matrix, 0.0)
    return matrix


def readout_columns(amp: int) -> np.ndarray:
    """Image columns of an amplifier in its readout order (odd amplifiers read out right to left)."""
    columns = np.arange(amp * AMP_WIDTH, (amp + 1) * AMP_WIDTH)
    return columns if amp % 2 == 0 else columns[::-1]


def star_frame(rng: np.random.Generator, matrix: np.ndarray, stars: int = 10) -> np.ndarray:
    """Background, bright Gaussian stars, then crosstalk (pixel by pixel in readout order), then noise."""
    yy, xx = np.mgrid[:ROWS, : N_AMPS * AMP_WIDTH]
    sky = np.full(yy.shape, 1000.0)
    for _ in range(stars):
        y0, x0 = rng.uniform(5, ROWS - 5), rng.uniform(3, N_AMPS * AMP_WIDTH - 3)
        sky += rng.uniform(2e4, 6e4) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 1.8**2))
    raw = sky.copy()
    for victim in range(N_AMPS):
        for source in range(N_AMPS):
            if victim != source:
                raw[:, readout_columns(victim)] += matrix[victim, source] * sky[:, readout_columns(source)]
    return raw + rng.normal(0, 5, raw.shape)


def test_crosstalk_matrix_is_recovered(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    matrix = known_matrix()
    rng = np.random.default_rng(4)
    frames = []
    for i in range(8):
        path = tmp_path / f"science{i}.fits"
        fits.PrimaryHDU(star_frame(rng, matrix, stars=15).astype(np.float32)).writeto(path)
        frames.append(str(path))
    entry = {
        "label": "crosstalk-5",
        "task": "cpp.crosstalk",
        "config": {"amplifiers": N_AMPS, "threshold": 3000},
        "data_id": {"instrument": "LSSTCam", "detector": 5},
        "args": {"frames": frames, "output": str(tmp_path / "crosstalk.fits")},
        "outputs": ["crosstalk-5"],
    }
    job = submit(batch_conn, {"name": "xtalk", "priority": "cpp", "tasks": [entry]})
    run(conninfo, dask_client)
    assert tasks(batch_conn, job)["crosstalk-5"]["state"] == "done"
    with fits.open(tmp_path / "crosstalk.fits") as hdus:
        estimate, errors = np.asarray(hdus[0].data), np.asarray(hdus["ERRORS"].data)
        assert hdus[0].header["CALTYPE"] == "crosstalk"
    off = ~np.eye(N_AMPS, dtype=bool)
    # coefficients are 1e-4 .. 8e-4 in size; the fit's errors (~2e-5) come from the 5 ADU read noise
    assert np.abs(estimate - matrix)[off].max() < 7e-5
    assert np.median(np.abs(estimate - matrix)[off]) < 2e-5
    assert np.abs((estimate - matrix)[off] / errors[off]).max() < 5
    assert errors[off].max() < 3e-5
    assert np.all(np.sign(estimate[off]) == np.sign(matrix[off]))
    # a frame with nothing bright cannot give a matrix: a clear error on the task
    flat = tmp_path / "empty.fits"
    fits.PrimaryHDU(rng.normal(1000, 5, (ROWS, N_AMPS * AMP_WIDTH)).astype(np.float32)).writeto(flat)
    entry = {**entry, "label": "crosstalk-6", "outputs": [], "max_attempts": 1}
    entry["args"] = {"frames": [str(flat)], "output": str(tmp_path / "x6.fits")}
    job = submit(batch_conn, {"name": "xtalk-empty", "tasks": [entry]})
    run(conninfo, dask_client)
    assert "pixels above 3000" in tasks(batch_conn, job)["crosstalk-6"]["error"]


def _exposure(rng: np.random.Generator, wcs: WCS, truth: np.ndarray, visit: int, fwhm: float) -> Exposure:
    noise = rng.uniform(5, 20)
    mask = np.zeros(truth.shape, np.uint32)
    mask[rng.integers(0, truth.shape[0], 10), rng.integers(0, truth.shape[1], 10)] = 4
    return Exposure(
        image=(truth + rng.normal(0, noise, truth.shape)).astype(np.float32),
        variance=np.full(truth.shape, noise**2, np.float32)
        * rng.uniform(0.9, 1.1, truth.shape).astype(np.float32),
        mask=mask,
        wcs=wcs,
        psf_fwhm_pixels=fwhm,
        band="g",
        visit=visit,
        detector=9,
        mjd_tai=61000.0 + visit / 100,
    )


def test_template_equals_a_numpy_coadd_and_prompt_processing_finds_it(
    batch_conn: psycopg.Connection,
    conninfo: str,
    dask_client: Client,
    batch_deployment: Deployment,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(9)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.2]
    wcs.wcs.crpix = [40.0, 30.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    truth = rng.uniform(0, 500, (60, 80))
    seeing = [2.5, 3.1, 6.0, 2.8, 5.2, 3.6]  # pixels: two visits worse than the 4-pixel cut
    exposures = [_exposure(rng, wcs, truth, 100 + i, f) for i, f in enumerate(seeing)]
    paths = []
    for e in exposures:
        path = tmp_path / f"calexp{e.visit}.fits"
        exposure_to_hdus(e).writeto(path)
        paths.append(str(path))
    data_id = {"instrument": "LSSTCam", "detector": 9, "band": "g"}
    entry = {
        "label": "template-9-g",
        "task": "cpp.template",
        "data_id": data_id,
        "args": {
            "exposures": paths,
            "output": str(tmp_path / "template.fits"),
            "data_dir": str(batch_deployment.data_dir),
            "run": "templates/cpp-test",
        },
        "outputs": ["template-9-g"],
    }
    job = submit(batch_conn, {"name": "templates", "priority": "cpp", "tasks": [entry]})
    run(conninfo, dask_client)
    t = tasks(batch_conn, job)["template-9-g"]
    assert t["state"] == "done", t["error"]

    good = [e for e in exposures if e.psf_fwhm_pixels <= 4.0]
    images = np.ma.masked_array([e.image for e in good], mask=[e.mask != 0 for e in good]).astype(np.float64)
    weights = np.ma.masked_array([1.0 / e.variance.astype(np.float64) for e in good], mask=images.mask)
    expected = np.ma.average(images, axis=0, weights=weights)
    expected_var = 1.0 / weights.sum(axis=0)

    backbone = Backbone(batch_deployment)
    ref = backbone.find("template", data_id, ["templates/cpp-test"])
    assert ref is not None
    template = exposure_from_hdus(fits.HDUList.fromstring(backbone.read_bytes(ref)), "template")
    np.testing.assert_allclose(template.image, expected.filled(np.nan), rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(template.variance, expected_var.filled(np.inf), rtol=1e-6)
    assert template.psf_fwhm_pixels == max(e.psf_fwhm_pixels for e in good)
    assert np.abs(template.image - truth).std() < np.abs(good[0].image - truth).std() / 1.5  # less noisy
    product = store.dataset_values(batch_conn, job)["template-9-g"]
    assert product["visits"] == [e.visit for e in good]
    assert product["region"]["healpix_order"] == 7

    # too few good-seeing visits: the task says so
    entry = {
        **entry,
        "label": "template-bad",
        "config": {"max_fwhm_pixels": 2.6},
        "outputs": [],
        "max_attempts": 1,
    }
    job = submit(batch_conn, {"name": "templates-bad", "tasks": [entry]})
    run(conninfo, dask_client)
    assert "1 of 6 visits have a PSF FWHM <= 2.6 pixels" in tasks(batch_conn, job)["template-bad"]["error"]


DAY = 20261203


def _archive(backbone: Backbone, root: Path, kind: str, day_obs: int, seq: int, image: np.ndarray) -> Path:
    from backbone_support import lsstcam_raw

    from dms.services.archiver.ingest import archive_file

    path = lsstcam_raw(root / f"{kind}-{day_obs}-{seq}.fits", day_obs=day_obs, seq_num=seq, amplifiers=1)
    with fits.open(path, mode="update") as hdus:
        hdus[0].header["IMGTYPE"] = kind.upper()
        hdus[0].header["EXPTIME"] = {"bias": 0.0, "dark": 30.0, "flat": 10.0, "object": 30.0}[kind]
        hdus[1].data = image.astype(np.float32)
    archive_file(backbone, path)
    return path


@pytest.fixture(scope="module")
def archived(batch_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backbone]:
    """Raws of one LSSTCam detector: biases on day_obs - 10 and day_obs; darks, flats, science on day_obs
    (archived once for the module; the test corrupting one runs last)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DMS_DATABASE_URL", str(batch_deployment.config.database_url))
        with batch_deployment.engine().begin() as conn:
            conn.execute(sa.text(RESET))
        yield _archive_survey(batch_deployment, tmp_path_factory.mktemp("raws"))


def _archive_survey(batch_deployment: Deployment, tmp_path: Path) -> Backbone:
    backbone = Backbone(batch_deployment)
    rng = np.random.default_rng(1)
    shape = (ROWS, N_AMPS * AMP_WIDTH)
    earlier = int((dt.date(2026, 12, 3) - dt.timedelta(days=10)).strftime("%Y%m%d"))
    for seq in range(3):
        _archive(backbone, tmp_path, "bias", earlier, 10 + seq, rng.normal(1000, 5, shape))
    seq = 20
    for kind, count in (("bias", 3), ("dark", 3), ("flat", 3), ("object", 2)):
        for _ in range(count):
            signal = {"bias": 0.0, "dark": 3.0, "flat": 20000.0, "object": 0.0}[kind]
            image = rng.normal(1000 + signal, 5, shape)
            if kind == "object":
                image = star_frame(rng, known_matrix(), stars=15)
            _archive(backbone, tmp_path, kind, DAY, seq, image)
            seq += 1
    return backbone


def test_kind_chooses_the_day_range(archived: Backbone, batch_deployment: Deployment) -> None:
    base = {"day_obs": DAY, "data_dir": str(batch_deployment.data_dir), "amplifiers": N_AMPS}
    daily = {t.label: t for t in workflow_for("cpp", {**base, "kind": "daily"}).tasks}
    monthly = {t.label: t for t in workflow_for("cpp", {**base, "kind": "intermediate"}).tasks}
    detector = next(label for label in daily if label.startswith("bias-")).split("-")[1]
    assert len(daily[f"bias-{detector}"].args["frames"]) == 3
    assert len(monthly[f"bias-{detector}"].args["frames"]) == 6
    assert len(daily[f"dark-{detector}"].args["frames"]) == 3
    assert set(daily) == {
        f"bias-{detector}",
        f"dark-{detector}",
        f"flat-{detector}-r_57",
        f"crosstalk-{detector}",
    }
    assert daily[f"flat-{detector}-r_57"].inputs == {"bias": f"bias-{detector}", "dark": f"dark-{detector}"}
    with pytest.raises(BatchError, match="no raw bias, dark or flat frames of LSSTCam from day_obs 20261204"):
        workflow_for("cpp", {**base, "kind": "daily", "day_obs": 20261204})
    with pytest.raises(BatchError, match="kind: Input should be 'daily', 'intermediate' or 'annual'"):
        workflow_for("cpp", {**base, "kind": "weekly"})


def test_without_data_dir_the_production_is_the_deployment_dms_opens(
    archived: Backbone, batch_deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Started outside the CLI and the OCS server (no data_dir, no DMS_DATA_DIR), the raws come from the
    per-user deployment and the masters are written under it, not under the current directory."""
    monkeypatch.delenv("DMS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # platformdirs' per-user data directory
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg" / "dms").symlink_to(batch_deployment.data_dir)
    monkeypatch.chdir(tmp_path / "xdg")
    tasks = workflow_for("cpp", {"day_obs": DAY, "kind": "daily", "amplifiers": N_AMPS}).tasks
    outputs = {Path(t.args["output"]).resolve().parent for t in tasks}
    assert outputs == {(batch_deployment.data_dir / "cpp" / "daily" / str(DAY)).resolve()}
    assert [p.name for p in (tmp_path / "xdg").iterdir()] == ["dms"]


def test_dms_cpp_run_and_an_ocs_command(
    archived: Backbone, batch_deployment: Deployment, batch_conn: psycopg.Connection
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "--data-dir",
            str(batch_deployment.data_dir),
            "cpp",
            "run",
            "--kind",
            "daily",
            "--day-obs",
            str(DAY),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Certified 3 master calibration(s)" in result.output and "crosstalk" in result.output
    when = dt.datetime(2026, 12, 4, 3)
    detector = int(batch_conn.execute("SELECT detector FROM dms.calibration LIMIT 1").fetchone()[0])  # type: ignore[index]
    flat = registry.find(
        batch_conn, "flat", {"instrument": "LSSTCam", "detector": detector, "physical_filter": "r_57"}, when
    )
    assert fits.getheader(flat.path)["NCOMBINE"] == 3

    command = {"command": "runProduction", "production": "cpp"}
    status, answer = run_command(
        batch_conn,
        {**command, "parameters": {"kind": "annual", "day_obs": DAY, "data_dir": "/elsewhere"}},
        data_dir=str(batch_deployment.data_dir),
    )
    assert status == 400 and "set by the OCS server" in answer["error"]
    status, answer = run_command(
        batch_conn,
        {**command, "parameters": {"kind": "annual", "day_obs": DAY}},
        data_dir=str(batch_deployment.data_dir),
    )
    assert status == 202 and answer["ack"] == "accepted"
    job = store.job_status(batch_conn, answer["job_id"], tasks=100)
    bias = next(t for t in job["task_list"] if t["label"].startswith("bias-"))
    assert sum(job["tasks"].values()) == 4  # bias, dark, flat, crosstalk of the one detector
    assert bias["label"] == f"bias-{detector}"


def test_templates_from_the_calibrated_exposures_of_the_range(
    archived: Backbone,
    batch_deployment: Deployment,
    batch_conn: psycopg.Connection,
    conninfo: str,
    dask_client: Client,
) -> None:
    visits = [
        int(r[0])
        for r in batch_conn.execute(
            "SELECT id FROM dms.exposure WHERE observation_type = 'science' AND day_obs = %s ORDER BY id",
            (DAY,),
        )
    ]
    rng = np.random.default_rng(12)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.2]
    wcs.wcs.crpix = [20.0, 20.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    truth = rng.uniform(0, 100, (40, 40))
    calexps = {v: _exposure(rng, wcs, truth, v, 3.0) for v in visits}
    for v, e in calexps.items():
        archived.put(
            exposure_to_hdus(e),
            "calexp",
            {"instrument": "LSSTCam", "visit": v, "detector": 94, "band": "g"},
            run="drp/calexp",
            dimensions=["instrument", "visit", "detector", "band"],
        )
    parameters = {"kind": "daily", "day_obs": DAY, "data_dir": str(batch_deployment.data_dir)}
    parameters |= {"template_dataset_type": "calexp", "template_run": "templates/daily", "crosstalk": False}
    flow = workflow_for("cpp", parameters)
    template = next(t for t in flow.tasks if t.task == "cpp.template")
    assert template.label == "template-94-g" and len(template.args["exposures"]) == len(visits) == 2
    job = store.submit(batch_conn, flow)
    run(conninfo, dask_client)
    assert tasks(batch_conn, job)["template-94-g"]["state"] == "done"
    ref = archived.find(
        "template", {"instrument": "LSSTCam", "detector": 94, "band": "g"}, ["templates/daily"]
    )
    assert ref is not None
    coadd = exposure_from_hdus(fits.HDUList.fromstring(archived.read_bytes(ref)))
    weights = [np.where(e.mask == 0, 1.0 / e.variance.astype(np.float64), 0.0) for e in calexps.values()]
    expected = sum(w * e.image for w, e in zip(weights, calexps.values(), strict=True)) / sum(weights)
    np.testing.assert_allclose(coadd.image, expected, rtol=1e-5, atol=1e-3)
    # a day with no such exposures makes no template task
    flow = workflow_for("cpp", {**parameters, "day_obs": DAY, "template_dataset_type": "deepCoadd"})
    assert not any(t.task == "cpp.template" for t in flow.tasks)


def test_a_corrupt_raw_fails_its_task_and_the_rest_goes_on(
    archived: Backbone, batch_deployment: Deployment, batch_conn: psycopg.Connection
) -> None:
    flow = workflow_for("cpp", {"kind": "daily", "day_obs": DAY, "data_dir": str(batch_deployment.data_dir)})
    darks = next(t for t in flow.tasks if t.label.startswith("dark-")).args["frames"]
    Path(darks[1]).write_bytes(b"SIMPLE  = broken")
    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            str(batch_deployment.data_dir),
            "cpp",
            "run",
            "--kind",
            "daily",
            "--day-obs",
            str(DAY),
            "--no-certify",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "did not finish" in result.output.splitlines()[-1]
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  ")}
    assert (
        "failed: " in next(v for k, v in lines.items() if k.startswith("dark-")) and darks[1] in result.output
    )
    assert "upstream_failed" in next(v for k, v in lines.items() if k.startswith("flat-"))
    assert next(v for k, v in lines.items() if k.startswith("bias-")).split()[1] == "done"
