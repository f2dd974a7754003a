"""Delivering each user's matches: over HTTP from `minibroker.match` (app.py), and onto the Alert Broker Feed.

`publish_matches_to_feed` is the adapter to the feed of issue 14 parts 1-2 (`dms.services.alerts.feed`,
`AlertFeed`): it publishes each user's matched packets of a visit, as one batch, to the user's own topic
(`feed_topic`). It takes any object with the feed's `create_topic` and `publish_visit`, so this module does
not depend on the feed being installed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dms.services.minibroker.evaluate import FilterRun


class FeedLike(Protocol):
    """The part of `dms.services.alerts.feed.AlertFeed` the mini-broker uses."""

    def create_topic(self, topic: str, partitions: int | None = None) -> None: ...

    def publish_visit(self, topic: str, alert_ids: Sequence[int], packets: Sequence[bytes]) -> Any: ...


def feed_topic(user: str) -> str:
    """The feed topic of a user: 'minibroker-' + the name folded to the feed's topic alphabet, + a short hash
    (two names that fold alike still get different topics)."""
    folded = re.sub(r"[^a-z0-9_\-]", "-", user.lower())[:40]
    return f"minibroker-{folded}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"


def publish_matches_to_feed(
    feed: FeedLike, runs: list[FilterRun], packet: Callable[[int], bytes]
) -> dict[str, int]:
    """Publish each user's matches of these runs (deduplicated across their filters) to the user's topic;
    `packet(alert_id)` gives the packet (e.g. `archive.read_packet` on the Data Backbone). Returns counts."""
    per_user: dict[str, dict[int, None]] = {}  # insertion-ordered sets
    for run in runs:
        per_user.setdefault(run.owner, {}).update((alert, None) for alert, _, _ in run.rows)
    published = {}
    for user, alerts in per_user.items():
        if not alerts:
            continue
        topic = feed_topic(user)
        feed.create_topic(topic)
        feed.publish_visit(topic, list(alerts), [packet(a) for a in alerts])
        published[user] = len(alerts)
    return published
