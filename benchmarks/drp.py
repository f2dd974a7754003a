"""Data Release Production throughput: raw pixels per second per core, and the time of every step.

Usage: python benchmarks/drp.py [--detectors 4] [--visits 4] [--size 512] [--threads 1 2]

On an embedded PostgreSQL (pgserver): a simulated survey (the night simulator, g and r visits on LSSTCam
detectors, with pointing errors and clouds), then the whole DRP (ISR, calibration against Gaia from the
partitioned catalog, Source, coadds, Object, forced photometry, the atomic release load) side by side:
- the batch service on a Dask LocalCluster of 1 and of N threads (what `dms drp run` does);
- the peer: the same workflow's tasks called one after another in this process with dms.tasks.run_task
  (the task framework without the batch service, the database or Dask).
Prints wall time, raw pixels per second per core, the ratios, and the seconds per step (summed over tasks).
"""

from __future__ import annotations

import argparse
import graphlib
import json
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from dms import migrate  # noqa: E402
from dms.deployment import Deployment  # noqa: E402
from dms.services.backbone import Backbone  # noqa: E402
from dms.services.batch.runner import open_cluster  # noqa: E402
from dms.services.drp.plan import find_inputs  # noqa: E402
from dms.services.drp.production import DrpParameters, conninfo, drp_workflow, run_release  # noqa: E402
from dms.services.drp.survey import SurveySpec, simulate_survey  # noqa: E402
from dms.tasks import lookup_task, run_task  # noqa: E402


def batch_run(deployment: Deployment, params: DrpParameters, threads: int) -> tuple[float, dict[str, float]]:
    client = open_cluster(workers=1, threads=threads, processes=False)
    try:
        start = time.perf_counter()
        run = run_release(deployment, params, client=client)
        wall = time.perf_counter() - start
    finally:
        client.close()
    assert run.rows.get("Object"), run.errors
    with psycopg.connect(conninfo(deployment), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT task_name, sum(seconds) FROM dms.batch_task WHERE job_id = %s GROUP BY 1", (run.job_id,)
        ).fetchall()
    return wall, {str(name): float(seconds or 0) for name, seconds in rows}


def sequential_run(deployment: Deployment, params: DrpParameters) -> tuple[float, dict[str, float]]:
    """The workflow's tasks in dependency order, in this process, outputs passed as JSON (as the batch
    service stores them)."""
    start = time.perf_counter()
    inputs = find_inputs(Backbone(deployment), params.ra, params.dec, params.radius, None, params.patch_order)
    flow = drp_workflow(params, inputs)
    entries = {t.label: t for t in flow.tasks}
    writer = {name: t.label for t in flow.tasks for name in t.outputs}
    graph = {
        t.label: {writer[n] for v in t.inputs.values() for n in ([v] if isinstance(v, str) else v)}
        for t in flow.tasks
    }
    values: dict[str, Any] = {}
    steps: dict[str, float] = defaultdict(float)
    for label in graphlib.TopologicalSorter(graph).static_order():
        t = entries[label]
        arguments = dict(t.args)
        try:
            for name, value in t.inputs.items():
                arguments[name] = values[value] if isinstance(value, str) else [values[v] for v in value]
        except KeyError:
            continue  # an input failed
        outcome = run_task(lookup_task(t.task), t.config, data_id=t.data_id, raise_errors=False, **arguments)
        steps[t.task] += outcome.seconds
        if outcome.ok:
            values[label] = json.loads(json.dumps(outcome.result, default=float))
    return time.perf_counter() - start, dict(steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detectors", type=int, default=4)
    parser.add_argument("--visits", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    import logging

    import pgserver

    logging.getLogger("distributed").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="drpbench-"))
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    deployment = Deployment.create(work / "dep", database_url=server.get_uri(name))
    migrate.upgrade(deployment)
    spec = SurveySpec(visits=args.visits, detectors=args.detectors, size=(args.size, args.size), seed=8)
    start = time.perf_counter()
    night = simulate_survey(deployment, spec)
    print(
        f"survey: {args.visits} visits (g, r) x {args.detectors} detectors of {args.size}^2 pixels, "
        f"simulated in {time.perf_counter() - start:.1f} s"
    )
    pixels = args.visits * args.detectors * args.size * args.size
    ra, dec = night.field_center
    base = DrpParameters(release="bench", data_dir=str(deployment.data_dir), ra=ra, dec=dec, radius=1.0)
    results: list[tuple[str, int, float, dict[str, float]]] = []
    wall, steps = sequential_run(deployment, base.model_copy(update={"release": "bench_seq"}))
    results.append(("sequential run_task (peer)", 1, wall, steps))
    for threads in args.threads:
        wall, steps = batch_run(deployment, base.model_copy(update={"release": f"bench_t{threads}"}), threads)
        results.append((f"batch service, {threads} thread(s)", threads, wall, steps))
    print(f"\nraw pixels: {pixels:,}")
    print(f"{'run':34} {'wall s':>8} {'Mpix/s/core':>12} {'vs peer':>8}")
    peer_rate = pixels / results[0][2]
    for label, cores, wall, _ in results:
        rate = pixels / wall / cores
        print(f"{label:34} {wall:8.1f} {rate / 1e6:12.3f} {rate / peer_rate:8.2f}")
    print("\nseconds per step (summed over tasks):")
    names = sorted({n for *_, s in results for n in s})
    print(f"{'step':22}" + "".join(f"{r[0][:18]:>20}" for r in results))
    for step in names:
        print(f"{step:22}" + "".join(f"{r[3].get(step, 0.0):20.2f}" for r in results))
    server.cleanup()


if __name__ == "__main__":
    main()
