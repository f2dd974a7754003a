"""The Data Release Production end to end on a simulated survey: calibrated positions and fluxes against
the simulator's truth, Object/Source/ForcedSource counts and joins through the query engine, bad inputs
recorded on their tasks while the rest of the release goes on, hot-fix re-runs of a patch, and the release
tables in dp1.yaml's shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from drp_support import RELEASE, Survey, query, unit_vectors
from scipy.spatial import cKDTree

from dms.services.batch import store
from dms.services.drp.errors import DrpError
from dms.services.drp.plan import find_inputs
from dms.services.drp.production import DrpParameters, conninfo, drp_workflow, previous_products, run_release
from dms.services.drp.release import release_info
from dms.services.drp.schema import dp1_columns

pytest_plugins = ["drp_support"]


def _match(
    frame: pd.DataFrame, ra: str, dec: str, truth: pd.DataFrame, radius: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into frame and truth of the pairs nearer than `radius` arcsec."""
    tree = cKDTree(unit_vectors(truth["ra"].to_numpy(), truth["dec"].to_numpy()))
    distance, index = tree.query(unit_vectors(frame[ra].to_numpy(), frame[dec].to_numpy()))
    close = np.degrees(distance) * 3600 < radius
    return np.flatnonzero(close), index[close]


def test_calibrated_sources_match_truth(drp_survey: Survey) -> None:
    """Positions within 0.05 arcsec and fluxes within 8% of the truth for bright unsaturated stars, although
    the raws' WCSs were off by 1.5 arcsec rms and clouds took up to 0.3 mag."""
    truth = drp_survey.night.truth
    sources = query(drp_survey.deployment, f'SELECT * FROM {RELEASE}.Source WHERE NOT "pixelFlags_saturated"')
    offsets, ratios = [], []
    for (visit, detector), group in sources.groupby(["visit", "detector"]):
        stars = truth[(truth["visit"] == visit) & (truth["detector"] == detector) & (truth["kind"] == "star")]
        mine, theirs = _match(group, "ra", "dec", stars)
        bright = (group["psfFlux"] / group["psfFluxErr"]).to_numpy()[mine] > 20
        m, t = group.iloc[mine[bright]], stars.iloc[theirs[bright]]
        east = (m["ra"].to_numpy() - t["ra"].to_numpy()) * np.cos(np.radians(t["dec"].to_numpy())) * 3600
        north = (m["dec"].to_numpy() - t["dec"].to_numpy()) * 3600
        offsets.append(np.hypot(np.median(east), np.median(north)))
        ratios.append(np.median(m["psfFlux"].to_numpy() / t["flux"].to_numpy()))
    print(
        "astrometric offset vs truth per detector-visit: "
        f"median {np.median(offsets):.4f}, max {np.max(offsets):.4f} arcsec"
    )
    print(f"flux ratio vs truth per detector-visit: median {np.median(ratios):.4f}, rms {np.std(ratios):.4f}")
    assert len(offsets) >= 6
    assert np.max(offsets) < 0.05
    assert np.all(np.abs(np.array(ratios) - 1) < 0.08)


def test_calibration_corrected_something(drp_survey: Survey) -> None:
    """The fitted WCS offsets and flux scales are the simulator's pointing errors and clouds."""
    from dms.services.prompt.simulate.night import _visit_errors

    products = previous_products(psycopg.connect(conninfo(drp_survey.deployment), autocommit=True), RELEASE)
    seed, spec_error, spec_ext = 5, 1.5, 0.3
    fitted = [(v, products[f"cal-{v.visit}"]) for v in drp_survey.night.visits]
    for visit, cal in fitted:
        error, extinction = _visit_errors(seed, visit.visit, spec_error, spec_ext)
        # the fit moves the measured positions back by the header's error
        assert np.allclose(cal["offset_arcsec"], -error, atol=0.05), (cal["offset_arcsec"], error)
        assert cal["flux_scale"] == pytest.approx(10 ** (0.4 * extinction), rel=0.08)
    assert max(np.hypot(*_visit_errors(seed, v.visit, spec_error, spec_ext)[0]) for v, _ in fitted) > 0.5


def test_objects_match_truth(drp_survey: Survey) -> None:
    """Bright truth stars in the coadds are found as Objects, with r fluxes within 5%."""
    truth = drp_survey.night.truth
    template = truth[(truth["visit"] == 0) & (truth["kind"] == "star")]
    objects = query(drp_survey.deployment, f"SELECT * FROM {RELEASE}.Object")
    mine, theirs = _match(objects, "coord_ra", "coord_dec", template)
    m, t = objects.iloc[mine], template.iloc[theirs]
    bright = (m["r_psfFlux"] / m["r_psfFluxErr"]).to_numpy() > 30
    ratio = m["r_psfFlux"].to_numpy()[bright] / t["flux"].to_numpy()[bright]
    print(
        f"Object r flux / truth: median {np.median(ratio):.4f}, "
        f"scatter {np.std(ratio):.4f} ({bright.sum()} stars)"
    )
    assert bright.sum() >= 5
    assert abs(np.median(ratio) - 1) < 0.05
    assert len(objects) == objects["objectId"].nunique()


def test_counts_and_joins(drp_survey: Survey) -> None:
    """The catalog holds what the tasks wrote; every Source and ForcedSource joins to its Object."""
    d = drp_survey.deployment
    rows = drp_survey.run.rows
    for table in ("Object", "Source", "ForcedSource", "Visit", "CcdVisit"):
        assert query(d, f"SELECT COUNT(*) AS n FROM {RELEASE}.{table}")["n"][0] == rows[table] > 0
    forced = query(d, f'SELECT "objectId", visit, detector FROM {RELEASE}.ForcedSource')
    objects = query(d, f'SELECT "objectId" FROM {RELEASE}.Object')
    assert set(forced["objectId"]) <= set(objects["objectId"])
    assert not forced.duplicated().any()
    joined = query(
        d,
        f"SELECT COUNT(*) AS n FROM {RELEASE}.Object o "
        f'JOIN {RELEASE}.ForcedSource f ON f."objectId" = o."objectId"',
    )
    assert joined["n"][0] == len(forced)
    sources = query(d, f'SELECT "objectId" FROM {RELEASE}.Source')
    associated = sources["objectId"].dropna()
    assert len(associated) > 0.5 * len(sources)
    joined = query(
        d,
        f"SELECT COUNT(*) AS n FROM {RELEASE}.Source s "
        f'JOIN {RELEASE}.Object o ON s."objectId" = o."objectId"',
    )
    assert joined["n"][0] == len(associated)
    ccd = query(d, f"SELECT visit, detector FROM {RELEASE}.ForcedSource GROUP BY visit, detector")
    ccd_visits = query(d, f'SELECT "visitId", detector FROM {RELEASE}.CcdVisit')
    assert {tuple(r) for r in ccd.to_numpy()} <= {tuple(r) for r in ccd_visits.to_numpy()}


def test_bad_calibrations_recorded_rest_goes_on(drp_survey: Survey) -> None:
    with psycopg.connect(conninfo(drp_survey.deployment), autocommit=True) as conn:
        tasks = {t["label"]: t for t in store.job_status(conn, drp_survey.run.job_id)["task_list"]}
    corrupt = [
        t
        for label, t in tasks.items()
        if label.startswith("char-") and label.endswith(f"-{drp_survey.corrupt_detector}")
    ]
    assert corrupt and all(t["state"] == "failed" and "checksum" in t["error"] for t in corrupt)
    detector, band = drp_survey.flatless
    r_visits = [v.visit for v in drp_survey.night.visits if v.band == band]
    flatless = [tasks[f"char-{v}-{detector}"] for v in r_visits]
    assert all(
        t["state"] == "failed" and "no usable master calibration" in t["error"] and "flat" in t["error"]
        for t in flatless
    )
    assert tasks["load"]["state"] == "done"
    failed = {label for label, t in tasks.items() if t["state"] != "done"}
    assert failed == {t["label"] for t in corrupt + flatless}


def test_release_tables_have_dp1_shapes(drp_survey: Survey) -> None:
    from dms.schema.catalog import get_table

    with drp_survey.deployment.connect() as conn:
        for name in ("Object", "Source", "ForcedSource", "Visit", "CcdVisit"):
            table = get_table(conn, f"{RELEASE}.{name}")
            declared = dp1_columns(name)
            for column in table.columns:
                assert column.name in declared, (name, column.name)
    info = release_info(drp_survey.deployment, RELEASE)
    assert info["tables"]["Object"] == f"{RELEASE}.Object"
    assert info["truth"] and pd.read_parquet(info["truth"]).shape[0] == len(drp_survey.night.truth)


def test_invalid_config_is_recorded_on_its_tasks(drp_survey: Survey) -> None:
    params = drp_survey.params.model_copy(
        update={"release": "badconfig", "config": {"coadd": {"background_mesh": 3}}}
    )
    workflow = drp_workflow(params)
    with psycopg.connect(conninfo(drp_survey.deployment), autocommit=True) as conn:
        job_id = store.submit(conn, workflow)
        tasks = store.job_status(conn, job_id, tasks=10_000)["task_list"]
        store.cancel(conn, job_id)
    coadds = [t for t in tasks if t["task_name"] == "drp.coadd"]
    assert coadds and all(t["state"] == "failed" and "background_mesh" in t["error"] for t in coadds)
    assert {t["state"] for t in tasks if t["task_name"] == "drp.characterize"} == {"blocked"}
    assert [t["state"] for t in tasks if t["task_name"] == "drp.reference"] == ["queued"]
    with pytest.raises(DrpError, match="unknown DRP steps"):
        drp_workflow(params.model_copy(update={"config": {"isr": {}}}))


def test_region_without_data(drp_survey: Survey) -> None:
    from dms.cli import main
    from dms.services.backbone import Backbone

    with pytest.raises(DrpError, match="holds no raws"):
        find_inputs(Backbone(drp_survey.deployment), 10.0, 10.0, 0.1, None, 11)
    result = CliRunner().invoke(
        main,
        ["--data-dir", str(drp_survey.deployment.data_dir), "drp", "run", "--region", "10,10,0.1", "--mini"],
    )
    assert result.exit_code == 1
    assert "holds no raws" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(
        main, ["--data-dir", str(drp_survey.deployment.data_dir), "drp", "run", "--region", "10,10"]
    )
    assert result.exit_code == 2 and "RA,DEC,RADIUS_DEG" in result.output


def test_hotfix_replaces_one_patch(drp_survey: Survey) -> None:
    d = drp_survey.deployment
    before = query(d, f"SELECT * FROM {RELEASE}.Object").sort_values("objectId").reset_index(drop=True)
    forced_before = query(d, f'SELECT "objectId", visit, "psfFlux" FROM {RELEASE}.ForcedSource')
    patch = int(before["patch"].value_counts().index[0])
    params = drp_survey.params.model_copy(
        update={"patches": [patch], "config": {"detect_coadd": {"threshold": 8.0}}}
    )
    run = run_release(d, params, client=drp_survey.client)
    assert run.state == "done" and run.job_id != drp_survey.run.job_id, run.errors
    after = query(d, f"SELECT * FROM {RELEASE}.Object").sort_values("objectId").reset_index(drop=True)
    others_before, others_after = before[before["patch"] != patch], after[after["patch"] != patch]
    pd.testing.assert_frame_equal(others_before.reset_index(drop=True), others_after.reset_index(drop=True))
    fewer = after[after["patch"] == patch]
    assert 0 < len(fewer) < (before["patch"] == patch).sum()  # a higher threshold: fewer objects
    forced = query(d, f'SELECT "objectId", visit, detector FROM {RELEASE}.ForcedSource')
    assert set(forced["objectId"]) <= set(after["objectId"])
    assert not forced.duplicated().any()
    kept = forced_before[~forced_before["objectId"].isin(before.loc[before["patch"] == patch, "objectId"])]
    assert set(kept["objectId"]) <= set(forced["objectId"])
    with pytest.raises(DrpError, match="hold no data"):
        run_release(d, drp_survey.params.model_copy(update={"patches": [1]}), client=drp_survey.client)


def test_level2_qc_of_the_release(drp_survey: Survey, capsys: pytest.CaptureFixture[str]) -> None:
    """`dms drp run` ends with the release's Level 2 QC: the values stored are the release's own."""
    from dms.cli_drp import _level2

    d = drp_survey.deployment
    _level2(d, RELEASE)
    out = capsys.readouterr().out
    assert "Level 2 QC:" in out
    with psycopg.connect(conninfo(d)) as conn:
        stored = conn.execute(
            "SELECT metric, production, value FROM dms.qc_measurement WHERE production LIKE %s "
            "ORDER BY measurement_id",
            (f"{RELEASE}%",),
        ).fetchall()
    per_patch = {p: v for name, p, v in stored if name == "dms_drp.objects_per_patch"}
    objects = query(d, f"SELECT tract, patch FROM {RELEASE}.Object")
    expected = objects.groupby(["tract", "patch"]).size()
    assert len(expected) > 0
    assert {f"{RELEASE}/patch={t},{p}": float(n) for (t, p), n in expected.items()} == per_patch
    ccd = query(d, f"SELECT band, seeing FROM {RELEASE}.CcdVisit")
    fwhm = {p: v for name, p, v in stored if name == "dms_drp.psf_fwhm"}
    for band, seeing in ccd.groupby("band")["seeing"]:
        assert fwhm[f"{RELEASE}/band={band}"] == pytest.approx(float(np.median(seeing)), rel=1e-9)


def test_mini_drp_gates_the_full_run() -> None:
    from dms.services.drp.production import ReleaseRun, gate, mini_parameters

    params = DrpParameters(release="dp9", data_dir="/x", ra=1.0, dec=2.0, radius=3.0)
    mini = mini_parameters(params, 0.05)
    assert (mini.release, mini.radius, mini.ra) == ("dp9_mini", 0.05, 1.0)
    failed = ReleaseRun(
        "dp9_mini", 7, False, "failed", {"failed": 3}, {}, ["char-1-2: no usable master"], 1.0
    )
    with pytest.raises(DrpError, match="full run was not started: char-1-2"):
        gate(failed)
    gate(ReleaseRun("dp9_mini", 7, False, "done", {"done": 9}, {"Object": 5}, [], 1.0))


RESUME_SCRIPT = """
import sys
from pathlib import Path
from dms.deployment import Deployment
from dms.services.drp.production import DrpParameters, run_release
params = DrpParameters.model_validate_json(sys.argv[1])
run_release(Deployment.open(Path(params.data_dir)), params, workers=1)
"""


@pytest.mark.slow
def test_killed_drp_resumes_without_redoing_finished_tasks(drp_survey: Survey) -> None:
    """A DRP process killed mid-run (SIGKILL): running it again resumes the same job; the tasks that had
    finished are not run again (same finish time, one attempt) and the release loads."""
    import os
    import signal
    import subprocess
    import sys
    import time

    params = drp_survey.params.model_copy(update={"release": "resumed"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, params.model_dump_json()], env=env)
    info = conninfo(drp_survey.deployment)
    done: dict[str, tuple[object, int]] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            with psycopg.connect(info, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT t.label, t.finished_at, t.attempts FROM dms.batch_task t JOIN dms.batch_job j "
                    "USING (job_id) WHERE j.name = 'drp-resumed' AND t.state = 'done'"
                ).fetchall()
            if len(rows) >= 12:
                process.send_signal(signal.SIGKILL)
                process.wait()
                break
    finally:
        if process.poll() is None:
            process.kill()
    with psycopg.connect(info, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t.label, t.finished_at, t.attempts FROM dms.batch_task t JOIN dms.batch_job j "
            "USING (job_id) WHERE j.name = 'drp-resumed' AND t.state = 'done'"
        ).fetchall()
    done = {r[0]: (r[1], r[2]) for r in rows}
    assert len(done) >= 12 and "load" not in done
    run = run_release(drp_survey.deployment, params, client=drp_survey.client)
    assert run.resumed and run.rows["Object"] > 0
    with psycopg.connect(info, autocommit=True) as conn:
        after = {t["label"]: t for t in store.job_status(conn, run.job_id, tasks=10_000)["task_list"]}
        jobs = conn.execute("SELECT count(*) FROM dms.batch_job WHERE name = 'drp-resumed'").fetchone()
    assert jobs == (1,)
    for label, (_, attempts) in done.items():
        assert after[label]["attempts"] == attempts == 1
    with psycopg.connect(info, autocommit=True) as conn:
        unchanged = conn.execute(
            "SELECT label, finished_at FROM dms.batch_task WHERE job_id = %s AND label = ANY(%s)",
            (run.job_id, list(done)),
        ).fetchall()
    assert {label: f for label, f in unchanged} == {label: f for label, (f, _) in done.items()}


def test_object_catalog_through_tap(drp_survey: Survey) -> None:
    """The release is published in TAP_SCHEMA and answers ADQL over HTTP, equal to the query engine."""
    import csv
    import io

    import httpx

    from dms.services.vo.server import running_server

    adql = f"SELECT COUNT(*) AS n FROM {RELEASE}.Object"
    with running_server(drp_survey.deployment) as url:
        response = httpx.post(
            f"{url}/tap/sync",
            data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql, "FORMAT": "csv"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        rows = list(csv.DictReader(io.StringIO(response.text)))
    engine = query(drp_survey.deployment, f"SELECT COUNT(*) AS n FROM {RELEASE}.Object")
    assert int(rows[0]["n"]) == engine["n"][0] > 0
    with drp_survey.deployment.connect() as conn:
        published = set(
            conn.execute(
                sa.text("SELECT table_name FROM tap_schema.tables WHERE schema_name = :s"), {"s": RELEASE}
            ).scalars()
        )
    assert {f"{RELEASE}.Object", f"{RELEASE}.Source", f"{RELEASE}.ForcedSource"} <= published, published
