"""The Alert Broker Feed: a durable, ordered, replayable stream of alert packets

One interface, two transports.

A *topic* (e.g. ``alerts``, or one mini-broker user's filtered feed) is an append-only log of messages, each a
(key, packet bytes) pair; the key routes a message to one of the topic's *partitions* (a stable hash), and
each message gets an *offset*: its position in the topic's log, increasing in publish order (1, 2, 3, ...;
offsets are per topic, so each partition's offsets increase but are not contiguous). A *consumer group* reads
a topic from its committed offsets; messages it has read but not committed are read again by the next
`consume` of a new consumer of the same group (after a crash, a restart), so delivery is at-least-once and a
consumer that commits what it has processed never loses an alert. Replay reads from an offset or a time
without touching the group's offsets.

Transports are registered by name (`register`), chosen by `FeedConfig.transport`:

* ``postgres`` (the default, embedded): the log in PostgreSQL (`dms.alert_feed_*`), new messages announced
  with LISTEN/NOTIFY, served over HTTP by ``dms alerts serve``;
* ``nats``: NATS JetStream, a stream per topic, a durable pull consumer per group, commits as acks.

All methods are synchronous and thread-safe enough for one feed object per thread.
"""

from __future__ import annotations

import importlib
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dms.errors import DMSError

#: Topic names: as NATS subjects and PostgreSQL rows both accept them.
TOPIC_PATTERN = r"^[a-z][a-z0-9_\-]{0,62}$"


class FeedError(DMSError):
    """A feed request that cannot be served (the message names the topic, group or offset)."""


class UnknownTopicError(FeedError):
    """The topic was never created."""


class OffsetOutOfRangeError(FeedError):
    """An offset (or time) before the first or after the last message of a topic."""


@dataclass(frozen=True)
class FeedMessage:
    """One message of a topic as a consumer receives it."""

    topic: str
    partition: int
    offset: int  # position in the topic's log (1-based, increasing in publish order)
    key: str
    value: bytes  # the alert packet: Confluent header + Avro
    published_at: datetime  # UTC, when the message was appended


@dataclass(frozen=True)
class PublishResult:
    """What one `publish` appended."""

    topic: str
    first_offset: int
    last_offset: int
    count: int


class FeedConfig(BaseModel):
    """Which transport carries the feed and how it is reached."""

    model_config = ConfigDict(extra="forbid")

    transport: Literal["postgres", "nats"] = Field(
        default="postgres",
        description="'postgres': the embedded log in the control database (default); "
        "'nats': NATS JetStream at nats_url.",
    )
    database_url: str | None = Field(
        default=None, description="Control database URL for 'postgres' (default: the deployment's)."
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL for 'nats'.")
    partitions: int = Field(default=1, ge=1, le=64, description="Partitions of a topic created on first use.")
    ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="'nats': seconds JetStream waits for an ack before redelivering to another consumer.",
    )


def partition_of(key: str, partitions: int) -> int:
    """The partition a key goes to: a stable hash (CRC-32), the same on every transport and run."""
    return zlib.crc32(key.encode()) % partitions


class AlertFeed(ABC):
    """A feed of alert packets: publish batches, consume by group with committed offsets, replay."""

    @abstractmethod
    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create a topic (idempotent; an existing topic keeps its partitions)."""

    @abstractmethod
    def topics(self) -> list[str]:
        """Names of the topics that exist."""

    @abstractmethod
    def publish(self, topic: str, messages: Sequence[tuple[str, bytes]]) -> PublishResult:
        """Append a batch of (key, packet) in order, all or nothing; the topic must exist."""

    @abstractmethod
    def consume(
        self, topic: str, group: str, *, max_messages: int = 1000, timeout: float = 1.0
    ) -> list[FeedMessage]:
        """The group's next messages after what it has received in this session (or, in a new session, after
        its committed offsets), waiting up to `timeout` seconds for the first one; [] if none arrived."""

    @abstractmethod
    def commit(self, topic: str, group: str, messages: Iterable[FeedMessage]) -> None:
        """Record that the group has processed these messages (and, per partition, all before them)."""

    @abstractmethod
    def committed(self, topic: str, group: str) -> dict[int, int]:
        """The group's committed offset per partition: every message of the partition up to it is processed
        (0: nothing committed; a transport may report a later offset when the partition has none between)."""

    @abstractmethod
    def seek(
        self, topic: str, group: str, *, offset: int | None = None, time: datetime | None = None
    ) -> None:
        """Move the group so its next message is at `offset` (or the first published at or after `time`)."""

    @abstractmethod
    def replay(
        self,
        topic: str,
        *,
        from_offset: int | None = None,
        from_time: datetime | None = None,
        max_messages: int = 1000,
    ) -> list[FeedMessage]:
        """Messages from an offset or a time, in order, without touching any group."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def publish_visit(self, topic: str, alerts: Any, packets: Sequence[bytes]) -> PublishResult:
        """Publish one visit's alerts as one batch, keyed by alert id: `alerts` is the ids, or archive rows
        (a frame with `alert_id`, as `find_alerts` returns) or DiaSources (`diaSourceId`), in packet order."""
        columns = getattr(alerts, "columns", None)
        if columns is not None:
            name = "alert_id" if "alert_id" in columns else "diaSourceId"
            if name not in columns:
                raise FeedError("alert rows need an alert_id (archive) or diaSourceId (DiaSource) column")
            alerts = alerts[name].tolist()
        ids = [int(a) for a in alerts]
        if len(ids) != len(packets):
            raise FeedError(f"{len(packets)} packets given for {len(ids)} alert ids")
        return self.publish(topic, [(str(a), bytes(p)) for a, p in zip(ids, packets, strict=True)])

    def __enter__(self) -> AlertFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The module that registers each transport, imported on first use (nats-py only when NATS is used).
_MODULES = {"postgres": "dms.services.alerts.feed.postgres", "nats": "dms.services.alerts.feed.jetstream"}
_TRANSPORTS: dict[str, Callable[[FeedConfig], AlertFeed]] = {}


def register(name: str) -> Callable[[Callable[[FeedConfig], AlertFeed]], Callable[[FeedConfig], AlertFeed]]:
    """Register a transport's constructor under its `FeedConfig.transport` name."""

    def add(factory: Callable[[FeedConfig], AlertFeed]) -> Callable[[FeedConfig], AlertFeed]:
        _TRANSPORTS[name] = factory
        return factory

    return add


def open_feed(config: FeedConfig | None = None, **settings: Any) -> AlertFeed:
    """The feed that `config` (or the settings given as keywords) names."""
    config = config or FeedConfig(**settings)
    if config.transport not in _TRANSPORTS:
        importlib.import_module(_MODULES[config.transport])  # registers itself
    return _TRANSPORTS[config.transport](config)


__all__ = [
    "AlertFeed",
    "FeedConfig",
    "FeedError",
    "FeedMessage",
    "OffsetOutOfRangeError",
    "PublishResult",
    "UnknownTopicError",
    "open_feed",
    "partition_of",
    "register",
]
