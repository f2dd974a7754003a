"""A TAP upload crossmatched with the partitioned Gaia sample: zone join against the old nested loop.

Usage: python benchmarks/upload_crossmatch.py [--rows 1000 10000] [--radius 36] [--timeout 300]

Creates a throw-away embedded deployment, loads the Gaia DR3 sample (482,176 stars, chunk order 3) with
`dms load`, and for each upload size (half the rows within 30 arcsec of a star, half anywhere) runs
``DISTANCE(POINT(u.ra, u.dec), POINT(g.ra, g.dec)) < radius`` through the query engine twice: as planned
(chunk pruning + zone join) and with the upload crossmatch planning switched off (every chunk, every upload
row: the old nested loop), up to --timeout seconds. Prints seconds, pairs, and whether both agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_upload_crossmatch import make_upload  # noqa: E402

from dms import migrate  # noqa: E402
from dms.deployment import Deployment  # noqa: E402
from dms.loaders.catalog import TableOptions, load_files  # noqa: E402
from dms.loaders.samples import gaia_table, write_parquet  # noqa: E402
from dms.query import engine as engine_module  # noqa: E402
from dms.query.engine import QueryEngine  # noqa: E402
from dms.query.errors import QueryTimeout  # noqa: E402


def run(engine: QueryEngine, query: str, upload: pa.Table, timeout: float) -> tuple[float, int | None]:
    started = time.perf_counter()
    try:
        result = engine.execute(query, lang="adql", uploads={"t": upload}, timeout=timeout)
    except QueryTimeout:
        return time.perf_counter() - started, None
    return time.perf_counter() - started, result.table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--radius", type=float, default=36.0, help="match radius, arcsec")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before the nested loop stops")
    args = parser.parse_args()
    query = (
        "SELECT u.k, g.source_id FROM TAP_UPLOAD.t AS u JOIN cat.gaia AS g "
        f"ON DISTANCE(POINT('ICRS', u.ra, u.dec), POINT('ICRS', g.ra, g.dec)) < {args.radius / 3600!r}"
    )
    with tempfile.TemporaryDirectory(prefix="dms-xmatch-") as tmp:
        deployment = Deployment.create(Path(tmp) / "dep")
        try:
            migrate.upgrade(deployment)
            gaia = gaia_table()
            path = write_parquet(gaia, Path(tmp) / "gaia.parquet")
            load_files(
                deployment,
                "gaia",
                [path],
                progress=False,
                create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=3),
            )
            planned = engine_module.prepare_upload_match
            print(f"{'rows':>7} {'zone join s':>12} {'nested loop s':>14} {'pairs':>7}  same")
            with QueryEngine(deployment) as engine:
                for rows in args.rows:
                    upload = make_upload(gaia, rows, seed=rows)
                    fast, pairs = run(engine, query, upload, args.timeout)
                    engine_module.prepare_upload_match = lambda *a, **k: None  # type: ignore[assignment]
                    try:
                        slow, old_pairs = run(engine, query, upload, args.timeout)
                    finally:
                        engine_module.prepare_upload_match = planned
                    slow_text = (
                        f"{slow:14.2f}" if old_pairs is not None else f"{'> ' + str(args.timeout):>14}"
                    )
                    same = "yes" if old_pairs == pairs else ("n/a" if old_pairs is None else "NO")
                    print(f"{rows:>7} {fast:12.2f} {slow_text} {pairs:>7}  {same}", flush=True)
        finally:
            deployment.stop()


if __name__ == "__main__":
    main()
