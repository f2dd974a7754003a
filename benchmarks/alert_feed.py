"""Alert Broker Feed fan-out: a visit's alerts to 10 consumer groups, both transports, against plain nats-py.

Usage: python benchmarks/alert_feed.py [--alerts 10000] [--groups 10] [--history 2] [--repeat 2]

Builds one visit of Rubin-shaped alert packets (DiaSource, DiaObject, `--history` previous DiaSources and
forced sources, three FITS cutouts; DMS's batch writer), then times, best of --repeat, from the start of the
publish to the moment the last of --groups consumer groups has received (and committed) every packet:
  nats-py plain   a JetStream stream and one durable pull consumer per group, publish_async and fetch/ack
                  in one asyncio loop (the physical reference: the same bytes, no DMS code)
  DMS nats        `publish_visit` on the JetStream transport, one consumer thread per group, consume+commit
  DMS postgres    the same on the embedded PostgreSQL log (LISTEN/NOTIFY wake-ups)
Uses its own nats-server (a free port, a scratch store) and PostgreSQL on 127.0.0.1:5432 (else pgserver).
Prints seconds per visit, alerts/s and the ratio to plain nats-py. Goal: < 2 s per visit on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import nats  # noqa: E402
from alert_packets import batch  # noqa: E402
from apdb import database, postgres  # noqa: E402
from nats.js import api  # noqa: E402

from dms import migrate  # noqa: E402
from dms.deployment import Deployment  # noqa: E402
from dms.services.alerts.batch import batch_packets  # noqa: E402
from dms.services.alerts.feed import AlertFeed, FeedConfig, open_feed  # noqa: E402


def start_nats(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not installed (Debian package nats-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"nats://127.0.0.1:{port}"


async def _plain(url: str, packets: list[bytes], groups: int, run: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=20_000)
    stream, subject = f"PLAIN{run}", f"plain{run}.alerts"
    await js.add_stream(name=stream, subjects=[subject], storage=api.StorageType.FILE)
    subs = []
    for g in range(groups):
        config = api.ConsumerConfig(
            durable_name=f"g{g}", ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=-1
        )
        subs.append(await js.pull_subscribe(subject, durable=f"g{g}", stream=stream, config=config))

    async def drain(sub: object) -> None:
        got = 0
        while got < len(packets):
            try:
                msgs = await sub.fetch(200, timeout=1)  # type: ignore[attr-defined]
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for m in msgs:
                await m.ack()
            got += len(msgs)

    start = time.perf_counter()
    readers = [asyncio.create_task(drain(s)) for s in subs]
    futures = [await js.publish_async(subject, p) for p in packets]
    await asyncio.gather(*futures)
    await asyncio.gather(*readers)
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed


def plain(url: str, packets: list[bytes], groups: int, run: int) -> float:
    return asyncio.run(_plain(url, packets, groups, run))


def dms(config: FeedConfig, ids: list[int], packets: list[bytes], groups: int, run: int) -> float:
    topic = f"bench{run}-{uuid.uuid4().hex[:6]}"
    with open_feed(config) as producer:
        producer.create_topic(topic)
        feeds: list[AlertFeed] = [open_feed(config) for _ in range(groups)]
        for g, f in enumerate(feeds):  # sessions open, waiting, before the visit is published
            f.consume(topic, f"group{g}", timeout=0)
        done = [0] * groups

        def read(g: int) -> None:
            while done[g] < len(packets):
                got = feeds[g].consume(topic, f"group{g}", max_messages=5000, timeout=5)
                feeds[g].commit(topic, f"group{g}", got)
                done[g] += len(got)

        threads = [threading.Thread(target=read, args=(g,)) for g in range(groups)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        producer.publish_visit(topic, ids, packets)
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        for f in feeds:
            f.close()
    assert done == [len(packets)] * groups, done
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=10_000, help="alerts in the visit")
    parser.add_argument("--groups", type=int, default=10, help="consumer groups (destinations)")
    parser.add_argument("--history", type=int, default=2, help="previous DiaSources per alert")
    parser.add_argument("--repeat", type=int, default=2, help="runs per peer (best kept)")
    parser.add_argument("--pg-url", default=None, help="admin URL of a PostgreSQL server")
    args = parser.parse_args()
    (sources, objects, previous, forced), stamps = batch(args.alerts, args.history)
    packets = batch_packets(sources, objects, previous, forced, stamps)
    ids = [int(i) for i in sources["diaSourceId"]]
    mb = sum(map(len, packets)) / 1e6
    print(f"{len(packets)} alerts, {mb:.1f} MB, {args.groups} groups, best of {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="feedbench-") as tmp, postgres(args.pg_url) as admin:
        proc, url = start_nats(Path(tmp) / "js")
        try:
            with database(admin) as db:
                deployment = Deployment.create(Path(tmp) / "dep", database_url=db)
                migrate.upgrade(deployment)
                peers = {
                    "nats-py plain": lambda r: plain(url, packets, args.groups, r),
                    "DMS nats": lambda r: dms(
                        FeedConfig(transport="nats", nats_url=url), ids, packets, args.groups, r
                    ),
                    "DMS postgres": lambda r: dms(
                        FeedConfig(transport="postgres", database_url=db), ids, packets, args.groups, r
                    ),
                }
                best = {name: min(run(r) for r in range(args.repeat)) for name, run in peers.items()}
                deployment.dispose()
        finally:
            proc.terminate()
            proc.wait()
    reference = best["nats-py plain"]
    for name, seconds in best.items():
        print(
            f"{name:14s} {seconds:7.3f} s/visit  {len(packets) * args.groups / seconds:9.0f} deliveries/s  "
            f"x{seconds / reference:5.2f} plain nats-py"
        )


if __name__ == "__main__":
    main()
