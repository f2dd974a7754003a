"""Alert packet serialisation on one core: DMS's writer against lsst-alert-packet's own `Schema.serialize`.

Usage: python benchmarks/alert_packets.py [--alerts 10000] [--history 10] [--repeat 3]

Builds one batch of alerts shaped like Rubin's (a DiaSource, its DiaObject, `--history` previous DiaSources
and forced sources each, three 30 x 30 FITS cutouts), then times, in this one process, turning the records
into wire packets with DMS's columnar batch writer (`dms.services.alerts.batch.batch_packets`, from the APDB
frames), with DMS's per-record fastavro writer, and with lsst-alert-packet's `Schema.serialize` (what Rubin's
alert producer calls per alert, plus the same header; the records are built beforehand and not timed).
Prints alerts per second, MB/s and the ratio, and checks that both give the same bytes. Rubin's own Python
producer was measured at ~300 alerts/s end to end; the issue's goal is >= 3,000/s for serialisation.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from apdb_support import field_positions, make_forced, make_objects, make_sources  # noqa: E402
from lsst.alert.packet import Schema  # noqa: E402

from dms.services.alerts.batch import batch_packets  # noqa: E402
from dms.services.alerts.cutouts import stamp  # noqa: E402
from dms.services.alerts.packets import Cutouts, alert_records, gather, latest_schema, serialize  # noqa: E402

MJD = 60_900.2


def batch(n: int, history: int) -> tuple[tuple[pd.DataFrame, ...], list[Cutouts]]:
    rng = np.random.default_rng(5)
    objects = make_objects(rng, np.arange(1, n + 1), field_positions(rng, n, 10.0, -40.0, 1.75), MJD)
    objects["validityStartMjdTai"] = MJD - 1
    sources = make_sources(rng, objects, visit=99, detector=3, mjd=MJD, first_id=10**9)
    previous = pd.concat(
        [
            make_sources(rng, objects, visit=k, detector=3, mjd=MJD - k, first_id=n * k)
            for k in range(1, history + 1)
        ]
    )
    forced = pd.concat(
        [
            make_forced(objects, visit=k, detector=3, mjd=MJD - k, first_id=n * k)
            for k in range(1, history + 1)
        ]
    )
    image = rng.normal(0, 10, (512, 512)).astype(np.float32)
    fits_stamp = stamp(image, 256.0, 256.0)
    stamps = [Cutouts(fits_stamp, fits_stamp, fits_stamp)] * n
    return (sources, objects, previous, forced), stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=10, help="previous DiaSources and forced sources each")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frames, stamps = batch(args.alerts, args.history)
    records = alert_records(gather(*frames), stamps)
    rubin = Schema.from_file()
    header = struct.pack(">bI", 0, rubin.get_schema_id())
    schema = latest_schema()

    def dms_columnar() -> list[bytes]:
        return batch_packets(*frames, cutouts=stamps, schema=schema)

    def dms_fastavro() -> list[bytes]:
        return [serialize(r, schema) for r in records]

    def lsst_alert_packet() -> list[bytes]:
        return [header + rubin.serialize(r) for r in records]

    results = {}
    runs = (
        ("DMS", dms_columnar),
        ("DMS per record (fastavro)", dms_fastavro),
        ("lsst-alert-packet Schema.serialize", lsst_alert_packet),
    )
    for name, run in runs:
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            packets = run()
            best = min(best, time.perf_counter() - started)
        results[name] = (best, packets)
    same = (
        results["DMS"][1]
        == results["lsst-alert-packet Schema.serialize"][1]
        == results["DMS per record (fastavro)"][1]
    )
    size = sum(len(p) for p in results["DMS"][1]) / len(records)
    dms_rate = len(records) / results["DMS"][0]
    print(
        f"{len(records)} alerts, {args.history} previous sources and forced sources each, "
        f"{size / 1e3:.1f} kB each"
    )
    for name, (seconds, _) in results.items():
        rate = len(records) / seconds
        print(
            f"{name:<36} {rate:>9.0f} alerts/s {rate * size / 1e6:>7.1f} MB/s "
            f"DMS {dms_rate / rate:>5.2f}x   vs Rubin producer (~300/s): {rate / 300:>5.1f}x"
        )
    print(
        f"same bytes: {'yes' if same else 'NO'}; "
        f"goal >= 3,000 alerts/s: {'met' if dms_rate >= 3000 else 'missed'}"
    )


if __name__ == "__main__":
    main()
