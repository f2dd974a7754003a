"""`dms demo`'s Level 1 step on a real deployment: the demo user's filter selects exactly the alerts pandas
selects, they reach the user's topic as Rubin packets, and running the step again stores nothing twice."""

from __future__ import annotations

import sqlalchemy as sa
from lsst.alert.packet import Schema

from dms.demo_minibroker import DETECTOR, USER, VISIT, _visit, run_minibroker_demo
from dms.services.alerts.feed import FeedConfig, open_feed
from dms.services.backbone import Backbone
from dms.services.minibroker.delivery import feed_topic

pytest_plugins = ["backbone_support"]  # the backbone fixture (a migrated deployment)


def test_the_demo_step_selects_what_pandas_selects(backbone: Backbone) -> None:
    deployment = backbone.deployment
    _, sources = _visit()
    expected = set(
        sources.loc[
            (sources["band"] == "r") & (sources["psfFlux"] > 6000) & (sources["snr"] > 20), "diaSourceId"
        ].astype(int)
    )
    lines: list[str] = []
    assert run_minibroker_demo(deployment, lines.append) == len(expected) > 0
    assert run_minibroker_demo(deployment, lines.append) == len(expected)  # again: nothing stored twice
    assert f"selected {len(expected)} alerts" in lines[1]
    with deployment.engine().connect() as conn:
        counts = [
            conn.execute(sa.text(query), {"v": VISIT, "d": DETECTOR}).scalar_one()
            for query in (
                'SELECT count(*) FROM apdb."DiaSource" WHERE visit = :v AND detector = :d',
                "SELECT count(*) FROM dms.alert WHERE visit = :v AND detector = :d",
                f"SELECT count(*) FROM minibroker.match WHERE owner = '{USER}'",
            )
        ]
    assert counts == [len(sources), len(sources), len(expected)]
    url = deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    rubin = Schema.from_file()
    with open_feed(FeedConfig(database_url=url)) as feed:
        messages = feed.replay(feed_topic(USER), from_offset=1, max_messages=1000)
    assert {int(m.key) for m in messages} == expected and len(messages) == 2 * len(expected)
    assert {rubin.deserialize(m.value[5:])["diaSourceId"] for m in messages} == expected
