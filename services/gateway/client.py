"""A minimal subscriber of the gateway's Server-Sent Events (for `dms gateway tail`, tests, benchmarks)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event_id: int
    kind: str
    payload: dict[str, Any]


def subscribe(
    base_url: str,
    *,
    after: int | None = None,
    timeout: float = 30.0,
    on_open: Callable[[], None] | None = None,
) -> Iterator[Event]:
    """Events from the gateway at `base_url`, after event `after` (None: only new ones), as they come.

    `on_open` is called once the gateway has answered, i.e. once the stream's starting position is fixed.
    """
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    with (
        httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0)) as client,
        client.stream("GET", f"{base_url.rstrip('/')}/events", headers=headers) as response,
    ):
        response.raise_for_status()
        if on_open is not None:
            on_open()
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if "id" in fields:
                    yield Event(
                        int(fields["id"]),
                        fields.get("event", "message"),
                        json.loads(fields.get("data", "{}")),
                    )
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value.removeprefix(" ")
