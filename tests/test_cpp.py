"""The Calibration Products Production on the batch service: master bias, dark and flat per detector and
filter from frames generated with numpy, checked against astropy's sigma clipping of the same stacks; the
calibration registry chooses masters by data ID and observation time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip
from batch_support import run, submit, tasks
from distributed import Client

from dms.services.cpp import registry
from dms.services.cpp.combine import sigma_clipped_mean
from dms.services.cpp.tasks import CalibrationError

pytest_plugins = ["batch_support"]

SHAPE = (40, 50)
BIAS_LEVEL, READ_NOISE = 1000.0, 5.0
# With n frames no value can lie more than (n - 1) / sqrt(n) standard deviations from the rest: 15 frames
# let a 3-sigma clip reject a cosmic ray (7 could not).
N_FRAMES = 15


def reference_combine(stack: np.ndarray) -> np.ndarray:
    clipped = sigma_clip(stack, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="std", axis=0)
    return np.asarray(clipped.mean(axis=0).filled(np.nan))


def _write(path: Path, image: np.ndarray, exptime: float) -> str:
    fits.PrimaryHDU(image.astype(np.float32), fits.Header({"EXPTIME": exptime})).writeto(path)
    return str(path)


def make_frames(root: Path, detector: int, seed: int) -> dict[str, Any]:
    """Bias, dark (30 s) and flat (10 s, in r) frames of one detector, with cosmic rays; and the truth."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(0, 3, SHAPE)  # fixed bias structure
    dark_rate = rng.uniform(0.05, 0.15, SHAPE)  # counts per second
    illumination = 1 + 0.1 * np.linspace(-1, 1, SHAPE[1])[None, :] * np.ones(SHAPE)
    root.mkdir(parents=True, exist_ok=True)
    hits_per_pixel = {kind: np.zeros(SHAPE, dtype=int) for kind in ("bias", "dark", "flat")}

    def raw(kind: str, i: int, signal: np.ndarray, exptime: float) -> str:
        image = BIAS_LEVEL + pattern + signal + rng.normal(0, READ_NOISE, SHAPE)
        hits = rng.integers(0, SHAPE[0] * SHAPE[1], 5)
        image.flat[hits] += 5000  # cosmic rays
        np.add.at(hits_per_pixel[kind].reshape(-1), hits, 1)
        return _write(root / f"{kind}{i}.fits", image, exptime)

    biases = [raw("bias", i, np.zeros(SHAPE), 0.0) for i in range(N_FRAMES)]
    darks = [raw("dark", i, dark_rate * 30, 30.0) for i in range(N_FRAMES)]
    flats = [
        raw("flat", i, illumination * 20000 * (1 + 0.05 * i) + dark_rate * 10, 10.0) for i in range(N_FRAMES)
    ]
    return {
        "bias": biases,
        "dark": darks,
        "flat": flats,
        "pattern": pattern,
        "dark_rate": dark_rate,
        "illumination": illumination,
        "hits": hits_per_pixel,
    }


def cpp_workflow(frames: dict[int, dict[str, Any]], out: Path) -> dict[str, Any]:
    entries = []
    for det, f in frames.items():
        data_id = {"instrument": "LSSTCam", "detector": det}
        entries += [
            {
                "label": f"bias-{det}",
                "task": "cpp.master_bias",
                "data_id": data_id,
                "outputs": [f"bias-{det}"],
                "args": {"frames": f["bias"], "output": str(out / f"bias-{det}.fits")},
            },
            {
                "label": f"dark-{det}",
                "task": "cpp.master_dark",
                "data_id": data_id,
                "outputs": [f"dark-{det}"],
                "inputs": {"bias": f"bias-{det}"},
                "args": {"frames": f["dark"], "output": str(out / f"dark-{det}.fits")},
            },
            {
                "label": f"flat-{det}-r",
                "task": "cpp.master_flat",
                "data_id": {**data_id, "physical_filter": "r"},
                "outputs": [f"flat-{det}-r"],
                "inputs": {"bias": f"bias-{det}", "dark": f"dark-{det}"},
                "args": {"frames": f["flat"], "output": str(out / f"flat-{det}-r.fits")},
            },
        ]
    return {"name": "cpp-daily", "production": "cpp-daily", "priority": "cpp", "tasks": entries}


def _read(path: str) -> np.ndarray:
    return np.asarray(fits.getdata(path), dtype=np.float64)


def _stack(paths: list[str]) -> np.ndarray:
    return np.stack([_read(p) for p in paths])


def test_combine_equals_astropy_sigma_clipping() -> None:
    rng = np.random.default_rng(3)
    stack = rng.normal(100, 5, (9, 30, 30))
    stack[rng.integers(0, 9, 40), rng.integers(0, 30, 40), rng.integers(0, 30, 40)] += 300
    stack[0, 0, 0] = np.nan
    np.testing.assert_allclose(sigma_clipped_mean(stack), reference_combine(stack), rtol=1e-12)


def test_masters_per_detector_match_an_independent_computation(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    frames = {det: make_frames(tmp_path / f"raw{det}", det, seed=det) for det in (10, 94)}
    job = submit(batch_conn, cpp_workflow(frames, tmp_path / "masters"))
    run(conninfo, dask_client)
    t = tasks(batch_conn, job)
    assert {row["state"] for row in t.values()} == {"done"}, {k: v["error"] for k, v in t.items()}
    for det, f in frames.items():
        bias = reference_combine(_stack(f["bias"]))
        master_bias = _read(str(tmp_path / "masters" / f"bias-{det}.fits"))
        np.testing.assert_allclose(master_bias, bias, atol=1e-3)  # float32 storage
        # and it is the truth within the noise of the mean, cosmic rays rejected (where a pixel was hit in
        # two frames, neither stands 3 sigma out of the rest: clipping keeps them, as astropy does)
        single = f["hits"]["bias"] <= 1
        error = np.abs(master_bias - BIAS_LEVEL - f["pattern"])
        assert error[single].max() < 6 * READ_NOISE / np.sqrt(N_FRAMES)
        assert single.mean() > 0.95
        dark_stack = (_stack(f["dark"]) - master_bias) / 30.0
        master_dark = _read(str(tmp_path / "masters" / f"dark-{det}.fits"))
        np.testing.assert_allclose(master_dark, reference_combine(dark_stack), atol=1e-5)
        flat_stack = _stack(f["flat"]) - master_bias - master_dark * 10.0
        flat_stack /= np.median(flat_stack.reshape(N_FRAMES, -1), axis=1)[:, None, None]
        flat = reference_combine(flat_stack)
        flat /= np.median(flat)
        master_flat = _read(str(tmp_path / "masters" / f"flat-{det}-r.fits"))
        np.testing.assert_allclose(master_flat, flat, atol=1e-6)
        truth = f["illumination"] / np.median(f["illumination"])
        clean = (f["hits"]["flat"] <= 1) & (f["hits"]["dark"] <= 1) & single
        assert np.abs(master_flat - truth)[clean].max() < 0.01
        header = fits.getheader(str(tmp_path / "masters" / f"flat-{det}-r.fits"))
        assert header["CALTYPE"] == "flat" and header["NCOMBINE"] == N_FRAMES


def test_registry_chooses_by_data_id_and_time(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    frames = {7: make_frames(tmp_path / "raw", 7, seed=7)}
    first = submit(batch_conn, cpp_workflow(frames, tmp_path / "m1"))
    second = submit(batch_conn, cpp_workflow(frames, tmp_path / "m2"))
    run(conninfo, dask_client)
    day = dt.datetime(2026, 12, 1)
    registry.certify(batch_conn, first, day, day + dt.timedelta(days=10))
    registry.certify(batch_conn, second, day + dt.timedelta(days=5))  # a re-run, from day 5 on
    data_id = {"instrument": "LSSTCam", "detector": 7, "physical_filter": "r"}
    early = registry.find(batch_conn, "flat", data_id, day + dt.timedelta(days=2))
    late = registry.find(batch_conn, "flat", data_id, day + dt.timedelta(days=6))
    later = registry.find(batch_conn, "bias", data_id, day + dt.timedelta(days=60))
    assert early.path.startswith(str(tmp_path / "m1")) and late.path.startswith(str(tmp_path / "m2"))
    assert later.path.startswith(str(tmp_path / "m2")) and later.physical_filter is None
    with pytest.raises(CalibrationError, match=r"no flat for .* valid at 2026-11-30"):
        registry.find(batch_conn, "flat", data_id, day - dt.timedelta(days=1))
    with pytest.raises(CalibrationError, match=r"no dark for .*'detector': 8"):
        registry.find(batch_conn, "dark", {**data_id, "detector": 8}, day)
    with pytest.raises(CalibrationError, match="chosen by physical_filter"):
        registry.find(batch_conn, "flat", {"instrument": "LSSTCam", "detector": 7}, day)
    with pytest.raises(CalibrationError, match=r"ends .* before it starts"):
        registry.certify(batch_conn, first, day, day)


def test_corrupt_or_missing_inputs_fail_their_task_and_the_rest_goes_on(
    batch_conn: psycopg.Connection, conninfo: str, dask_client: Client, tmp_path: Path
) -> None:
    frames = {1: make_frames(tmp_path / "raw1", 1, seed=1), 2: make_frames(tmp_path / "raw2", 2, seed=2)}
    Path(frames[2]["dark"][3]).write_bytes(b"SIMPLE  = not a FITS file")
    flow = cpp_workflow(frames, tmp_path / "m")
    flow["tasks"][0]["args"]["frames"] = frames[1]["bias"][:2]  # too few frames for detector 1
    job = submit(batch_conn, flow)
    run(conninfo, dask_client, backoff_seconds=0.05)
    t = tasks(batch_conn, job)
    assert t["bias-1"]["state"] == "failed" and "2 frames given, at least 3 needed" in t["bias-1"]["error"]
    assert t["dark-1"]["state"] == t["flat-1-r"]["state"] == "upstream_failed"
    assert t["bias-2"]["state"] == "done"
    assert t["dark-2"]["state"] == "failed" and "cannot read calibration frame" in t["dark-2"]["error"]
    assert "dark3.fits" in t["dark-2"]["error"]
    # a master corrupted after it was made is refused by its readers
    fixed = cpp_workflow({3: make_frames(tmp_path / "raw3", 3, seed=3)}, tmp_path / "m3")
    fixed["tasks"] = fixed["tasks"][:1]
    job3 = submit(batch_conn, fixed)
    run(conninfo, dask_client)
    product = tasks(batch_conn, job3)["bias-3"]
    assert product["state"] == "done"
    value = batch_conn.execute("SELECT value FROM dms.batch_dataset WHERE job_id = %s", (job3,)).fetchone()[0]  # type: ignore[index]
    with fits.open(value["path"], mode="update") as hdus:
        hdus[0].data[0, 0] += 1
    dark = {
        "label": "dark-3",
        "task": "cpp.master_dark",
        "data_id": {"instrument": "LSSTCam", "detector": 3},
        "args": {"bias": value, "frames": frames[1]["dark"], "output": str(tmp_path / "d3.fits")},
        "max_attempts": 1,
    }
    job4 = submit(batch_conn, {"name": "dark", "tasks": [dark]})
    run(conninfo, dask_client)
    assert "does not match its checksum (corrupted)" in tasks(batch_conn, job4)["dark-3"]["error"]
