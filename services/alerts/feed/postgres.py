"""The embedded transport: the feed's log in PostgreSQL, new messages announced with LISTEN/NOTIFY.

Publishing locks the topic's row (`last_offset`), so offsets follow commit order and a batch is appended
all or nothing (COPY into `dms.alert_feed_message`), then NOTIFY wakes waiting consumers. A consumer reads,
per partition, the messages after its position: the group's committed offset when its session starts, then
what it has received. Commits only move forward and each newly committed range is recorded once in
`dms.alert_feed_delivery`, so the table says which alerts each destination has and a message committed
twice is recorded once.
"""

from __future__ import annotations

import re
import time as clock
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from dms.services.alerts.feed import (
    TOPIC_PATTERN,
    AlertFeed,
    FeedConfig,
    FeedError,
    FeedMessage,
    OffsetOutOfRangeError,
    PublishResult,
    UnknownTopicError,
    partition_of,
    register,
)

CHANNEL = "dms_alert_feed"
GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_SET_OFFSET = (
    "INSERT INTO dms.alert_feed_offset (group_name, topic, partition, committed) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (group_name, topic, partition) DO UPDATE SET committed = EXCLUDED.committed, "
    "committed_at = CURRENT_TIMESTAMP"
)
_COLUMNS = 'm."offset", m.partition, m.key, m.packet, m.published_at'


def check_name(kind: str, name: str) -> str:
    """A topic or group name, or a FeedError naming the rule it breaks."""
    pattern = TOPIC_PATTERN if kind == "topic" else GROUP_PATTERN
    if not isinstance(name, str) or not re.match(pattern, name):
        raise FeedError(f"invalid {kind} name {name!r}: must match {pattern}")
    return name


def conninfo(config: FeedConfig) -> str:
    """The psycopg connection string of the feed's database (the deployment's control database by default)."""
    if config.database_url:
        return config.database_url.replace("postgresql+psycopg://", "postgresql://")
    from dms.deployment import Deployment

    url = Deployment.open().control_url().set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PostgresFeed(AlertFeed):
    """The feed as a log in PostgreSQL (one connection for requests, one listening for NOTIFY)."""

    def __init__(self, dsn: str, *, partitions: int = 1) -> None:
        self._dsn = dsn
        self._default_partitions = partitions
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._listener: psycopg.Connection | None = None
        self._positions: dict[tuple[str, str], dict[int, int]] = {}

    # -- topics --------------------------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        count = int(partitions or self._default_partitions)
        if not 1 <= count <= 64:
            raise FeedError(f"topic {topic!r}: partitions must be 1..64, not {count}")
        self._conn.execute(
            "INSERT INTO dms.alert_feed_topic (name, partitions, last_offset) VALUES (%s, %s, 0) "
            "ON CONFLICT (name) DO NOTHING",
            (check_name("topic", topic), count),
        )

    def topics(self) -> list[str]:
        rows = self._conn.execute("SELECT name FROM dms.alert_feed_topic ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def _topic(self, topic: str) -> tuple[int, int]:
        """(partitions, last offset) of a topic, or UnknownTopicError."""
        row = self._conn.execute(
            "SELECT partitions, last_offset FROM dms.alert_feed_topic WHERE name = %s", (topic,)
        ).fetchone()
        if row is None:
            raise UnknownTopicError(f"unknown topic {topic!r} (topics: {', '.join(self.topics()) or 'none'})")
        return int(row[0]), int(row[1])

    # -- producing -----------------------------------------------------------------------------------
    def publish(self, topic: str, messages: Sequence[tuple[str, bytes]]) -> PublishResult:
        n = len(messages)
        with self._conn.transaction():
            row = self._conn.execute(
                "UPDATE dms.alert_feed_topic SET last_offset = last_offset + %s WHERE name = %s "
                "RETURNING last_offset, partitions",
                (n, topic),
            ).fetchone()
            if row is None:
                raise UnknownTopicError(f"unknown topic {topic!r}: create it before publishing")
            last, partitions = int(row[0]), int(row[1])
            first = last - n + 1
            copy_sql = (
                'COPY dms.alert_feed_message (topic, "offset", partition, key, alert_id, packet) FROM STDIN'
            )
            with self._conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for k, (key, packet) in enumerate(messages):
                    key = str(key)
                    alert_id = int(key) if key.isdigit() and len(key) < 19 else None
                    copy.write_row((topic, first + k, partition_of(key, partitions), key, alert_id, packet))
            self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, topic))
        return PublishResult(topic, first, last, n)

    # -- consuming -----------------------------------------------------------------------------------
    def consume(
        self, topic: str, group: str, *, max_messages: int = 1000, timeout: float = 1.0
    ) -> list[FeedMessage]:
        check_name("group", group)
        self._topic(topic)
        listener = self._listen()
        position = self._position(topic, group)
        deadline = clock.monotonic() + max(0.0, timeout)
        while True:
            found = self._read_after(topic, position, max_messages)
            if found:
                for m in found:
                    position[m.partition] = max(position[m.partition], m.offset)
                return found
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return []
            for _ in listener.notifies(timeout=remaining, stop_after=1):
                pass

    def _listen(self) -> psycopg.Connection:
        if self._listener is None:
            self._listener = psycopg.connect(self._dsn, autocommit=True)
            self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        return self._listener

    def _position(self, topic: str, group: str) -> dict[int, int]:
        if (topic, group) not in self._positions:
            partitions, _ = self._topic(topic)
            committed = self.committed(topic, group)
            self._positions[(topic, group)] = {p: committed.get(p, 0) for p in range(partitions)}
        return self._positions[(topic, group)]

    def _read_after(self, topic: str, position: dict[int, int], limit: int) -> list[FeedMessage]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM dms.alert_feed_message m "
            "JOIN unnest(%s::smallint[], %s::bigint[]) AS p(part, pos) "
            'ON m.partition = p.part AND m."offset" > p.pos '
            'WHERE m.topic = %s ORDER BY m."offset" LIMIT %s',
            (list(position), list(position.values()), topic, int(limit)),
        ).fetchall()
        return [_message(topic, r) for r in rows]

    def commit(self, topic: str, group: str, messages: Iterable[FeedMessage]) -> None:
        check_name("group", group)
        top: dict[int, int] = {}
        for m in messages:
            if m.topic != topic:
                raise FeedError(f"message of topic {m.topic!r} committed to topic {topic!r}")
            top[m.partition] = max(top.get(m.partition, 0), m.offset)
        if not top:
            return
        _, last = self._topic(topic)
        if max(top.values()) > last:
            raise OffsetOutOfRangeError(
                f"topic {topic!r}: offset {max(top.values())} is after its last {last}"
            )
        with self._conn.transaction():
            for partition, offset in sorted(top.items()):
                self._advance(topic, group, partition, offset)

    def _advance(self, topic: str, group: str, partition: int, offset: int) -> None:
        row = self._conn.execute(
            "SELECT committed FROM dms.alert_feed_offset WHERE group_name = %s AND topic = %s AND "
            "partition = %s FOR UPDATE",
            (group, topic, partition),
        ).fetchone()
        before = int(row[0]) if row else 0
        if offset <= before:
            return  # already committed: recorded once
        self._conn.execute(
            _SET_OFFSET,
            (group, topic, partition, offset),
        )
        self._conn.execute(
            "INSERT INTO dms.alert_feed_delivery (group_name, topic, partition, first_offset, last_offset, "
            "messages) SELECT %s, %s, %s, %s, %s, count(*) FROM dms.alert_feed_message WHERE topic = %s AND "
            'partition = %s AND "offset" BETWEEN %s AND %s ON CONFLICT DO NOTHING',
            (group, topic, partition, before + 1, offset, topic, partition, before + 1, offset),
        )

    def committed(self, topic: str, group: str) -> dict[int, int]:
        partitions, _ = self._topic(topic)
        rows = self._conn.execute(
            "SELECT partition, committed FROM dms.alert_feed_offset WHERE group_name = %s AND topic = %s",
            (group, topic),
        ).fetchall()
        found = {int(p): int(c) for p, c in rows}
        return {p: found.get(p, 0) for p in range(partitions)}

    def seek(
        self, topic: str, group: str, *, offset: int | None = None, time: datetime | None = None
    ) -> None:
        check_name("group", group)
        start = self._start(topic, offset, time)
        partitions, _ = self._topic(topic)
        with self._conn.transaction():
            for p in range(partitions):
                self._conn.execute(
                    _SET_OFFSET,
                    (group, topic, p, start - 1),
                )
        self._positions.pop((topic, group), None)

    def _start(self, topic: str, offset: int | None, time: datetime | None) -> int:
        """The first offset to read: `offset` checked against the log, or the first at or after `time`."""
        _, last = self._topic(topic)
        if (offset is None) == (time is None):
            raise FeedError("give exactly one of an offset or a time to start from")
        if offset is not None:
            first = self._conn.execute(
                'SELECT min("offset") FROM dms.alert_feed_message WHERE topic = %s', (topic,)
            ).fetchone()
            low = int(first[0]) if first and first[0] is not None else last + 1
            if not low <= int(offset) <= last + 1:
                raise OffsetOutOfRangeError(
                    f"topic {topic!r} has no offset {offset}: its messages are at offsets {low}..{last}"
                    if last >= low
                    else f"topic {topic!r} has no offset {offset}: it has no messages yet"
                )
            return int(offset)
        row = self._conn.execute(
            'SELECT min("offset") FROM dms.alert_feed_message WHERE topic = %s AND published_at >= %s',
            (topic, time),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else last + 1

    def replay(
        self,
        topic: str,
        *,
        from_offset: int | None = None,
        from_time: datetime | None = None,
        max_messages: int = 1000,
    ) -> list[FeedMessage]:
        start = self._start(topic, from_offset, from_time)
        rows = self._conn.execute(
            f'SELECT {_COLUMNS} FROM dms.alert_feed_message m WHERE m.topic = %s AND m."offset" >= %s '
            'ORDER BY m."offset" LIMIT %s',
            (topic, start, int(max_messages)),
        ).fetchall()
        return [_message(topic, r) for r in rows]

    def close(self) -> None:
        for conn in (self._conn, self._listener):
            if conn is not None and not conn.closed:
                conn.close()


def _message(topic: str, row: Any) -> FeedMessage:
    offset, partition, key, packet, published_at = row
    return FeedMessage(topic, int(partition), int(offset), str(key), bytes(packet), published_at)


@register("postgres")
def _open(config: FeedConfig) -> AlertFeed:
    return PostgresFeed(conninfo(config), partitions=config.partitions)
