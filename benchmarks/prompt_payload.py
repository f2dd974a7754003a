"""Per-detector cost of the Alert Production payload, step by step, on simulated 2k x 2k detectors.

    python benchmarks/prompt_payload.py [--size 2048] [--visits 3] [--data-dir DIR]

Simulates a night (LSSTCamSim raws archived, calibrations and a template in the Backbone) in a temporary
embedded deployment (or DIR), then runs ISR and ProcessDetectorTask on every visit and prints the median
seconds per step. A full LSSTCam detector (4k x 4k) costs about four times as much (every step scales with
the pixel area). When PyPI `properimage` is installed, its ZOGY subtraction of the same science and aligned
template is timed beside ours (the ratio printed: > 1 means DMS is faster).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="detector size in pixels (square)")
    parser.add_argument("--visits", type=int, default=3, help="visits to time")
    parser.add_argument("--data-dir", type=Path, help="deployment directory (default: a temporary one)")
    args = parser.parse_args()

    from dms import migrate
    from dms.deployment import Deployment
    from dms.services.backbone import Backbone
    from dms.services.prompt.payload.align import align
    from dms.services.prompt.payload.isr import IsrTask
    from dms.services.prompt.payload.process import ProcessDetectorTask
    from dms.services.prompt.simulate import simulate_night

    directory = args.data_dir or Path(tempfile.mkdtemp(prefix="dms-bench-payload-"))
    deployment = (
        Deployment.open(directory) if (directory / "dms.toml").exists() else Deployment.create(directory)
    )
    migrate.upgrade(deployment)
    started = time.perf_counter()
    night = simulate_night(deployment, args.visits, 1, size=(args.size, args.size), seed=7, progress=True)
    print(
        f"simulated {args.visits} visits of a {args.size} x {args.size} detector "
        f"in {time.perf_counter() - started:.1f} s"
    )
    backbone = Backbone(deployment)
    detector = night.detectors[0]
    template = night.load_template(backbone, detector, "r")
    steps: dict[str, list[float]] = {}
    totals, peers = [], []
    for visit in night.visits:
        raw = night.raw(visit.visit, detector).get(backbone)
        bias, flat = night.bias[detector].get(backbone), night.flat(detector, visit.band).get(backbone)
        isr = IsrTask()
        t0 = time.perf_counter()
        science = isr.run(raw=raw, bias=bias, flat=flat)
        task = ProcessDetectorTask()
        result = task.run(science, template)
        totals.append(time.perf_counter() - t0)
        for name, seconds in {**{f"isr.{k}": v for k, v in isr.timings.items()}, **task.timings}.items():
            steps.setdefault(name, []).append(seconds)
        print(
            f'visit {visit.visit}: seeing {visit.seeing_arcsec:.2f}", {len(result.dia_sources)} DiaSources, '
            f"kernel residual {result.metrics['kernel_residual']:.2f}, {totals[-1]:.2f} s"
        )
        peer = _properimage(science, align(template, science))
        if peer is not None:
            peers.append(peer)
    print(f"\nper-detector cost ({args.size} x {args.size}), median of {len(totals)} visits:")
    for name, values in steps.items():
        print(f"  {name:28s} {statistics.median(values):7.3f} s")
    median = statistics.median(totals)
    print(f"  {'total (ISR + payload)':28s} {median:7.3f} s")
    scale = (4072 * 4000) / (args.size * args.size)
    print(
        f"  a 4k x 4k LSSTCam detector: ~{median * scale:.1f} s on one core; "
        f"189 detectors: ~{median * scale * 189 / 60:.1f} core-minutes per visit"
    )
    if peers:
        subtract = statistics.median(
            [
                a + b + c
                for a, b, c in zip(steps["psf_match"], steps["subtract"], steps["align"], strict=False)
            ]
        )
        peer_median = statistics.median(peers)
        print(
            f"  properimage ZOGY subtraction: {peer_median:.2f} s vs DMS align+match+subtract "
            f"{subtract:.2f} s: ratio {peer_median / subtract:.2f}"
        )
    else:
        print("  peer: PyPI properimage (ZOGY) is not installed; no side-by-side subtraction")


def _properimage(science: object, template: object) -> float | None:
    try:
        from properimage.operations import subtract  # type: ignore[import-not-found]
    except ImportError:
        return None
    t0 = time.perf_counter()
    subtract(ref=np.asarray(template.image), new=np.asarray(science.image), smooth_psf=False, fitted_psf=True)  # type: ignore[attr-defined]
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
