"""`dms demo`'s prompt processing step: a short simulated night through the Prompt Processing service."""

from __future__ import annotations

from collections.abc import Callable

from dms.deployment import Deployment

DEMO_VISITS = 2
DEMO_DETECTORS = 1
DEMO_SIZE = 384
DEMO_SEED = 7


def run_prompt_demo(deployment: Deployment, echo: Callable[[str], None] = print) -> int:
    """Simulate a short night (archived raws, calibrations, templates), send its next-visit and visit-ready
    events to a prompt service over HTTP, and show the DiaSources and alerts; returns the alerts archived.
    A second run finds the night processed and only shows it."""
    from dms.services.prompt.errors import VisitNotFoundError
    from dms.services.prompt.night import feed_night, local_service
    from dms.services.prompt.service import PromptConfig
    from dms.services.prompt.simulate import simulate_night
    from dms.services.prompt.visits import VisitStore

    night = simulate_night(
        deployment,
        DEMO_VISITS,
        DEMO_DETECTORS,
        size=(DEMO_SIZE, DEMO_SIZE),
        seed=DEMO_SEED,
        template_visits=2,
    )
    ra, dec = night.field_center
    echo(
        f"Prompt processing: a simulated night of {len(night.visits)} visits x "
        f"{len(night.detectors)} detector "
        f"({DEMO_SIZE} x {DEMO_SIZE} pixels) at RA {ra:.3f}, Dec {dec:.3f} (raws archived, templates built)"
    )
    store = VisitStore(deployment)
    states: dict[int, str | None] = {}
    for visit in night.visits:
        try:
            states[visit.visit] = store.get(visit.visit).state
        except VisitNotFoundError:
            states[visit.visit] = None
    if all(state == "done" for state in states.values()):
        echo("  processed before:")
    else:
        with local_service(deployment, night, PromptConfig(workers=1)) as base:
            echo(
                f"  service at {base}: next-visit and visit-ready events, as the OCS and the camera send them"
            )
            feed_night(base, night)
    total = 0
    for visit in night.visits:
        record = store.get(visit.visit)
        total += record.n_alerts or 0
        step = record.timings.get("total", float("nan"))
        echo(
            f"  visit {visit.visit}: {record.state}, {record.n_dia_sources} DiaSources in the APDB, "
            f"{record.n_alerts} alerts archived, {step:.1f} s from readout to alerts"
        )
    echo(
        f"  try: dms prompt status {night.visits[-1].visit} | dms offline run | dms night simulate --process"
    )
    return total
