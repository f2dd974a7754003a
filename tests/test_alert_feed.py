"""The Alert Broker Feed on its two real transports (PostgreSQL log, NATS JetStream of the test's own):
packets round-trip through fastavro against Rubin's schema, consumer groups resume after a SIGKILL with
nothing lost and nothing committed twice, replay returns the same packets, a broker restart loses nothing,
and bad requests get errors naming the topic or offset."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
import sqlalchemy as sa
from feed_support import NatsServer, visit_alerts
from lsst.alert.packet import Schema

from dms.deployment import Deployment
from dms.services.alerts.feed import (
    AlertFeed,
    FeedConfig,
    FeedError,
    FeedMessage,
    OffsetOutOfRangeError,
    UnknownTopicError,
    open_feed,
)

pytest_plugins = ["backbone_support", "feed_support"]

TOPIC = "alerts"


def _drain(feed: AlertFeed, group: str, *, commit: bool = True) -> list[FeedMessage]:
    got: list[FeedMessage] = []
    while batch := feed.consume(TOPIC, group, max_messages=70, timeout=1.0):
        got += batch
        if commit:
            feed.commit(TOPIC, group, batch)
    return got


def test_packets_round_trip_through_fastavro_against_rubins_schema(feed: AlertFeed) -> None:
    sources, packets = visit_alerts(11, 10_000)
    feed.create_topic(TOPIC, partitions=3)
    result = feed.publish_visit(TOPIC, sources, packets)  # DiaSource rows, in packet order
    assert result.count == len(packets) == 200 and result.last_offset - result.first_offset == 199
    got = _drain(feed, "broker")
    assert sorted(m.offset for m in got) == list(range(result.first_offset, result.last_offset + 1))
    rubin = fastavro.parse_schema(Schema.from_file().definition)
    by_key = {int(m.key): m for m in got}
    assert sorted(by_key) == sorted(sources["diaSourceId"])
    for k, source in sources.iterrows():
        message = by_key[int(source["diaSourceId"])]
        assert message.value == packets[k]
        assert message.value[0] == 0 and int.from_bytes(message.value[1:5], "big") == 1101
        record = fastavro.schemaless_reader(io.BytesIO(message.value[5:]), rubin, rubin)
        assert record["diaSource"]["diaSourceId"] == source["diaSourceId"]
        assert record["diaSource"]["ra"] == pytest.approx(source["ra"])
    assert {m.partition for m in got} == {0, 1, 2}
    per_partition = [[m.offset for m in got if m.partition == p] for p in range(3)]
    assert all(offsets == sorted(offsets) for offsets in per_partition)  # ordered within a partition
    # Committed per partition: every message of the partition up to that offset (a transport may report a
    # later offset when the partition has no message between).
    committed = feed.committed(TOPIC, "broker")
    assert all(committed[p] >= max(per_partition[p]) for p in range(3))
    assert all(committed[p] <= result.last_offset for p in range(3))
    # Another group (destination) gets every alert too, independently.
    assert sorted(int(m.key) for m in _drain(feed, "other")) == sorted(sources["diaSourceId"])


_KILLED = """
import os, signal, sys
from dms.services.alerts.feed import FeedConfig, open_feed
feed = open_feed(FeedConfig.model_validate_json(sys.argv[1]))
with open(sys.argv[2], "a") as out:
    for _ in range(3):
        batch = feed.consume("alerts", "broker", max_messages=40, timeout=10)
        out.write("".join(m.key + "\\n" for m in batch))
        out.flush()
        feed.commit("alerts", "broker", batch)
    held = feed.consume("alerts", "broker", max_messages=40, timeout=10)  # received, never committed
    out.write("held " + " ".join(m.key for m in held) + "\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_consumer_resumes_with_nothing_lost_and_nothing_committed_twice(
    feed: AlertFeed, feed_config: FeedConfig, tmp_path: Path
) -> None:
    sources, packets = visit_alerts(12, 20_000)
    feed.create_topic(TOPIC)
    feed.publish_visit(TOPIC, sources["diaSourceId"].tolist(), packets)
    log = tmp_path / "processed.txt"
    run = subprocess.run(
        [sys.executable, "-c", _KILLED, feed_config.model_dump_json(), str(log)],
        env={**os.environ},
        timeout=120,
        capture_output=True,
    )
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    lines = log.read_text().splitlines()
    committed_before = [int(k) for k in lines[:-1]]
    held = [int(k) for k in lines[-1].split()[1:]]
    assert len(committed_before) == 120 and len(held) == 40
    with open_feed(feed_config) as resumed:
        rest = _drain(resumed, "broker")
    rest_keys = [int(m.key) for m in rest]
    assert rest_keys[:40] == held  # what the killed consumer held comes again, first
    assert not set(rest_keys) & set(committed_before)  # nothing it committed comes again
    assert sorted(committed_before + rest_keys) == sorted(sources["diaSourceId"])  # nothing lost
    assert feed.committed(TOPIC, "broker") == {0: 200}


def test_the_postgres_log_records_each_delivery_once(feed_url: str, deployment: Deployment) -> None:
    sources, packets = visit_alerts(13, 30_000)
    with open_feed(transport="postgres", database_url=feed_url) as feed:
        feed.create_topic(TOPIC, partitions=2)
        feed.publish_visit(TOPIC, sources["diaSourceId"].tolist(), packets)
        got = feed.consume(TOPIC, "broker", max_messages=500, timeout=1)
        feed.commit(TOPIC, "broker", got[:50])
        feed.commit(TOPIC, "broker", got[:50])  # again: nothing more recorded
        feed.commit(TOPIC, "broker", got)
    with deployment.engine().begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT partition, first_offset, last_offset, messages FROM dms.alert_feed_delivery "
                "WHERE group_name = 'broker' ORDER BY partition, first_offset"
            )
        ).all()
        archived = conn.execute(
            sa.text("SELECT count(DISTINCT alert_id) FROM dms.alert_feed_message")
        ).scalar()
    assert sum(r.messages for r in rows) == 200 == archived
    for p in (0, 1):
        ranges = [(r.first_offset, r.last_offset) for r in rows if r.partition == p]
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # no overlap
    expected = {p: max(m.offset for m in got if m.partition == p) for p in (0, 1)}
    assert {r.partition: r.last_offset for r in rows} == expected


def test_replay_from_an_offset_or_a_time_returns_the_same_packets(feed: AlertFeed) -> None:
    sources, packets = visit_alerts(14, 40_000)
    feed.create_topic(TOPIC)
    before = datetime.now(UTC) - timedelta(seconds=5)
    result = feed.publish_visit(TOPIC, sources["diaSourceId"].tolist(), packets)
    live = _drain(feed, "broker")
    middle = result.first_offset + 123
    again = feed.replay(TOPIC, from_offset=middle, max_messages=1000)
    assert [(m.offset, m.key, m.value) for m in again] == [
        (m.offset, m.key, m.value) for m in live if m.offset >= middle
    ]
    assert [m.value for m in feed.replay(TOPIC, from_time=before)] == packets
    assert feed.replay(TOPIC, from_time=datetime.now(UTC) + timedelta(hours=1)) == []
    # A group moved back to an offset reads from there again.
    feed.seek(TOPIC, "broker", offset=middle)
    assert [m.value for m in _drain(feed, "broker")] == packets[123:]


def test_bad_requests_name_the_topic_or_offset(feed: AlertFeed) -> None:
    feed.create_topic(TOPIC)
    sources, packets = visit_alerts(15, 50_000, n=20)
    feed.publish_visit(TOPIC, sources["diaSourceId"].tolist(), packets)
    last = feed.replay(TOPIC, from_offset=1)[-1].offset
    with pytest.raises(UnknownTopicError, match="unknown topic 'nosuch'"):
        feed.consume("nosuch", "broker", timeout=0.1)
    with pytest.raises(UnknownTopicError, match="unknown topic 'nosuch'"):
        feed.publish("nosuch", [("1", b"x")])
    with pytest.raises(OffsetOutOfRangeError, match=f"no offset 9999: its messages are at offsets 1..{last}"):
        feed.replay(TOPIC, from_offset=9999)
    with pytest.raises(OffsetOutOfRangeError, match="no offset 0"):
        feed.seek(TOPIC, "broker", offset=0)
    with pytest.raises(FeedError, match="invalid topic name 'Bad topic!'"):
        feed.create_topic("Bad topic!")
    with pytest.raises(FeedError, match="invalid group name ''"):
        feed.consume(TOPIC, "", timeout=0.1)
    with pytest.raises(FeedError, match=r"need an alert_id \(archive\) or diaSourceId"):
        feed.publish_visit(TOPIC, sources[["ra", "dec"]], packets)
    with pytest.raises(FeedError, match="3 packets given for 2 alert ids"):
        feed.publish_visit(TOPIC, [1, 2], [b"a", b"b", b"c"])
    assert len(_drain(feed, "broker")) == 20  # nothing lost to the bad requests


def test_a_nats_restart_loses_nothing(nats_server: NatsServer) -> None:
    sources, packets = visit_alerts(16, 60_000)
    config = FeedConfig(transport="nats", nats_url=nats_server.url)
    with open_feed(config) as feed:
        feed.create_topic(TOPIC, partitions=2)
        feed.publish_visit(TOPIC, sources["diaSourceId"].tolist()[:150], packets[:150])
        first = feed.consume(TOPIC, "broker", max_messages=100, timeout=5)
        feed.commit(TOPIC, "broker", first)
    nats_server.stop()
    nats_server.start()
    with open_feed(config) as feed:
        feed.publish_visit(TOPIC, sources["diaSourceId"].tolist()[150:], packets[150:])
        rest = _drain(feed, "broker")
        assert sorted(int(m.key) for m in first + rest) == sorted(sources["diaSourceId"])
        assert [m.value for m in feed.replay(TOPIC, from_offset=1, max_messages=500)] == packets


def test_an_unreachable_nats_server_is_a_clear_error() -> None:
    from feed_support import free_port

    with pytest.raises(FeedError, match=r"cannot reach NATS at nats://127\.0\.0\.1:"):
        open_feed(transport="nats", nats_url=f"nats://127.0.0.1:{free_port()}")


def test_a_commit_from_another_feed_object_moves_the_group(feed: AlertFeed, feed_config: FeedConfig) -> None:
    """As the HTTP server relays a consumer's commit after its stream ended: a feed that did not deliver
    the messages commits their offsets, and the group's next session starts after them."""
    sources, packets = visit_alerts(17, 65_000, n=30)
    feed.create_topic(TOPIC)
    feed.publish_visit(TOPIC, sources, packets)
    with open_feed(feed_config) as reader:
        seen = reader.consume(TOPIC, "relay", max_messages=12, timeout=5)
    assert len(seen) == 12
    marks = [FeedMessage(TOPIC, seen[-1].partition, seen[-1].offset, "", b"", seen[-1].published_at)]
    feed.commit(TOPIC, "relay", marks)
    assert feed.committed(TOPIC, "relay")[0] == seen[-1].offset
    with open_feed(feed_config) as later:
        rest = _drain(later, "relay")
    assert [m.value for m in rest] == packets[12:]
