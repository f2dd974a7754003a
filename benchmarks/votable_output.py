"""Writing a large result as VOTable: DMS's batch-by-batch writer against astropy writing the whole table.

Each writer runs in a fresh process on the same Arrow result (a million rows by default: id, ra, dec, a
nullable magnitude and a name), writes it to a file, and reports its time and its peak resident memory above
the memory the Arrow result itself takes (what the writer adds). Peers, side by side in one run:

* ``dms-stream``: ``dms.services.vo.votable_writer.write_votable`` (TAP, `dms query --format votable`);
* ``astropy-table``: astropy's ``Table.write(format="votable")`` of the whole result as an astropy Table;
* ``astropy-document``: the whole document rendered in memory by astropy (how DMS wrote it before).

    .venv/bin/python benchmarks/votable_output.py [--rows 1000000] [--serialization tabledata|binary2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITERS = ("dms-stream", "astropy-table", "astropy-document")


def result_table(rows: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(1)
    mag = rng.uniform(10, 25, rows)
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "ra": pa.array(rng.uniform(0, 360, rows)),
            "dec": pa.array(rng.uniform(-90, 90, rows)),
            "mag": pa.array(mag, mask=mag > 24),
            "name": pa.array([f"obj{i}" for i in range(rows)]),
        }
    )


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(writer: str, rows: int, serialization: str, target: Path) -> dict[str, float]:
    """In this (fresh) process: build the result, then write it with `writer`."""
    table = result_table(rows)
    before = peak_mib()
    started = time.perf_counter()
    if writer == "dms-stream":
        from dms.services.vo.votable_writer import write_votable

        write_votable(target, table, serialization=serialization)
    elif writer == "astropy-table":
        from dms.services.vo.votable_writer import to_astropy

        to_astropy(table).write(target, format="votable", tabledata_format=serialization, overwrite=True)
    else:
        import io

        from astropy.io.votable import from_table

        from dms.services.vo.votable_writer import to_astropy

        buffer = io.BytesIO()
        from_table(to_astropy(table)).to_xml(buffer, tabledata_format=serialization)
        target.write_bytes(buffer.getvalue())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "extra_mib": peak_mib() - before, "bytes": target.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="result rows (default 1,000,000)")
    parser.add_argument("--serialization", choices=("tabledata", "binary2"), default="tabledata")
    parser.add_argument("--one", choices=WRITERS, help=argparse.SUPPRESS)  # internal: run one writer
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.rows, args.serialization, args.target)))
        return
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for writer in WRITERS:
            command = [sys.executable, __file__, "--one", writer, "--rows", str(args.rows)]
            command += [
                "--serialization",
                args.serialization,
                "--target",
                str(Path(scratch) / f"{writer}.vot"),
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[writer] = json.loads(output.strip().splitlines()[-1])
    base = results["dms-stream"]
    print(f"{args.rows:,} rows, {args.serialization}")
    print(
        f"{'writer':<18} {'seconds':>8} {'extra MiB':>10} {'MB written':>11} {'mem/dms':>8} {'time/dms':>9}"
    )
    for writer, r in results.items():
        print(
            f"{writer:<18} {r['seconds']:>8.1f} {r['extra_mib']:>10.0f} {r['bytes'] / 1e6:>11.0f} "
            f"{r['extra_mib'] / max(base['extra_mib'], 1):>8.1f} {r['seconds'] / base['seconds']:>9.2f}"
        )


if __name__ == "__main__":
    main()
