"""The mini-broker delivers each user's filtered feed on the Alert Broker Feed: one topic per user, holding
exactly that user's matched alerts as Rubin packets, and nothing of anyone else's."""

from __future__ import annotations

import psycopg
from apdb_support import conninfo
from lsst.alert.packet import Schema
from minibroker_support import add_users, make_batch

from dms.deployment import Deployment
from dms.services.alerts.batch import batch_packets
from dms.services.alerts.feed import FeedConfig, open_feed
from dms.services.apdb import Apdb
from dms.services.minibroker import store
from dms.services.minibroker.delivery import feed_topic, publish_matches_to_feed
from dms.services.minibroker.evaluate import evaluate_visit

pytest_plugins = ["apdb_support"]  # the apdb_deployment fixture


def test_each_user_gets_their_matches_on_their_own_topic(apdb_deployment: Deployment) -> None:
    url = conninfo(apdb_deployment)
    with Apdb(url) as apdb:
        batch = make_batch(apdb, url, 400, seed=5)
    add_users(url, ["dora", "emil"])
    with apdb_deployment.engine().begin() as conn:
        store.add_filter(conn, "dora", "bright", "psfFlux > 4000")
        store.add_filter(conn, "emil", "red", "band = 'r' AND snr > 20")
    runs = [r for r in evaluate_visit(url, batch.visit) if r.owner in ("dora", "emil")]
    packets = dict(
        zip(
            batch.sources["diaSourceId"].astype(int),
            batch_packets(batch.sources, batch.objects.assign(validityStartMjdTai=0.0)),
            strict=True,
        )
    )
    published = publish_matches_to_feed(open_feed(FeedConfig(database_url=url)), runs, packets.__getitem__)

    sources = batch.sources
    expected = {
        "dora": set(sources.loc[sources["psfFlux"] > 4000, "diaSourceId"].astype(int)),
        "emil": set(sources.loc[(sources["band"] == "r") & (sources["snr"] > 20), "diaSourceId"].astype(int)),
    }
    assert published == {user: len(ids) for user, ids in expected.items()}
    rubin = Schema.from_file()
    feed = open_feed(FeedConfig(database_url=url))
    for user, ids in expected.items():
        messages = feed.consume(feed_topic(user), "broker", max_messages=10_000, timeout=2.0)
        assert {int(m.key) for m in messages} == ids and len(messages) == len(ids)
        for message in messages[:5]:
            assert message.value == packets[int(message.key)]
            assert rubin.deserialize(message.value[5:])["diaSourceId"] == int(message.key)
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM minibroker.match WHERE owner IN ('dora', 'emil')"
        ).fetchone()
    assert stored is not None and stored[0] == sum(len(v) for v in expected.values())
    assert all(len(ids) > 10 for ids in expected.values())  # both filters select something
