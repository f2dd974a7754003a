"""The DRP as a batch production: a region's inputs (`plan`) turned into a DAG of registered tasks, each
declaring the datasets it reads and writes, run by the batch service, and the release loaded at the end.

    reference ─┐
    raw ──> characterize[visit, detector] ──> calibrate_visit[visit] ──> coadd[patch, band]
                                                   │                          │
                                                   │                    detect_coadd[patch] (Object)
                                                   └──────> forced[visit] <───┘
                                      load_release (Object, Source, ForcedSource, Visit, CcdVisit)

`run_release` submits the DAG (or resumes the release's unfinished job: finished tasks are never redone)
and runs it. A full run is gated by a mini-DRP over a small region around the centre: its release must
load, with Objects, before the full region starts. A hot-fix (`patches=[...]`) re-runs only those patches'
coadds, detection, the forced photometry of the visits touching them and the load, taking every other
product from the release's earlier jobs, so the reloaded release replaces the patch's rows consistently.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from pydantic import Field

from dms.deployment import Deployment
from dms.services.backbone import Backbone
from dms.services.batch import store
from dms.services.batch.productions import ProductionParameters, register_production
from dms.services.batch.workflow import WorkflowFile
from dms.services.drp.errors import DrpError
from dms.services.drp.plan import Inputs, find_inputs
from dms.services.drp.release import RELEASE_NAME, check_release_name, write_manifest

log = logging.getLogger(__name__)

STEPS = ("reference", "characterize", "calibrate_visit", "coadd", "detect_coadd", "forced", "load_release")
TASK_MODULES = ("dms.services.drp.tasks",)


class DrpParameters(ProductionParameters):
    release: str = Field(pattern=RELEASE_NAME, description="Release name (the catalog schema of its tables).")
    data_dir: str = Field(description="The deployment's data directory (the tasks open it).")
    ra: float = Field(ge=0, lt=360, description="Region centre, right ascension (deg).")
    dec: float = Field(ge=-90, le=90, description="Region centre, declination (deg).")
    radius: float = Field(gt=0, le=10, description="Region radius (deg).")
    bands: list[str] = Field(default_factory=list, description="Bands to process (all when empty).")
    patch_order: int = Field(default=11, ge=6, le=13, description="HEALPix order of the sky patches.")
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description=f"Configuration values per step ({', '.join(STEPS)})."
    )
    patches: list[int] = Field(default_factory=list, description="Hot-fix: re-run only these patches.")
    previous: dict[str, Any] = Field(default_factory=dict, description="Products of the earlier jobs.")


def job_name(release: str) -> str:
    return f"drp-{release}"


@register_production("drp", DrpParameters)
def drp_production(p: DrpParameters) -> WorkflowFile:
    """The Data Release Production over a region (ISR, calibration, Source, coadds, Object, ForcedSource)."""
    return drp_workflow(p)


def drp_workflow(p: DrpParameters, inputs: Inputs | None = None) -> WorkflowFile:
    """The DRP's workflow for `p`, over `inputs` (found in the Data Backbone when not given)."""
    unknown = sorted(set(p.config) - set(STEPS))
    if unknown:
        raise DrpError(f"configuration for unknown DRP steps {unknown}; the steps are {', '.join(STEPS)}")
    if inputs is None:
        from dms.services.drp.io import deployment_at

        with deployment_at(p.data_dir) as deployment:
            inputs = find_inputs(Backbone(deployment), p.ra, p.dec, p.radius, p.bands or None, p.patch_order)
    builder = _Builder(p, inputs)
    tasks = builder.hotfix() if p.patches else builder.full()
    return WorkflowFile.model_validate(
        {"name": job_name(p.release), "production": "drp", "priority": "drp", "tasks": tasks}
    )


class _Builder:
    def __init__(self, p: DrpParameters, inputs: Inputs) -> None:
        self.p, self.inputs = p, inputs
        self.common = {"data_dir": p.data_dir, "release": p.release}
        usable = inputs.usable
        self.visits = sorted({r.visit for r in usable})
        self.visit_band = {r.visit: r.band for r in usable}
        self.bands = sorted({r.band for r in usable}) or sorted({r.band for r in inputs.raws})
        self.patch_visits: dict[int, set[int]] = {}
        for r in usable:
            for patch in r.patches:
                self.patch_visits.setdefault(patch, set()).add(r.visit)
        self.visit_patches: dict[int, set[int]] = {}
        for patch, visits in self.patch_visits.items():
            for v in visits:
                self.visit_patches.setdefault(v, set()).add(patch)

    def config(self, step: str, **forced: Any) -> dict[str, Any]:
        return {**self.p.config.get(step, {}), **forced}

    def entry(self, label: str, step: str, data_id: dict[str, Any], **fields: Any) -> dict[str, Any]:
        config = fields.pop("config", self.config(step))
        args = {**self.common, **fields.pop("args", {})}
        return {
            "label": label,
            "task": f"drp.{step}",
            "config": config,
            "data_id": data_id,
            "args": args,
            "outputs": [label],
            **fields,
        }

    def full(self) -> list[dict[str, Any]]:
        p = self.p
        tasks = [
            self.entry(
                "refs",
                "reference",
                {"release": p.release},
                args={"ra": p.ra, "dec": p.dec, "radius": p.radius},
            )
        ]
        for r in self.inputs.raws:  # every raw runs; only the usable ones are read downstream
            # a raw whose calibration planning found missing or corrupt fails the same way every time
            retries = {} if r.problem is None else {"max_attempts": 1}
            tasks.append(
                self.entry(
                    f"char-{r.visit}-{r.detector}",
                    "characterize",
                    {"visit": r.visit, "detector": r.detector},
                    args={"raw": r.data_id, "band": r.band},
                    inputs={"refs": "refs"},
                    **retries,
                )
            )
        boresight = {r.visit: list(r.boresight) for r in self.inputs.raws}
        for v in self.visits:
            detectors = [f"char-{r.visit}-{r.detector}" for r in self.inputs.usable if r.visit == v]
            tasks.append(
                self.entry(
                    f"cal-{v}",
                    "calibrate_visit",
                    {"visit": v},
                    args={"boresight": boresight[v]},
                    inputs={"detectors": detectors},
                )
            )
        tasks += self._patch_tasks(sorted(self.patch_visits), lambda v: {"inputs": {"visits": v}})
        for v in self.visits:
            objects = [f"detect-{patch}" for patch in sorted(self.visit_patches.get(v, ()))]
            tasks.append(
                self.entry(
                    f"forced-{v}",
                    "forced",
                    {"visit": v},
                    inputs={"calibration": f"cal-{v}", "objects": objects},
                )
            )
        tasks.append(
            self.entry(
                "load",
                "load_release",
                {"release": p.release},
                args={"tag": f"{p.release}:{time.time_ns()}"},
                inputs={
                    "visits": [f"cal-{v}" for v in self.visits],
                    "objects": [f"detect-{patch}" for patch in sorted(self.patch_visits)],
                    "forced": [f"forced-{v}" for v in self.visits],
                },
            )
        )
        return tasks

    def _patch_tasks(self, patches: list[int], visits_of: Any) -> list[dict[str, Any]]:
        tasks = []
        for patch in patches:
            coadds = []
            for band in self.bands:
                visits = [f"cal-{v}" for v in sorted(self.patch_visits[patch]) if self.visit_band[v] == band]
                if not visits:
                    continue
                label = f"coadd-{patch}-{band}"
                coadds.append(label)
                given = visits_of(visits)
                tasks.append(
                    self.entry(
                        label,
                        "coadd",
                        {"patch": patch, "band": band},
                        config=self.config("coadd", patch_order=self.p.patch_order),
                        args={"patch": patch, "band": band, **given.get("args", {})},
                        inputs=given.get("inputs", {}),
                    )
                )
            tasks.append(
                self.entry(
                    f"detect-{patch}",
                    "detect_coadd",
                    {"patch": patch},
                    config=self.config("detect_coadd", patch_order=self.p.patch_order),
                    args={"patch": patch, "bands": self.bands},
                    inputs={"coadds": coadds},
                )
            )
        return tasks

    def hotfix(self) -> list[dict[str, Any]]:
        """Re-run the patches' coadds and detection, the forced photometry of the visits that touch them
        and the load; the other products are the earlier jobs' (literal arguments)."""
        p, previous = self.p, self.p.previous
        unknown = sorted(set(p.patches) - set(self.patch_visits))
        if unknown:
            raise DrpError(
                f"patches {unknown} hold no data of release {p.release}; its patches are "
                f"{sorted(self.patch_visits)}"
            )
        missing = [f"cal-{v}" for v in self.visits if f"cal-{v}" not in previous]
        missing += [
            f"detect-{q}" for q in self.patch_visits if q not in p.patches and f"detect-{q}" not in previous
        ]
        if missing:
            raise DrpError(f"release {p.release} has no earlier products {missing[:5]}: run it in full first")

        def literal_visits(labels: list[str]) -> dict[str, Any]:
            return {"args": {"visits": [previous[label] for label in labels]}}

        tasks = self._patch_tasks(sorted(p.patches), literal_visits)
        redone = sorted({v for patch in p.patches for v in self.patch_visits[patch]})
        for v in redone:
            mine = sorted(self.visit_patches[v])
            tasks.append(
                self.entry(
                    f"forced-{v}",
                    "forced",
                    {"visit": v},
                    args={
                        "calibration": previous[f"cal-{v}"],
                        "kept_objects": [previous[f"detect-{q}"] for q in mine if q not in p.patches],
                    },
                    inputs={"objects": [f"detect-{q}" for q in mine if q in p.patches]},
                )
            )
        tasks.append(
            self.entry(
                "load",
                "load_release",
                {"release": p.release},
                args={
                    "tag": f"{p.release}:{time.time_ns()}",
                    "visits": [previous[f"cal-{v}"] for v in self.visits],
                    "kept_objects": [
                        previous[f"detect-{q}"] for q in sorted(self.patch_visits) if q not in p.patches
                    ],
                    "kept_forced": [previous[f"forced-{v}"] for v in self.visits if v not in redone],
                },
                inputs={
                    "objects": [f"detect-{q}" for q in sorted(p.patches)],
                    "forced": [f"forced-{v}" for v in redone],
                },
            )
        )
        return tasks


@dataclass
class ReleaseRun:
    release: str
    job_id: int
    resumed: bool
    state: str
    tasks: dict[str, int]
    rows: dict[str, int]
    errors: list[str]
    seconds: float


def conninfo(deployment: Deployment) -> str:
    url = deployment.control_url().set(drivername="postgresql")
    return str(url.render_as_string(hide_password=False))


def release_jobs(conn: psycopg.Connection, release: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT job_id, state FROM dms.batch_job WHERE production = 'drp' AND name = %s ORDER BY job_id",
        (job_name(release),),
    ).fetchall()
    return [{"job_id": int(r[0]), "state": str(r[1])} for r in rows]


def previous_products(conn: psycopg.Connection, release: str) -> dict[str, Any]:
    """The datasets every earlier job of the release wrote (later jobs' win)."""
    products: dict[str, Any] = {}
    for job in release_jobs(conn, release):
        products.update(store.dataset_values(conn, job["job_id"]))
    return products


def run_release(
    deployment: Deployment,
    params: DrpParameters,
    *,
    client: Any = None,
    workers: int = 2,
    timeout: float | None = None,
    progress: bool = False,
) -> ReleaseRun:
    """Run (or resume) the release's DRP job on the batch service until it finishes."""
    from dms.services.batch.runner import BatchRunner, RunnerSettings, open_cluster

    check_release_name(params.release)
    started = time.perf_counter()
    info = conninfo(deployment)
    with psycopg.connect(info, autocommit=True) as conn:
        jobs = release_jobs(conn, params.release)
        active = [j for j in jobs if j["state"] == "active"]
        resumed = bool(active) and not params.patches
        if resumed:
            job_id = active[-1]["job_id"]
            log.info("resuming job %d of release %s", job_id, params.release)
        else:
            inputs = find_inputs(
                Backbone(deployment),
                params.ra,
                params.dec,
                params.radius,
                params.bands or None,
                params.patch_order,
            )
            if params.patches:
                params = params.model_copy(update={"previous": previous_products(conn, params.release)})
            job_id = store.submit(conn, drp_workflow(params, inputs))
            write_manifest(
                deployment,
                params.release,
                truth=inputs.truth[0] if inputs.truth else None,
                region=[params.ra, params.dec, params.radius],
                jobs=[job_id],
            )
    own = client is None
    if own:
        client = open_cluster(workers=workers, threads=1, processes=False)
    try:
        settings = RunnerSettings(
            name=f"drp-{params.release}", task_modules=TASK_MODULES, backoff_seconds=0.5
        )
        runner = BatchRunner(info, client, settings)
        _run_with_progress(runner, info, job_id, timeout, progress, params.release)
    finally:
        if own:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    with psycopg.connect(info, autocommit=True) as conn:
        status = store.job_status(conn, job_id, tasks=10_000)
        products = store.dataset_values(conn, job_id)
    errors = [
        f"{t['label']}: {t['error']}" for t in status["task_list"] if t["state"] == "failed" and t["error"]
    ]
    rows = {str(k): int(v) for k, v in (products.get("load") or {}).items()}
    return ReleaseRun(
        params.release,
        job_id,
        resumed,
        str(status["state"]),
        dict(status["tasks"] or {}),
        rows,
        errors,
        time.perf_counter() - started,
    )


def _run_with_progress(
    runner: Any, info: str, job_id: int, timeout: float | None, progress: bool, release: str
) -> None:
    """The runner in a thread while a progress bar follows the job's finished tasks."""
    import threading

    from tqdm import tqdm

    failure: list[BaseException] = []

    def work() -> None:
        try:
            runner.run(job_ids=[job_id], timeout=timeout)
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"drp-runner-{job_id}", daemon=True)
    thread.start()
    with psycopg.connect(info, autocommit=True) as conn:
        total = sum((store.job_status(conn, job_id, tasks=0)["tasks"] or {}).values())
        with tqdm(total=total, desc=f"drp {release}", unit="task", disable=not progress) as bar:
            while thread.is_alive():
                thread.join(1.0)
                counts = store.job_status(conn, job_id, tasks=0)["tasks"] or {}
                bar.n = sum(n for state, n in counts.items() if state not in ("queued", "blocked", "running"))
                bar.refresh()
    if failure:
        raise failure[0]


def mini_parameters(params: DrpParameters, radius: float) -> DrpParameters:
    """The mini-DRP of a run: the same centre and steps over a small radius, as release `<name>_mini`."""
    return params.model_copy(
        update={"release": f"{params.release}_mini", "radius": min(radius, params.radius)}
    )


def gate(mini: ReleaseRun) -> None:
    """The full run goes ahead only when the mini-DRP loaded its release with Objects."""
    if not mini.rows.get("Object"):
        detail = "; ".join(mini.errors[:3]) or f"job {mini.job_id} ended {mini.state}"
        raise DrpError(
            f"the mini-DRP ({mini.release}) did not load a release with Objects, so the full run "
            f"was not started: {detail}"
        )
