"""The cache of query shapes (dms.query.shape, dms.query.fast_path): a repeated cone or id lookup with new
literals is a parameter bind into the first one's per-shard query, and answers exactly as planning it
afresh would, and as one unpartitioned DuckDB copy of the data does.

Real Gaia DR3 (~40k stars, tests/catalog_fixtures.py) on a DuckDB/Parquet shard and on a PostgreSQL shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest
import sqlalchemy as sa
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from sqlglot.tokens import TokenType

from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import write_parquet
from dms.query.adql import frames
from dms.query.engine import SHAPE_NOTE, QueryEngine
from dms.query.fast_path import TemplateCache, literal_blind
from dms.query.parse import parse
from dms.query.registry import GENERATION_SQL, Registry
from dms.query.shape import shape_of
from dms.query.shape_memo import ShapeMemo, names_spelled_out
from tests.catalog_fixtures import (
    Sample,
    canonical_rows,
    make_sample,
    reference,
    reference_connection,
    sample_deployment,
)
from tests.hypothesis_profiles import examples

TABLES = ("gaia", "gaia_pg")  # the same rows on a DuckDB/Parquet shard and on a PostgreSQL shard


@dataclass
class World:
    deployment: Deployment
    engine: QueryEngine
    sample: Sample
    reference: duckdb.DuckDBPyConnection


@pytest.fixture(scope="module")
def world(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sample = make_sample(tmp_path_factory.mktemp("shape-sample"))
    deployment = sample_deployment(pg_server, tmp_path_factory.mktemp("shape"), sample)
    engine = QueryEngine(deployment)
    conn = reference_connection(sample)
    try:
        yield World(deployment, engine, sample, conn)
    finally:
        conn.close()
        engine.close()
        deployment.stop()


def _expected(world: World, sql: str) -> list[tuple[object, ...]]:
    return canonical_rows(reference(world.reference, sql.replace("gaia_pg", "gaia")))


def _cone(table: str, ra: float, dec: float, radius: float) -> str:
    return (
        f"SELECT source_id, ra, dec, phot_g_mean_mag FROM {table} "
        f"WHERE scisql_s2PtInCircle(ra, dec, {ra:.5f}, {dec:.5f}, {radius:.4f}) = 1"
    )


# the shape of a query's text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a FROM t WHERE scisql_s2PtInCircle(ra, dec, 83.6, -22.0, 0.5) = 1",
        "SELECT \"x1\", 'it''s' AS s FROM t2 WHERE id IN (1, 22, 333) AND m < 9.25 LIMIT 10",
        "SELECT a1 + 2 FROM t WHERE b = 'x' OR c BETWEEN 3 AND 4.",
    ],
)
def test_literals_are_those_the_sql_tokenizer_reads(sql: str) -> None:
    """The literals the regular-expression pass finds are the tokenizer's numbers and strings."""
    shape = shape_of(sql)
    assert shape is not None
    tokens = sqlglot.Dialect.get_or_raise("postgres").tokenize(sql)
    want = [(t.text, t.start) for t in tokens if t.token_type in (TokenType.NUMBER, TokenType.STRING)]
    got = [(lit.text, lit.start) for lit in shape.literals]
    assert got == want


def test_a_number_the_tokenizer_splits_stays_in_the_key() -> None:
    """sqlglot reads `.5` as a dot and 5: not a literal the pass reports, so the shape keeps its text."""
    shape = shape_of("SELECT a FROM t WHERE x > .5 AND y < 1e3")
    assert shape is not None and ".5" in shape.key and "1e3" in shape.key and shape.literals == ()


@given(
    st.floats(0, 360, allow_nan=False),
    st.floats(0, 90, allow_nan=False),
    st.floats(0.001, 2, allow_nan=False),
)
def test_cones_at_other_positions_have_one_shape(ra: float, dec: float, radius: float) -> None:
    """A minus sign is an operator, not part of the literal: southern cones have a shape of their own."""
    first, other = shape_of(_cone("gaia", 10.0, 20.0, 1.0)), shape_of(_cone("gaia", ra, dec, radius))
    south = shape_of(_cone("gaia", ra, -dec - 0.5, radius))
    assert first is not None and other is not None and south is not None
    assert other.key == first.key and south.key != first.key
    assert [lit.text for lit in other.literals[:3]] == [f"{ra:.5f}", f"{dec:.5f}", f"{radius:.4f}"]
    assert south.literals[1].text == f"{dec + 0.5:.5f}"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a FROM t WHERE b = 1 -- a comment",
        "SELECT a FROM t /* c */ WHERE b = 1",
        "SELECT a FROM t WHERE b = $1",
        "SELECT a FROM t WHERE b = E'x\\n'",
        "SELECT a FROM t WHERE b = x'ff'",
    ],
)
def test_text_the_pass_cannot_read_safely_has_no_shape(sql: str) -> None:
    assert shape_of(sql) is None


def test_the_template_cache_is_bounded_and_emptied_by_a_new_generation() -> None:
    cache = TemplateCache(size=2)
    templates = [object(), object(), object()]
    for i, template in enumerate(templates):
        cache.put(i, 7, template)  # type: ignore[arg-type]
    assert len(cache) == 2 and cache.get(0, 7) is None and cache.get(2, 7) is templates[2]
    assert cache.get(1, 7) is templates[1]
    assert cache.get(1, 8) is None and len(cache) == 0


# answers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_repeated_cones_bind_and_answer_as_the_unpartitioned_copy(world: World, table: str) -> None:
    rng = np.random.default_rng(3)
    world.engine.execute(_cone(table, 10.0, 41.0, 1.5))
    fast = 0
    # northern cones: one shape (a southern cone's minus sign makes another)
    for ra, dec in zip(rng.uniform(0, 360, 25), np.degrees(np.arcsin(rng.uniform(0, 1, 25))), strict=True):
        sql = _cone(table, float(ra), float(dec), 1.5)
        result = world.engine.execute(sql)
        fast += SHAPE_NOTE in result.plan
        assert canonical_rows(result.table) == _expected(world, sql), sql
    assert fast == 25  # no cone of 1.5 deg is empty sky: every one is a bind (on one shard or two)


@settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(TABLES),
    st.floats(0, 360, allow_nan=False),
    st.floats(-89, 89, allow_nan=False),
    st.floats(0.01, 4, allow_nan=False),
)
def test_any_cone_from_the_cache_equals_the_unpartitioned_copy(
    world: World, table: str, ra: float, dec: float, radius: float
) -> None:
    world.engine.execute(_cone(table, 1.0, 1.0, 1.0))  # the shape is known
    sql = _cone(table, ra, dec, radius)
    assert canonical_rows(world.engine.execute(sql).table) == _expected(world, sql)


@pytest.mark.parametrize("table", TABLES)
def test_repeated_id_lookups_answer_as_the_unpartitioned_copy(world: World, table: str) -> None:
    ids = world.sample.tables["gaia"]["source_id"].to_numpy()
    picks = [int(i) for i in np.random.default_rng(4).choice(ids, 12)] + [12345]  # 12345 is no star
    world.engine.execute(f"SELECT * FROM {table} WHERE source_id = {picks[0]}")
    fast = 0
    for object_id in picks:
        sql = f"SELECT * FROM {table} WHERE source_id = {object_id}"
        result = world.engine.execute(sql)
        fast += SHAPE_NOTE in result.plan
        assert canonical_rows(result.table) == _expected(world, sql)
        assert result.table.num_rows == (0 if object_id == 12345 else 1)
    assert fast >= 10


def test_a_literal_outside_the_where_clause_is_part_of_the_shape(world: World) -> None:
    """LIMIT 3 and LIMIT 5 share a text shape but not a plan: the second is planned anew."""
    base = "SELECT source_id FROM gaia_pg WHERE dec BETWEEN 10 AND 12 ORDER BY source_id LIMIT "
    world.engine.execute(base + "3")
    again = world.engine.execute(base.replace("12", "13") + "3")
    other = world.engine.execute(base + "5")
    assert SHAPE_NOTE in again.plan and SHAPE_NOTE not in other.plan
    assert canonical_rows(other.table, ordered=True) == canonical_rows(
        reference(world.reference, (base + "5").replace("gaia_pg", "gaia")), ordered=True
    )
    assert other.table.num_rows == 5 and again.table.num_rows == 3


def test_a_query_with_a_subquery_is_never_answered_from_a_shape(world: World) -> None:
    """A subquery's rows become literals of the outer plan: that plan must not serve other literals."""
    sql = "SELECT source_id FROM gaia WHERE source_id IN (SELECT source_id FROM obs WHERE visit = {})"
    for visit in (3, 4, 5):
        result = world.engine.execute(sql.format(visit))
        assert SHAPE_NOTE not in result.plan
        assert canonical_rows(result.table) == _expected(world, sql.format(visit))


def test_a_load_empties_the_cache_and_new_rows_are_seen(world: World, tmp_path: Path) -> None:
    table = "gaia_more"
    first = world.sample.tables["gaia"].slice(0, 20_000)
    load_files(
        world.deployment,
        table,
        [write_parquet(first, tmp_path / "a.parquet")],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=3, storage="postgres"),
    )
    ra, dec = float(first["ra"][0].as_py()), float(first["dec"][0].as_py())
    world.engine.execute(_cone(table, ra + 1, dec, 2.0))
    before = world.engine.execute(_cone(table, ra, dec, 2.0))
    assert SHAPE_NOTE in before.plan
    rest = world.sample.tables["gaia"].slice(20_000)
    load_files(world.deployment, table, [write_parquet(rest, tmp_path / "b.parquet")], progress=False)
    after = world.engine.execute(_cone(table, ra, dec, 2.0))
    assert SHAPE_NOTE not in after.plan  # the registry generation changed: planned afresh
    assert canonical_rows(after.table) == _expected(world, _cone("gaia", ra, dec, 2.0))
    assert after.table.num_rows >= before.table.num_rows


def _outcome(engine: QueryEngine, sql: str) -> tuple[str, object]:
    try:
        return "rows", canonical_rows(engine.execute(sql).table)
    except Exception as exc:
        return "error", type(exc).__name__


@pytest.mark.parametrize("table", TABLES)
def test_new_literals_the_usual_path_treats_specially_get_the_same_outcome(world: World, table: str) -> None:
    """An id beyond BIGINT, a cone of radius 0, a string compared with a number: bound into a known shape,
    the outcome (rows, or the kind of error) is the usual path's."""
    cases = [
        (f"SELECT source_id FROM {table} WHERE source_id = {{}}", ["5", "99999999999999999999", "0"]),
        (_cone(table, 10, 41, 1).replace("1.0000)", "{})"), ["0.0000", "180.5", "0.0001"]),
        (f"SELECT source_id FROM {table} WHERE source_id = '{{}}'", ["5", "x"]),
    ]
    fresh = QueryEngine(world.deployment)
    try:
        for template, values in cases:
            _outcome(world.engine, template.format(values[0]))  # the shape is known
            for value in values[1:]:
                sql = template.format(value)
                fresh.templates.clear()
                assert _outcome(world.engine, sql) == _outcome(fresh, sql), sql
    finally:
        fresh.close()


def test_the_generation_connection_never_returns_to_the_pool(world: World) -> None:
    """The registry's kept connection runs in autocommit; the deployment's pool must never hand it out
    (SQLAlchemy's savepoints need a transaction)."""
    engine = QueryEngine(world.deployment)
    engine.execute(_cone("gaia_pg", 10, 41, 1))
    engine.close()
    pool = world.deployment.engine()
    held = [pool.raw_connection() for _ in range(pool.pool.size() + 2)]
    try:
        assert not any(c.driver_connection.autocommit for c in held)  # type: ignore[union-attr]
    finally:
        for c in held:
            c.close()
    with world.deployment.connect() as conn, conn.begin_nested():
        pass


def test_the_registry_reads_its_generation_on_one_kept_connection(world: World) -> None:
    """The generation is read on the registry's own connection, opened once (the connection's driver
    must be taken before `detach()`, which forgets it: every snapshot then opened a connection)."""
    registry = Registry(world.deployment)
    try:
        with world.deployment.connect() as conn:
            want = conn.execute(sa.text(GENERATION_SQL)).scalar_one()
        assert registry.generation() == want
        kept = registry._generation_conn
        assert kept is not None
        for _ in range(5):
            assert registry.snapshot().generation == want
        assert registry._generation_conn is kept
    finally:
        registry.close()


def _adql_cone(table: str, ra: float, dec: float, radius: float) -> str:
    return (
        f"SELECT source_id, ra, dec, phot_g_mean_mag FROM {table} WHERE "
        f"CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.5f}, {dec:.5f}, {radius:.4f})) = 1"
    )


@pytest.mark.parametrize("table", TABLES)
def test_repeated_adql_cones_bind_and_answer_as_the_unpartitioned_copy(world: World, table: str) -> None:
    """TAP's language takes the shape cache too: the second ADQL cone of a shape is a bind."""
    engine = QueryEngine(world.deployment)
    rng = np.random.default_rng(5)
    try:
        first = engine.execute(_adql_cone(table, 10.0, 41.0, 1.5), lang="adql")
        assert SHAPE_NOTE not in first.plan
        fast = 0
        for ra, dec in zip(rng.uniform(0, 360, 10), rng.uniform(5, 80, 10), strict=True):
            result = engine.execute(_adql_cone(table, float(ra), float(dec), 1.5), lang="adql")
            fast += SHAPE_NOTE in result.plan
            sql = _cone(table, float(ra), float(dec), 1.5)  # the same cone in SQL, for the reference
            assert canonical_rows(result.table) == _expected(world, sql)
        assert fast == 10
        # the same text as SQL is another language: never answered from the ADQL template
        assert len(engine.templates) == 1
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("adql", "blind"),
    [
        (
            "SELECT TOP 5 a FROM t WHERE CONTAINS(POINT('ICRS', ra, dec), "
            "CIRCLE('ICRS', 10.5, 41.0, 1.0)) = 1",
            True,
        ),
        ("SELECT a FROM t WHERE id = 5 AND ra BETWEEN 1 AND 2.5", True),
        # a BOX becomes the polygon of its corners, computed from its numbers
        (
            "SELECT a FROM t WHERE CONTAINS(POINT('ICRS', ra, dec), BOX('ICRS', 10.0, 41.0, 1.0, 2.0)) = 1",
            False,
        ),
        # a GALACTIC circle's center is transformed to ICRS
        (
            "SELECT a FROM t WHERE CONTAINS(POINT('GALACTIC', ra, dec), "
            "CIRCLE('GALACTIC', 10.0, 41.0, 1.0)) = 1",
            False,
        ),
    ],
)
def test_adql_shapes_whose_numbers_the_translation_computes_with_are_not_blind(
    adql: str, blind: bool
) -> None:
    shape = shape_of(adql)
    assert shape is not None
    assert literal_blind(adql, shape, parse(adql, "adql"), lambda text: parse(text, "adql")) is blind


def test_a_translation_that_keeps_a_number_and_computes_with_it_is_not_blind() -> None:
    """A number both kept and used (as a region column's HEALPix cells are computed from a circle that
    stays in the exact test) must fail the check: bound anew, it would disagree with what was computed."""
    sql = "SELECT a FROM t WHERE x < 4.25"

    def computing(text: str) -> exp.Expression:
        tree = parse(text, "sql")
        literal = next(tree.find_all(exp.Literal))
        where = tree.args["where"]
        where.set(
            "this",
            exp.and_(
                where.this,
                exp.LT(this=exp.column("y"), expression=exp.Literal.number(repr(float(literal.this) * 2))),
            ),
        )
        return tree

    shape = shape_of(sql)
    assert shape is not None
    assert literal_blind(sql, shape, computing(sql), computing) is False
    assert literal_blind(sql, shape, parse(sql, "sql"), lambda text: parse(text, "sql")) is True


def test_an_adql_query_with_a_translation_note_keeps_its_note_every_time(world: World) -> None:
    """A query whose translation says something (a frame transformed) is never answered from a template,
    which would leave the note out."""
    engine = QueryEngine(world.deployment)
    try:
        for ra in (120.0, 121.5, 119.25):
            text = (
                "SELECT source_id FROM gaia WHERE CONTAINS(POINT('GALACTIC', ra, dec), "
                f"CIRCLE('GALACTIC', {ra:.4f}, 0.5000, 1.0000)) = 1"
            )
            with frames.collect_notes() as notes:
                result = engine.execute(text, lang="adql")
            assert SHAPE_NOTE not in result.plan
            assert any("transformed to ICRS" in n.text for n in notes)
        assert len(engine.templates) == 0
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("text", "read", "spelled"),
    [
        ("SELECT a FROM cat.obj AS o WHERE o.x = 'cat.obj' AND y = 5", "postgres", True),
        ('SELECT a FROM "cat"."Obj" WHERE x = 1', "postgres", True),
        # DuckDB reads a string after FROM as a file to scan: a literal that names a table
        ("SELECT a FROM 'data.parquet' WHERE x = 1", "duckdb", False),
    ],
)
def test_names_are_spelled_out_only_by_identifiers_outside_literals(
    text: str, read: str, spelled: bool
) -> None:
    shape = shape_of(text)
    assert shape is not None
    assert names_spelled_out(text, shape, sqlglot.parse_one(text, read=read)) is spelled


def test_the_shape_memo_is_bounded_and_emptied_by_a_new_generation() -> None:
    memo: ShapeMemo[int] = ShapeMemo(size=2)
    memo.put("a", 1, 10)
    memo.put("b", 1, 20)
    memo.put("c", 1, 30)
    assert memo.get("a", 1) is None and memo.get("c", 1) == 30 and len(memo) == 2
    assert memo.get("c", 2) is None and len(memo) == 0


def test_a_query_on_an_unchanged_registry_reads_its_generation_only(world: World) -> None:
    """The registry generation is read on the registry's own connection; a query on an unchanged registry
    checks out no connection of the deployment's pool (the kept connection had been lost, so that every
    query opened new connections and read the generation the slow way)."""
    engine = QueryEngine(world.deployment)
    try:
        for table in TABLES:  # their shapes are known
            engine.execute(_cone(table, 10, 41, 1))
        with world.deployment.connect() as conn:
            expected = conn.execute(sa.text("SELECT generation FROM dms.catalog_generation")).scalar_one()
        assert engine.registry.generation() == expected
        checkouts: list[object] = []

        def count(*_args: object) -> None:
            checkouts.append(_args)

        pool = world.deployment.engine().pool
        sa.event.listen(pool, "checkout", count)
        try:
            for table in TABLES:
                for i in range(3):
                    result = engine.execute(_cone(table, 11 + i, 40, 1))
                    assert result.plan[0] == SHAPE_NOTE
                    assert canonical_rows(result.table) == _expected(world, _cone(table, 11 + i, 40, 1))
        finally:
            sa.event.remove(pool, "checkout", count)
        assert checkouts == []
    finally:
        engine.close()
