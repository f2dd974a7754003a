"""The streaming-engine transport: NATS JetStream.

A topic is a stream (`DMS_ALERTS_<TOPIC>`, file storage) with one subject per partition
(`dms.alerts.<topic>.<partition>`); an offset is the stream sequence, so offsets are per topic as in the
PostgreSQL log. A consumer group is one durable pull consumer per partition (explicit acks, the partition's
subject as filter): its ack floor is the group's committed offset, and `commit` acks what the session received
up to the committed offsets (the last ack synchronously, so a returned commit is stored). A new session of a
group whose previous session died with messages delivered but not acked recreates the consumer at its ack
floor, so it reads them again at once instead of after `ack_wait` (one live session per group, as in a
Kafka group rebalance). nats-py is asynchronous: the feed runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from dms.services.alerts.feed import (
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
from dms.services.alerts.feed.postgres import check_name

T = TypeVar("T")
KEY_HEADER = "Dms-Key"
_PARTITIONS = "partitions="
FETCH = 200  # messages per pull request (x ~30-80 kB per Rubin packet)


def stream_name(topic: str) -> str:
    return "DMS_ALERTS_" + topic.upper().replace("-", "_")


def subject(topic: str, partition: int | str) -> str:
    return f"dms.alerts.{topic}.{partition}"


def durable_name(group: str, partition: int) -> str:
    return f"{group.replace('.', '_')}-p{partition}"


class JetStreamFeed(AlertFeed):
    """The feed on a NATS JetStream server."""

    def __init__(self, config: FeedConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dms-nats", daemon=True)
        self._thread.start()
        self._sessions: dict[tuple[str, str], dict[int, Any]] = {}
        self._pending: dict[tuple[str, str], dict[int, Msg]] = {}
        try:
            # nats-py retries a first connection forever when reconnects are allowed (they are, for later
            # outages): probe the address first so a wrong URL is an error within seconds, not minutes.
            _probe(config.nats_url)
            self._nc = self._run(
                nats.connect(
                    config.nats_url,
                    connect_timeout=3,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.3,
                )
            )
        except Exception as exc:
            self._stop()
            raise FeedError(f"cannot reach NATS at {config.nats_url}: {exc or type(exc).__name__}") from None
        self._js = self._nc.jetstream(publish_async_max_pending=20_000)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- topics --------------------------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        check_name("topic", topic)
        count = int(partitions or self._config.partitions)
        config = api.StreamConfig(
            name=stream_name(topic),
            subjects=[subject(topic, "*")],
            description=f"DMS alert feed topic {topic}; {_PARTITIONS}{count}",
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
        )

        async def create() -> None:
            try:
                await self._js.stream_info(config.name)  # type: ignore[arg-type]
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(config)

        self._run(create())

    def topics(self) -> list[str]:
        async def names() -> list[str]:
            streams = await self._js.streams_info()
            return sorted(
                s.config.subjects[0].split(".")[2]
                for s in streams
                if s.config.name and s.config.name.startswith("DMS_ALERTS_") and s.config.subjects
            )

        return self._run(names())

    async def _info(self, topic: str) -> api.StreamInfo:
        try:
            return await self._js.stream_info(stream_name(topic))
        except nats.js.errors.NotFoundError:
            raise UnknownTopicError(f"unknown topic {topic!r}: create it before using it") from None

    def _partitions(self, info: api.StreamInfo) -> int:
        return int((info.config.description or "").rsplit(_PARTITIONS, 1)[-1] or 1)

    # -- producing -----------------------------------------------------------------------------------
    def publish(self, topic: str, messages: Sequence[tuple[str, bytes]]) -> PublishResult:
        async def send() -> list[int]:
            partitions = self._partitions(await self._info(topic))
            futures = [
                await self._js.publish_async(
                    subject(topic, partition_of(str(key), partitions)),
                    packet,
                    headers={KEY_HEADER: str(key)},
                    wait_stall=60,
                )
                for key, packet in messages
            ]
            return [ack.seq for ack in await asyncio.gather(*futures)]

        offsets = self._run(send())
        if not offsets:
            return PublishResult(topic, 0, 0, 0)
        return PublishResult(topic, min(offsets), max(offsets), len(offsets))

    # -- consuming -----------------------------------------------------------------------------------
    async def _session(self, topic: str, group: str) -> dict[int, Any]:
        if (topic, group) in self._sessions:
            return self._sessions[(topic, group)]
        info = await self._info(topic)
        subs = {}
        for p in range(self._partitions(info)):
            name = durable_name(group, p)
            try:
                consumer = await self._js.consumer_info(info.config.name, name)  # type: ignore[arg-type]
                if consumer.num_ack_pending:  # a previous session died holding messages: take them back
                    await self._recreate(topic, group, p, start=_floor(consumer) + 1)
            except nats.js.errors.NotFoundError:
                await self._recreate(topic, group, p)
            subs[p] = await self._js.pull_subscribe_bind(durable=name, stream=info.config.name)
        self._sessions[(topic, group)] = subs
        self._pending[(topic, group)] = {}
        return subs

    async def _recreate(
        self, topic: str, group: str, p: int, *, start: int | None = None, time: datetime | None = None
    ) -> None:
        name = durable_name(group, p)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(stream_name(topic), name)
        policy = api.DeliverPolicy.ALL
        if start is not None:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        elif time is not None:
            policy = api.DeliverPolicy.BY_START_TIME
        await self._js.add_consumer(
            stream_name(topic),
            api.ConsumerConfig(
                durable_name=name,
                filter_subject=subject(topic, p),
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=policy,
                opt_start_seq=start,
                opt_start_time=time.astimezone(UTC).isoformat() if time else None,  # type: ignore[arg-type]
                ack_wait=self._config.ack_wait_s,
                max_ack_pending=-1,
            ),
        )

    def consume(
        self, topic: str, group: str, *, max_messages: int = 1000, timeout: float = 1.0
    ) -> list[FeedMessage]:
        check_name("group", group)

        async def fetch() -> list[FeedMessage]:
            subs = await self._session(topic, group)
            pending = self._pending[(topic, group)]
            deadline = self._loop.time() + max(timeout, 0.0)
            found: list[Msg] = []
            while True:
                wait = max(0.01, min(deadline - self._loop.time(), 0.2 if len(subs) > 1 else timeout))
                for sub in subs.values():
                    found += await self._fetch(sub, max_messages - len(found), wait)
                if found or self._loop.time() >= deadline:
                    break
            messages = sorted((_message(topic, m) for m in found), key=lambda m: m.offset)
            for m, raw in zip(messages, sorted(found, key=lambda r: r.metadata.sequence.stream), strict=True):
                pending[m.offset] = raw
            return messages

        return self._run(fetch())

    async def _fetch(self, sub: Any, wanted: int, wait: float) -> list[Msg]:
        """Up to `wanted` messages, in pulls of at most FETCH: a pull of thousands of packets would exceed
        the server's pending-bytes limit of a connection (64 MB) and be cut as a slow consumer."""
        found: list[Msg] = []
        while len(found) < wanted:
            try:
                got = await sub.fetch(min(FETCH, wanted - len(found)), timeout=wait if not found else 0.05)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            found += got
            if len(got) < FETCH:
                break
        return found

    def commit(self, topic: str, group: str, messages: Iterable[FeedMessage]) -> None:
        check_name("group", group)
        top: dict[int, int] = {}
        for m in messages:
            top[m.partition] = max(top.get(m.partition, 0), m.offset)

        async def ack() -> None:
            info = await self._info(topic)
            if top and max(top.values()) > info.state.last_seq:
                raise OffsetOutOfRangeError(
                    f"topic {topic!r}: offset {max(top.values())} is after its last, {info.state.last_seq}"
                )
            pending = self._pending.get((topic, group), {})
            for partition, offset in top.items():
                due = sorted(o for o, raw in pending.items() if o <= offset and _partition(raw) == partition)
                for o in due[:-1]:
                    await pending.pop(o).ack()
                if due:
                    await pending.pop(due[-1]).ack_sync()
                elif (topic, group) not in self._sessions:
                    await self._commit_offset(topic, group, partition, offset)

        self._run(ack())

    async def _commit_offset(self, topic: str, group: str, partition: int, offset: int) -> None:
        """Commit an offset this object did not receive (e.g. a commit relayed by the HTTP server after
        its stream ended): the consumer is recreated to start after it, unless it is already past it."""
        try:
            consumer = await self._js.consumer_info(stream_name(topic), durable_name(group, partition))
            floor = _floor(consumer)
        except nats.js.errors.NotFoundError:
            floor = 0
        if offset > floor:
            await self._recreate(topic, group, partition, start=offset + 1)

    def committed(self, topic: str, group: str) -> dict[int, int]:
        async def floors() -> dict[int, int]:
            info = await self._info(topic)
            result = {}
            for p in range(self._partitions(info)):
                try:
                    c = await self._js.consumer_info(stream_name(topic), durable_name(group, p))
                    result[p] = _floor(c)
                except nats.js.errors.NotFoundError:
                    result[p] = 0
            return result

        return self._run(floors())

    def seek(
        self, topic: str, group: str, *, offset: int | None = None, time: datetime | None = None
    ) -> None:
        check_name("group", group)

        async def move() -> None:
            info = await self._info(topic)
            start = self._check_start(topic, info, offset, time)
            for p in range(self._partitions(info)):
                await self._recreate(topic, group, p, start=start, time=time if start is None else None)
            for sub in self._sessions.pop((topic, group), {}).values():
                await sub.unsubscribe()
            self._pending.pop((topic, group), None)

        self._run(move())

    def _check_start(
        self, topic: str, info: api.StreamInfo, offset: int | None, time: datetime | None
    ) -> int | None:
        if (offset is None) == (time is None):
            raise FeedError("give exactly one of an offset or a time to start from")
        if offset is None:
            return None
        first, last = info.state.first_seq, info.state.last_seq
        if not (first <= int(offset) <= last + 1) or offset < 1:
            raise OffsetOutOfRangeError(
                f"topic {topic!r} has no offset {offset}: its messages are at offsets {first}..{last}"
                if info.state.messages
                else f"topic {topic!r} has no offset {offset}: it has no messages yet"
            )
        return int(offset)

    def replay(
        self,
        topic: str,
        *,
        from_offset: int | None = None,
        from_time: datetime | None = None,
        max_messages: int = 1000,
    ) -> list[FeedMessage]:
        async def read() -> list[FeedMessage]:
            info = await self._info(topic)
            start = self._check_start(topic, info, from_offset, from_time)
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE
                if start is not None
                else api.DeliverPolicy.BY_START_TIME,
                opt_start_seq=start,
                opt_start_time=from_time.astimezone(UTC).isoformat() if from_time else None,  # type: ignore[arg-type]
                ack_policy=api.AckPolicy.NONE,
                inactive_threshold=30,
            )
            sub = await self._js.pull_subscribe(subject(topic, "*"), stream=info.config.name, config=config)
            found: list[Msg] = []
            try:
                while len(found) < max_messages:
                    if found and found[-1].metadata.sequence.stream >= info.state.last_seq:
                        break
                    try:
                        found += await sub.fetch(max_messages - len(found), timeout=0.5)
                    except (nats.errors.TimeoutError, TimeoutError):
                        break
            finally:
                await sub.unsubscribe()
            return [_message(topic, m) for m in found]

        return self._run(read())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        if not self._nc.is_closed:
            self._run(self._nc.close())
        self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _floor(consumer: api.ConsumerInfo) -> int:
    """The consumer's committed offset: its ack floor, or, before any ack, the offset before its start
    (JetStream reports an ack floor of 0 for a consumer created to start at a sequence)."""
    acked = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    start = consumer.config.opt_start_seq or 1
    return max(acked, start - 1)


def _partition(raw: Msg) -> int:
    return int(raw.subject.rsplit(".", 1)[1])


def _message(topic: str, raw: Msg) -> FeedMessage:
    meta = raw.metadata
    return FeedMessage(
        topic,
        _partition(raw),
        int(meta.sequence.stream),
        (raw.headers or {}).get(KEY_HEADER, ""),
        bytes(raw.data),
        meta.timestamp,
    )


@register("nats")
def _open(config: FeedConfig) -> AlertFeed:
    return JetStreamFeed(config)


def _probe(url: str, timeout: float = 3.0) -> None:
    """Open and close a TCP connection to the first server of a nats:// URL (OSError if none answers)."""
    parsed = urlsplit(url.split(",")[0])
    with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=timeout):
        pass
