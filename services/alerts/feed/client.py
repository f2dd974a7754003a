"""A consumer of `dms alerts serve` over HTTP: the NDJSON stream of a group, commits by POST."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from dms.services.alerts.feed import FeedError, FeedMessage


class HttpConsumer:
    """Reads a topic as a consumer group from a feed server (`base_url`, e.g. http://host:8100)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def stream(
        self,
        topic: str,
        group: str,
        *,
        from_offset: int | None = None,
        from_time: datetime | None = None,
        max_messages: int | None = None,
        wait: float = 5.0,
    ) -> Iterator[FeedMessage]:
        """The group's messages as the server streams them (a new session: from the committed offsets)."""
        params: dict[str, Any] = {"group": group, "wait": wait}
        if from_offset is not None:
            params["from_offset"] = from_offset
        if from_time is not None:
            params["from_time"] = from_time.isoformat()
        if max_messages is not None:
            params["max"] = max_messages
        with self._http.stream("GET", f"/feed/{topic}", params=params) as response:
            if response.status_code != 200:
                response.read()
                raise FeedError(_reason(response))
            for line in response.iter_lines():
                if line:
                    r = json.loads(line)
                    yield FeedMessage(
                        r["topic"],
                        int(r["partition"]),
                        int(r["offset"]),
                        r["key"],
                        base64.b64decode(r["packet"]),
                        datetime.fromisoformat(r["published_at"]),
                    )

    def commit(self, topic: str, group: str, messages: list[FeedMessage]) -> dict[int, int]:
        """Commit what was processed; the server's committed offsets per partition after it."""
        offsets: dict[str, int] = {}
        for m in messages:
            offsets[str(m.partition)] = max(offsets.get(str(m.partition), 0), m.offset)
        response = self._http.post(f"/feed/{topic}/commit", json={"group": group, "offsets": offsets})
        if response.status_code != 200:
            raise FeedError(_reason(response))
        return {int(p): int(o) for p, o in response.json()["committed"].items()}

    def packet(self, alert_id: int) -> bytes:
        """An archived alert's packet (a broker catching up)."""
        response = self._http.get(f"/alerts/{int(alert_id)}")
        if response.status_code != 200:
            raise FeedError(_reason(response))
        return response.content

    def close(self) -> None:
        self._http.close()


def _reason(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"feed server answered {response.status_code}: {message}"
