"""Golden plans: the engine's plan of each query (chunks per shard, per-shard SQL, merge) as checked-in JSON.

Each query in QUERIES has a fixture tests/data/plans/<name>.json holding its SQL and the `QueryPlan.to_dict()`
of every flat SELECT the engine plans for it, over real Gaia DR3 / Hipparcos data (tests/catalog_fixtures.py)
on two DuckDB/Parquet shards and one PostgreSQL shard. A change to planning or rewriting shows up as a diff of
these files, to review like sqlglot's optimizer fixtures.

Regenerate the fixtures after an intended change with

    DMS_UPDATE_PLANS=1 pytest tests/test_query_plans.py

and review `git diff tests/data/plans/`. Shard directories (temporary) are written as ``<root:SHARD>``.
The plans are also executed, and their results compared with the unpartitioned DuckDB copy of the data.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import write_parquet
from dms.query.engine import SHAPE_NOTE, QueryEngine
from dms.query.shard_plan import QueryPlan
from tests.catalog_fixtures import (
    Sample,
    canonical_rows,
    make_sample,
    reference,
    reference_connection,
    sample_deployment,
)

FIXTURES = Path(__file__).parent / "data" / "plans"
UPDATE = os.environ.get("DMS_UPDATE_PLANS") == "1"

QUERIES: dict[str, str] = {
    "cone_duckdb": (
        "SELECT source_id, ra, dec FROM gaia WHERE scisql_s2PtInCircle(ra, dec, 83.6, 22.0, 2) = 1"
    ),
    "cone_postgres": (
        "SELECT source_id, ra, dec FROM gaia_pg WHERE scisql_s2PtInCircle(ra, dec, 83.6, 22.0, 2) = 1"
    ),
    "box_and_filter": (
        "SELECT source_id FROM gaia WHERE ra BETWEEN 350 AND 360 AND dec BETWEEN -5 AND 5 "
        "AND phot_g_mean_mag < 9"
    ),
    "id_lookup_duckdb": "SELECT * FROM gaia WHERE source_id = 4295806720",
    "id_lookup_postgres": "SELECT * FROM gaia_pg WHERE source_id = 4295806720",
    "registry_count": "SELECT COUNT(*) FROM gaia",
    "aggregate": (
        "SELECT floor(phot_g_mean_mag) AS g, COUNT(*) AS n, AVG(dec) AS d FROM gaia "
        "GROUP BY floor(phot_g_mean_mag) HAVING COUNT(*) > 100"
    ),
    "order_limit": "SELECT source_id, phot_g_mean_mag FROM gaia ORDER BY phot_g_mean_mag, source_id LIMIT 7",
    "count_distinct_postgres": "SELECT COUNT(DISTINCT floor(ra)) AS n FROM gaia_pg WHERE dec > 60",
    "director_child_join": (
        "SELECT g.source_id, o.band, o.flux FROM gaia AS g JOIN obs AS o ON o.source_id = g.source_id "
        "WHERE scisql_s2PtInCircle(g.ra, g.dec, 10.0, 41.2, 3) = 1"
    ),
    "near_neighbours": (
        "SELECT a.source_id AS a_id, b.source_id AS b_id FROM gaia AS a JOIN gaia AS b "
        "ON scisql_angSep(a.ra, a.dec, b.ra, b.dec) < 0.01 AND a.source_id <> b.source_id "
        "WHERE scisql_s2PtInCircle(a.ra, a.dec, 266.4, -29.0, 4) = 1"
    ),
    "crossmatch_hipparcos": (
        "SELECT h.hip, g.source_id FROM hip AS h JOIN gaia AS g "
        "ON scisql_angSep(h.ra, h.dec, g.ra, g.dec) < 0.001 WHERE h.dec > 80"
    ),
    "replicated": "SELECT band, wavelength_nm FROM bands ORDER BY wavelength_nm",
    "subquery_in": (
        "SELECT source_id FROM gaia WHERE source_id IN "
        "(SELECT source_id FROM obs WHERE visit = 3 AND band = 'g')"
    ),
    "empty_region": "SELECT source_id FROM gaia WHERE dec > 89.99999 AND dec < 89.999991",
}


@dataclass
class World:
    deployment: Deployment
    engine: QueryEngine
    roots: dict[str, str]
    sample: Sample


@pytest.fixture(scope="module")
def world(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sample = make_sample(tmp_path_factory.mktemp("plans-sample"))
    deployment = sample_deployment(pg_server, tmp_path_factory.mktemp("plans"), sample)
    engine = QueryEngine(deployment)
    try:
        yield World(deployment, engine, {name: root for name, root in engine.roots.items() if root}, sample)
    finally:
        engine.close()
        deployment.stop()


def _fixture_text(data: dict[str, Any]) -> str:
    """The fixture's JSON, with each job's chunk list on one line (a whole-sky plan reads hundreds)."""
    text = json.dumps(data, indent=1)
    text = re.sub(r"\[\s*(-?\d+),\s*(-?\d+)\s*\]", r"[\1, \2]", text)
    text = re.sub(
        r"\[\s*((?:\[-?\d+, -?\d+\],?\s*)+)\]",
        lambda m: "[" + re.sub(r"\s+", " ", m.group(1)).strip() + "]",
        text,
    )
    return text + "\n"


def _portable(plans: list[QueryPlan], roots: dict[str, str]) -> list[dict[str, Any]]:
    text = json.dumps([p.to_dict() for p in plans])
    for name, root in roots.items():
        text = text.replace(root, f"<root:{name}>")
    return json.loads(text)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_plan_matches_its_golden_fixture(world: World, name: str) -> None:
    sql = QUERIES[name]
    plans = _portable(world.engine.plan(sql), world.roots)
    path = FIXTURES / f"{name}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_fixture_text({"sql": sql, "plans": plans}))
    assert path.exists(), f"no fixture {path}: run with DMS_UPDATE_PLANS=1 to write it"
    golden = json.loads(path.read_text())
    assert golden["sql"] == sql, f"{path} is of another query: regenerate it"
    assert plans == golden["plans"]


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_planned_query_answers_as_the_unpartitioned_copy(world: World, name: str) -> None:
    conn = reference_connection(world.sample)
    try:
        # gaia_pg holds gaia's rows on the PostgreSQL shard
        want = reference(conn, QUERIES[name].replace("gaia_pg", "gaia"))
    finally:
        conn.close()
    got = world.engine.execute(QUERIES[name]).table
    assert got.num_rows == want.num_rows
    assert canonical_rows(got) == canonical_rows(want)


def test_plans_round_trip_through_json(world: World) -> None:
    for sql in QUERIES.values():
        for plan in world.engine.plan(sql):
            again = QueryPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
            assert again.to_dict() == plan.to_dict()
    with pytest.raises(ValueError, match="plan format"):
        QueryPlan.from_dict({"format": 999})


def test_the_plan_is_what_runs(world: World) -> None:
    """The explain text lists exactly the plan's per-shard SQL (built once, then dispatched as is)."""
    sql = QUERIES["cone_duckdb"]
    (plan,) = world.engine.plan(sql)
    explained = world.engine.explain(sql).splitlines()
    assert [line for line in explained if line.startswith("[shard")] == [
        f"[{job.shard}] {job.sql}" for job in plan.jobs
    ]
    assert plan.strategy == "chunks" and plan.primary == "cat.gaia" and plan.jobs


def test_a_repeated_query_reuses_its_plan_until_the_registry_changes(world: World, tmp_path: Path) -> None:
    sql = QUERIES["box_and_filter"]
    first = world.engine.execute(sql)
    second = world.engine.execute(sql)
    assert second.plan[0] in ("plan from the cache", SHAPE_NOTE)
    assert canonical_rows(second.table) == canonical_rows(first.table)
    # a load (of another table) changes the registry generation: the next query is planned afresh
    path = write_parquet(world.sample.tables["bands"], tmp_path / "bands.parquet")
    load_files(world.deployment, "bands_copy", [path], progress=False, create=TableOptions(role="replicated"))
    third = world.engine.execute(sql)
    assert "plan from the cache" not in third.plan and SHAPE_NOTE not in third.plan
    assert canonical_rows(third.table) == canonical_rows(first.table)
