"""`dms demo`'s Level 1 step: a visit's DiaSources in the APDB become Rubin alert packets, kept in the alert
archive, published on the feed, and a mini-broker user's filter selects a few onto their own topic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from astropy.time import Time

from dms.deployment import Deployment

VISIT, DETECTOR = 2026120300042, 94
MJD = 61377.1  # 2026-12-03
USER, FILTER = "demo-scientist", "bright-r"
WHERE = "band = 'r' AND psfFlux > 6000 AND snr > 20"


def _visit(n: int = 300) -> tuple[pd.DataFrame, pd.DataFrame]:
    """DiaObjects around COSMOS and one DiaSource of each, with the values prompt processing writes."""
    rng = np.random.default_rng(42)
    ra = 150.1 + rng.uniform(-0.1, 0.1, n)
    dec = 2.2 + rng.uniform(-0.1, 0.1, n)
    ids = np.arange(1, n + 1, dtype=np.int64) + VISIT * 1000
    objects = pd.DataFrame({"diaObjectId": ids, "ra": ra, "dec": dec, "nDiaSources": np.ones(n, np.int32)})
    for band in "ugrizy":
        objects[f"{band}_psfFluxNdata"] = np.int32(1 if band == "r" else 0)
    flux = rng.lognormal(8.3, 0.6, n).astype(np.float32)
    sources = pd.DataFrame(
        {
            "diaSourceId": ids,
            "visit": VISIT,
            "detector": np.int16(DETECTOR),
            "diaObjectId": ids,
            "midpointMjdTai": MJD,
            "ra": ra,
            "dec": dec,
            "x": rng.uniform(0, 4072, n).astype(np.float32),
            "y": rng.uniform(0, 4000, n).astype(np.float32),
            "psfFlux": flux,
            "psfFluxErr": (flux / rng.uniform(5, 60, n)).astype(np.float32),
            "band": "r",
            "psfNdata": np.int32(400),
            "trailNdata": np.int32(400),
            "dipoleNdata": np.int32(400),
            "bboxSize": np.int32(31),
            "timeProcessedMjdTai": MJD + 0.0005,
        }
    )
    sources["snr"] = (sources["psfFlux"] / sources["psfFluxErr"]).astype(np.float32)
    return objects, sources


def run_minibroker_demo(deployment: Deployment, echo: Callable[[str], None] = print) -> int:
    """Run the step (again on a deployment that ran it before: nothing is stored twice); returns how many
    alerts the demo user's filter selected."""
    from dms.services.alerts.archive import archive_batch
    from dms.services.alerts.batch import batch_packets
    from dms.services.alerts.feed import FeedConfig, open_feed
    from dms.services.apdb import Apdb, Circle
    from dms.services.backbone import Backbone
    from dms.services.minibroker.delivery import feed_topic, publish_matches_to_feed
    from dms.services.minibroker.evaluate import evaluate_visit
    from dms.services.minibroker.features import update_features

    url = deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    objects, sources = _visit()
    with Apdb(url) as apdb:
        if not apdb.contains_visit_detector(VISIT, DETECTOR):
            apdb.store(Time(MJD, format="mjd", scale="tai"), objects, sources)
        stored = apdb.get_dia_objects(Circle(150.1, 2.2, 0.2))
    packets = batch_packets(sources, stored[stored["diaObjectId"].isin(sources["diaObjectId"])])
    archive_batch(Backbone(deployment), VISIT, DETECTOR, sources, packets)
    update_features(url, VISIT)
    _ensure_filter(deployment)
    runs = evaluate_visit(url, VISIT, owner=USER)
    by_id = dict(zip(sources["diaSourceId"].astype(int), packets, strict=True))
    with open_feed(FeedConfig(database_url=url)) as feed:
        published = publish_matches_to_feed(feed, runs, by_id.__getitem__)
    selected = published.get(USER, 0)
    echo(
        f"Level 1: visit {VISIT} detector {DETECTOR}: {len(sources)} DiaSources in the APDB, {len(packets)} "
        f"alert packets ({sum(map(len, packets)) // 1024} kB) in the alert archive"
    )
    echo(
        f"  mini-broker: {USER}'s filter {FILTER!r} ({WHERE}) selected {selected} alerts onto topic "
        f"{feed_topic(USER)}"
    )
    echo(f"  dms minibroker filter list --user {USER}  |  dms alerts consume {feed_topic(USER)} --group me")
    return selected


def _ensure_filter(deployment: Deployment) -> None:
    import sqlalchemy as sa

    from dms.services.auth import add_user
    from dms.services.minibroker import store

    with deployment.engine().begin() as conn:
        if (
            conn.execute(sa.text("SELECT 1 FROM dms.user_account WHERE name = :n"), {"n": USER}).first()
            is None
        ):
            add_user(conn, USER)
        if not any(f.name == FILTER for f in store.list_filters(conn, USER)):
            store.add_filter(conn, USER, FILTER, WHERE)
