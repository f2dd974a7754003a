"""The cost of token authentication per TAP sync request (issue 18; goal: under 0.5 ms added).

Usage: python benchmarks/auth.py [--requests 400] [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a throw-away database on the given PostgreSQL server, migrates it, publishes a small table
(survey.obj, 3,000 rows), serves the VO services in a thread and times the same one-row TAP sync query over
one keep-alive HTTP connection, interleaved: anonymous, with a bearer token, and with a portal session cookie.
It prints p50 / mean per flavour, the milliseconds each adds to the anonymous request and the ratios, and the
in-process cost of the token lookup alone (one indexed SELECT on dms.access_token) and of the visibility
check of the named tables (one dms.table_visible call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from vo_support import publish_test_data  # noqa: E402

from dms import migrate  # noqa: E402
from dms.deployment import Deployment  # noqa: E402
from dms.services.auth import TokenBackend, add_user, issue_token  # noqa: E402
from dms.services.vo.server import running_server  # noqa: E402
from dms.services.workspace.viewer import Viewer  # noqa: E402
from dms.services.workspace.visibility import hidden_tables  # noqa: E402

QUERY = "SELECT TOP 1 id, ra, dec FROM survey.obj WHERE id = {id}"


def timed(client: httpx.Client, url: str, headers: dict[str, str], cookies: dict[str, str], n: int) -> float:
    start = time.perf_counter()
    response = client.post(
        f"{url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": QUERY.format(id=n % 3000 + 1)},
        headers=headers,
        cookies=cookies,
    )
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise SystemExit(f"request failed: {response.status_code} {response.text[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="Requests per flavour.")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"dmsbench_auth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = args.database_url.rsplit("/", 1)[0]
    try:
        with tempfile.TemporaryDirectory() as folder:
            deployment = Deployment.create(Path(folder) / "dep", database_url=f"{base}/{name}")
            migrate.upgrade(deployment)
            publish_test_data(deployment)
            with deployment.connect() as conn:
                add_user(conn, "bench")
                _, token = issue_token(conn, "bench")
                conn.commit()
            run(deployment, token, args.requests)
            deployment.dispose()
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(deployment: Deployment, token: str, requests: int) -> None:
    with running_server(deployment) as url, httpx.Client(timeout=60) as client:
        session = client.post(f"{url}/api/login", json={"token": token}).cookies["dms_session"]
        client.cookies.clear()
        flavours: dict[str, tuple[dict[str, str], dict[str, str]]] = {
            "anonymous": ({}, {}),
            "bearer token": ({"Authorization": f"Bearer {token}"}, {}),
            "session cookie": ({}, {"dms_session": session}),
        }
        samples: dict[str, list[float]] = {k: [] for k in flavours}
        for n in range(50):  # warm up: connections, caches, plans
            for headers, cookies in flavours.values():
                timed(client, url, headers, cookies, n)
        for n in range(requests):
            for flavour, (headers, cookies) in flavours.items():
                samples[flavour].append(timed(client, url, headers, cookies, n))
    backend = TokenBackend(deployment.engine, allow_anonymous=True)
    lookups = []
    for _ in range(requests):
        start = time.perf_counter()
        backend.lookup(token)
        lookups.append((time.perf_counter() - start) * 1000)
    checks = []
    with deployment.engine().connect() as conn:
        for _ in range(requests):
            start = time.perf_counter()
            hidden_tables(conn, Viewer("bench"), [("survey", "obj")])
            checks.append((time.perf_counter() - start) * 1000)
    anonymous = statistics.median(samples["anonymous"])
    print(f"TAP sync, one-row query, {requests} requests per flavour over one keep-alive connection")
    print(f"{'flavour':16} {'p50 ms':>8} {'mean ms':>8} {'added p50 ms':>13} {'ratio':>6}")
    for flavour, values in samples.items():
        p50 = statistics.median(values)
        print(
            f"{flavour:16} {p50:8.2f} {statistics.mean(values):8.2f} {p50 - anonymous:13.3f} "
            f"{p50 / anonymous:6.3f}"
        )
    print(f"token lookup alone (in process): p50 {statistics.median(lookups):.3f} ms")
    print(f"visibility check of the named table (in process): p50 {statistics.median(checks):.3f} ms")
    added = statistics.median(samples["bearer token"]) - anonymous
    print(
        f"goal: authentication adds < 0.5 ms per request: {'met' if added < 0.5 else 'NOT met'} "
        f"({added:.3f} ms)"
    )


if __name__ == "__main__":
    main()
