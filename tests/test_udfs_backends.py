"""The UDF test harness: one way to evaluate SQL expressions on PostgreSQL and on DuckDB.

The other ``test_udfs_*`` modules import :class:`PostgresUDFs`, :class:`DuckDBUDFs` and the context
managers that open them; the tests in this module check installation itself: every function exists,
PostgreSQL inlines them, the drop script undoes the install, the alembic path (SQLAlchemy ``text()``)
works, DuckDB macros persist in a database file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from dms.udfs import FUNCTIONS, install_postgres, postgres_drop_sql, postgres_install_sql, register_duckdb
from tests.pg_support import create_database, drop_database

Column = Sequence[Any] | np.ndarray


class UDFBackend(Protocol):
    """A database with the UDFs installed, evaluating one SQL expression over rows of inputs."""

    name: str
    error: ClassVar[type[Exception]]

    def rows(self, expression: str, **columns: Column) -> list[Any]:
        """``SELECT expression`` once per row of ``columns`` (equal-length; None is NULL), in order."""
        ...

    def value(self, expression: str) -> Any:
        """``SELECT expression`` with no table."""
        ...


def _column_types(columns: dict[str, Column]) -> dict[str, str]:
    """Integer columns become 32-bit integers, everything else double precision."""
    return {
        name: "integer" if np.asarray(values).dtype.kind in "iu" else "double precision"
        for name, values in columns.items()
    }


def _as_python(values: Column) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


class PostgresUDFs:
    name = "postgres"
    error: ClassVar[type[Exception]] = psycopg.Error

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def rows(self, expression: str, **columns: Column) -> list[Any]:
        types = _column_types(columns)
        ddl = ", ".join(f"{name} {sql_type}" for name, sql_type in types.items())
        self.conn.execute(f"CREATE TEMP TABLE udf_input (i bigint, {ddl})")
        try:
            names = ", ".join(types)
            with self.conn.cursor().copy(f"COPY udf_input (i, {names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", *("int4" if t == "integer" else "float8" for t in types.values())])
                for i, row in enumerate(zip(*(_as_python(v) for v in columns.values()), strict=True)):
                    copy.write_row((i, *row))
            return [r[0] for r in self.conn.execute(f"SELECT {expression} FROM udf_input ORDER BY i")]
        finally:
            self.conn.execute("DROP TABLE udf_input")

    def value(self, expression: str) -> Any:
        row = self.conn.execute(f"SELECT {expression}").fetchone()
        assert row is not None
        return row[0]


class DuckDBUDFs:
    name = "duckdb"
    error: ClassVar[type[Exception]] = duckdb.Error

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def rows(self, expression: str, **columns: Column) -> list[Any]:
        types = _column_types(columns)
        n = len(next(iter(columns.values())))
        table = pa.table(
            {
                "i": pa.array(np.arange(n, dtype=np.int64)),
                **{
                    name: pa.array(_as_python(values), type=pa.int32() if t == "integer" else pa.float64())
                    for (name, values), t in zip(columns.items(), types.values(), strict=True)
                },
            }
        )
        self.conn.register("udf_input", table)
        try:
            return [
                r[0] for r in self.conn.execute(f"SELECT {expression} FROM udf_input ORDER BY i").fetchall()
            ]
        finally:
            self.conn.unregister("udf_input")

    def value(self, expression: str) -> Any:
        # fetchall: a result left half-read blocks the connection's next statement.
        (row,) = self.conn.execute(f"SELECT {expression}").fetchall()
        return row[0]


@contextmanager
def open_postgres(pg_server: Any) -> Iterator[PostgresUDFs]:
    """A fresh database on the session's server with the functions installed; dropped afterwards."""
    name = create_database(pg_server, "udf")
    try:
        with psycopg.connect(pg_server.get_uri(name), autocommit=True) as conn:
            install_postgres(conn)
            yield PostgresUDFs(conn)
    finally:
        drop_database(pg_server, name)


@contextmanager
def open_duckdb() -> Iterator[DuckDBUDFs]:
    """An in-memory DuckDB connection with the macros registered as TEMP macros."""
    conn = duckdb.connect()
    try:
        register_duckdb(conn)
        yield DuckDBUDFs(conn)
    finally:
        conn.close()


def values_equal(a: Any, b: Any) -> bool:
    """Equality that holds for two NaNs and for two NULLs, and tells 0.0 from -0.0 like == does not."""
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes() or (a != a and b != b)
    return bool(a == b)


# ---- Installation tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres(pg_server: Any) -> Iterator[PostgresUDFs]:
    with open_postgres(pg_server) as backend:
        yield backend


@pytest.fixture(scope="module")
def duck() -> Iterator[DuckDBUDFs]:
    with open_duckdb() as backend:
        yield backend


def _postgres_function_names(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT proname FROM pg_proc JOIN pg_namespace n ON n.oid = pronamespace "
        "WHERE nspname = current_schema() AND proname ~ '^(scisql_|ivo_|_dms_)'"
    )
    return {r[0] for r in rows}


def test_postgres_creates_every_function(postgres: PostgresUDFs) -> None:
    names = _postgres_function_names(postgres.conn)
    assert {f.lower() for f in FUNCTIONS} <= names


def test_duckdb_creates_every_macro(duck: DuckDBUDFs) -> None:
    rows = duck.conn.execute("SELECT DISTINCT lower(function_name) FROM duckdb_functions()").fetchall()
    assert {f.lower() for f in FUNCTIONS} <= {r[0] for r in rows}


def test_duckdb_polygon_overloads_cover_3_to_20_vertices(duck: DuckDBUDFs) -> None:
    rows = duck.conn.execute(
        "SELECT len(parameters) FROM duckdb_functions() WHERE function_name = 'scisql_s2PtInCPoly'"
    ).fetchall()
    assert sorted(r[0] for r in rows) == [2 + 2 * n for n in range(3, 21)]


# Number of arguments of every function but the variadic scisql_s2PtInCPoly.
ARITY = {
    "scisql_angSep": 4,
    "scisql_s2PtInCircle": 5,
    "scisql_s2PtInBox": 6,
    "scisql_s2PtInEllipse": 7,
    "scisql_nanojanskyToAbMag": 1,
    "scisql_nanojanskyToAbMagSigma": 2,
    "scisql_abMagToNanojansky": 1,
    "scisql_abMagToNanojanskySigma": 2,
    "scisql_fluxToAbMag": 1,
    "scisql_fluxToAbMagSigma": 2,
    "scisql_abMagToFlux": 1,
    "scisql_abMagToFluxSigma": 2,
    "scisql_dnToFlux": 2,
    "scisql_dnToFluxSigma": 4,
    "scisql_dnToAbMag": 2,
    "scisql_dnToAbMagSigma": 4,
    "scisql_fluxToDn": 2,
    "scisql_fluxToDnSigma": 4,
    "scisql_abMagToDn": 2,
    "scisql_abMagToDnSigma": 4,
    "ivo_healpix_index": 3,
}


def test_arity_table_covers_the_api() -> None:
    assert set(ARITY) | {"scisql_s2PtInCPoly"} == set(FUNCTIONS)


@pytest.mark.parametrize("function", sorted(ARITY))
def test_postgres_inlines_sql_functions(postgres: PostgresUDFs, function: str) -> None:
    """The planner must be able to inline the SQL bodies into the query (a function that is not
    inlined costs a call per row). ivo_healpix_index keeps the call to its PL/pgSQL core and to the
    raise helper of its error arms."""
    conn = postgres.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS probe (o integer, a float8, b float8, c float8, d float8)")
    columns = ["o", "a", "b"] if function == "ivo_healpix_index" else ["a", "b", "c", "d", "a", "b", "c"]
    args = ", ".join(columns[: ARITY[function]])
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN VERBOSE SELECT {function}({args}) FROM probe"))
    calls = set(re.findall(r"\b(scisql_\w+|ivo_\w+|_dms_\w+)\(", plan))
    expected = {"_dms_hpx_ang2pix", "_dms_raise"} if function == "ivo_healpix_index" else set()
    assert calls == expected, plan


def test_postgres_drop_then_install_again(pg_conn: psycopg.Connection[Any]) -> None:
    install_postgres(pg_conn)
    pg_conn.execute(postgres_drop_sql())
    assert _postgres_function_names(pg_conn) == set()
    install_postgres(pg_conn)
    install_postgres(pg_conn)  # CREATE OR REPLACE: installing twice is harmless
    assert pg_conn.execute("SELECT scisql_angSep(0, 0, 0, 90)").fetchone() == (90.0,)


def test_postgres_drop_refuses_to_drop_dependent_user_objects(pg_conn: psycopg.Connection[Any]) -> None:
    install_postgres(pg_conn)
    pg_conn.execute("CREATE VIEW uses_udf AS SELECT scisql_angSep(0, 0, 1, 1) AS sep")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        pg_conn.execute(postgres_drop_sql())
    assert pg_conn.execute("SELECT sep FROM uses_udf").fetchone() is not None


def test_postgres_install_through_sqlalchemy_text(pg_database: str) -> None:
    """alembic's op.execute(str) runs the script as one sqlalchemy.text() statement."""
    engine = sa.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(postgres_install_sql()))
            assert conn.execute(sa.text("SELECT ivo_healpix_index(0, 0, 90)")).scalar() == 0
            conn.execute(sa.text(postgres_drop_sql()))
            assert (
                conn.execute(sa.text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'scisql_%'")).scalar()
                == 0
            )
    finally:
        engine.dispose()


def test_duckdb_macros_persist_in_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "udfs.duckdb"
    with duckdb.connect(str(path)) as conn:
        register_duckdb(conn, temporary=False)
    with duckdb.connect(str(path)) as conn:
        rows = conn.execute(
            "SELECT scisql_angSep(0, 0, 0, 90), scisql_s2PtInCPoly(1, 1, 0, 0, 2, 0, 2, 2)"
        ).fetchall()
        assert rows == [(90.0, 1)]


def test_duckdb_temporary_macros_stay_out_of_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.duckdb"
    with duckdb.connect(str(path)) as conn:
        register_duckdb(conn)
        assert conn.execute("SELECT scisql_angSep(0, 0, 0, 90)").fetchall() == [(90.0,)]
    with duckdb.connect(str(path)) as conn, pytest.raises(duckdb.CatalogException):
        conn.execute("SELECT scisql_angSep(0, 0, 0, 90)")
