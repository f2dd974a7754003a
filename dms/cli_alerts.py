"""`dms alerts`: the Alert Broker Feed (serve it, create topics, consume it) (issue 14)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from dms.cli import _friendly_errors, _open, data_dir_option


def _transport_options(func: Any) -> Any:
    func = click.option(
        "--nats-url", default="nats://127.0.0.1:4222", show_default=True, help="NATS server (nats transport)."
    )(func)
    return click.option(
        "--transport",
        type=click.Choice(["postgres", "nats"]),
        default="postgres",
        show_default=True,
        help="postgres: the log in the control database; nats: NATS JetStream.",
    )(func)


def _config(ctx: click.Context, transport: str, nats_url: str) -> Any:
    from dms.services.alerts.feed import FeedConfig

    if transport == "nats":
        return FeedConfig(transport="nats", nats_url=nats_url)
    url = _open(ctx).control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    return FeedConfig(transport="postgres", database_url=url)


@click.group()
def alerts() -> None:
    """The Alert Broker Feed: alert packets to community brokers (topics, consumer groups, replay)."""


@alerts.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8100, show_default=True, type=int, help="TCP port to listen on.")
@_transport_options
@data_dir_option
@click.pass_context
@_friendly_errors
def serve(ctx: click.Context, host: str, port: int, transport: str, nats_url: str) -> None:
    """Serve the feed (/feed/TOPIC) and archived packets (/alerts/ID) over HTTP, until interrupted."""
    import uvicorn

    from dms.services.alerts.feed.http import create_app

    app = create_app(_open(ctx), _config(ctx, transport, nats_url))
    click.echo(f"alert feed on http://{host}:{port}/feed/TOPIC?group=G  (transport {transport})")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@alerts.command("create-topic")
@click.argument("topic")
@click.option("--partitions", default=1, show_default=True, type=int, help="Partitions of the topic.")
@_transport_options
@data_dir_option
@click.pass_context
@_friendly_errors
def create_topic(ctx: click.Context, topic: str, partitions: int, transport: str, nats_url: str) -> None:
    """Create TOPIC (nothing changes if it exists)."""
    from dms.services.alerts.feed import open_feed

    with open_feed(_config(ctx, transport, nats_url)) as feed:
        feed.create_topic(topic, partitions)
    click.echo(f"topic {topic}")


@alerts.command("consume")
@click.argument("topic")
@click.option("--group", required=True, help="Consumer group: its committed offsets say where to resume.")
@click.option("--from-offset", type=int, default=None, help="Move the group to this offset first.")
@click.option(
    "--from-time", type=click.DateTime(), default=None, help="Move the group to this time (UTC) first."
)
@click.option("--max", "max_messages", type=int, default=None, help="Stop after this many alerts.")
@click.option("--wait", type=float, default=5.0, show_default=True, help="Stop after this long with none.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write ALERT_ID.avro files here.")
@click.option("--url", default=None, help="Read from a `dms alerts serve` at this URL instead.")
@click.option("--token", envvar="DMS_TOKEN", default=None, help="Bearer token for --url [env: DMS_TOKEN].")
@_transport_options
@data_dir_option
@click.pass_context
@_friendly_errors
def consume(
    ctx: click.Context,
    topic: str,
    group: str,
    from_offset: int | None,
    from_time: datetime | None,
    max_messages: int | None,
    wait: float,
    out: str | None,
    url: str | None,
    token: str | None,
    transport: str,
    nats_url: str,
) -> None:
    """Print (or write) TOPIC's alerts as group GROUP, committing each batch after it is handled."""
    if url:
        from dms.services.alerts.feed.client import HttpConsumer

        client = HttpConsumer(url, token)
        try:
            stream = client.stream(
                topic,
                group,
                from_offset=from_offset,
                from_time=from_time,
                max_messages=max_messages,
                wait=wait,
            )
            batch: list[Any] = []
            for message in stream:
                _handle([message], out)
                batch.append(message)
                if len(batch) >= 500:
                    client.commit(topic, group, batch)
                    batch = []
            if batch:
                client.commit(topic, group, batch)
        finally:
            client.close()
        return
    _consume_direct(ctx, topic, group, from_offset, from_time, max_messages, wait, out, transport, nats_url)


def _consume_direct(
    ctx: click.Context,
    topic: str,
    group: str,
    from_offset: int | None,
    from_time: datetime | None,
    max_messages: int | None,
    wait: float,
    out: str | None,
    transport: str,
    nats_url: str,
) -> None:
    from dms.services.alerts.feed import open_feed

    with open_feed(_config(ctx, transport, nats_url)) as feed:
        if from_offset is not None or from_time is not None:
            feed.seek(topic, group, offset=from_offset, time=from_time)
        seen = 0
        while max_messages is None or seen < max_messages:
            left = 1000 if max_messages is None else min(1000, max_messages - seen)
            batch = feed.consume(topic, group, max_messages=left, timeout=wait)
            if not batch:
                break
            _handle(batch, out)
            feed.commit(topic, group, batch)
            seen += len(batch)


def _handle(messages: Iterable[Any], out: str | None) -> None:
    """Print one line per alert (decoded with fastavro against Rubin's schema), or write its packet."""
    import fastavro

    from dms.services.alerts.packets import latest_schema

    schema = latest_schema().parsed
    for m in messages:
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"{m.key}.avro").write_bytes(m.value)
            continue
        record: Any = fastavro.schemaless_reader(io.BytesIO(m.value[5:]), schema, schema)
        source = record["diaSource"]
        click.echo(
            f"{m.offset}\t{m.partition}\t{source['diaSourceId']}\t{source['ra']:.6f}\t{source['dec']:.6f}\t"
            f"{source['midpointMjdTai']:.6f}"
        )
