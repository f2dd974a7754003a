"""`dms demo`'s alert feed step: a simulated visit's alerts published, a community broker reading them."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fastavro

from dms.deployment import Deployment

DEMO_TOPIC = "alerts"
DEMO_GROUP = "demo-broker"


def run_alerts_demo(deployment: Deployment, echo: Callable[[str], None] = print, alerts: int = 50) -> int:
    """Publish `alerts` packets simulated with lsst-alert-packet (Rubin's schema) as one visit on the embedded
    feed, then read them as a community broker would; returns how many the broker received."""
    from lsst.alert.packet import Schema
    from lsst.alert.packet.simulate import simulate_alert

    from dms.services.alerts.feed import FeedConfig, open_feed
    from dms.services.alerts.packets import serialize

    rubin = Schema.from_file()
    counts = {"prvDiaSources": 3, "prvDiaForcedSources": 3}
    null = ["ssSource", "mpc_orbits"]
    records = [simulate_alert(rubin.definition, keepNull=null, arrayCount=counts) for _ in range(alerts)]
    packets = [serialize(r) for r in records]
    url = deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    with open_feed(FeedConfig(database_url=url)) as feed:
        feed.create_topic(DEMO_TOPIC)
        sent = feed.publish_visit(DEMO_TOPIC, [r["diaSourceId"] for r in records], packets)
        schema = fastavro.parse_schema(Schema.from_file().definition)  # fresh: simulate_alert edits its input
        received = 0
        while batch := feed.consume(DEMO_TOPIC, DEMO_GROUP, max_messages=500, timeout=0.5):
            for m in batch:
                alert: Any = fastavro.schemaless_reader(io.BytesIO(m.value[5:]), schema, schema)
                received += alert["diaSourceId"] == int(m.key)
            feed.commit(DEMO_TOPIC, DEMO_GROUP, batch)
    echo(
        f"Alert feed: {sent.count} simulated alerts (lsst-alert-packet, schema id 1101) published as one "
        f"visit at offsets {sent.first_offset}..{sent.last_offset}; group {DEMO_GROUP} received and "
        f"decoded {received}"
    )
    echo(f"  dms alerts serve  |  dms alerts consume {DEMO_TOPIC} --group my-broker --from-offset 1")
    return received
