"""In-database functions as SQL source: scisql-compatible geometry and photometry, IVOA HEALPix.

The same functions, with the same results and the same NULL/error behaviour, exist for both backends:

* PostgreSQL: ``udfs/postgres/*.sql``, plain ``LANGUAGE sql`` functions the planner can inline
  (installed into the first schema of the ``search_path`` by an alembic migration, which runs
  :func:`postgres_install_sql`);
* DuckDB: ``udfs/duckdb/*.sql``, macros created on a connection by :func:`register_duckdb`, either as
  temporary macros or stored in the database file.

Function names are unquoted SQL identifiers, so ``scisql_angSep`` and ``scisql_angsep`` are the same
function. The SQL files document what each function does and how it differs from scisql.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import psycopg

__all__ = [
    "ADQL_FUNCTIONS",
    "FUNCTIONS",
    "MAX_POLYGON_VERTICES",
    "duckdb_drop_sql",
    "duckdb_install_sql",
    "install_postgres",
    "postgres_drop_sql",
    "postgres_install_sql",
    "register_duckdb",
]

FUNCTIONS: tuple[str, ...] = (
    "scisql_angSep",
    "scisql_s2PtInCircle",
    "scisql_s2PtInBox",
    "scisql_s2PtInEllipse",
    "scisql_s2PtInCPoly",
    "scisql_nanojanskyToAbMag",
    "scisql_nanojanskyToAbMagSigma",
    "scisql_abMagToNanojansky",
    "scisql_abMagToNanojanskySigma",
    "scisql_fluxToAbMag",
    "scisql_fluxToAbMagSigma",
    "scisql_abMagToFlux",
    "scisql_abMagToFluxSigma",
    "scisql_dnToFlux",
    "scisql_dnToFluxSigma",
    "scisql_dnToAbMag",
    "scisql_dnToAbMagSigma",
    "scisql_fluxToDn",
    "scisql_fluxToDnSigma",
    "scisql_abMagToDn",
    "scisql_abMagToDnSigma",
    "ivo_healpix_index",
)
"""Public function names, as spelled by scisql and the IVOA."""

ADQL_FUNCTIONS: tuple[str, ...] = (
    "adql_area",
    "adql_centroid",
    "adql_contains",
    "adql_intersects",
    "adql_round",
    "adql_truncate",
    "adql_mod",
    "ivo_hasword",
    "ivo_hashlist_has",
    "ivo_interval_overlaps",
    "ivo_to_mjd",
    "ivo_to_jd",
)
"""Functions the ADQL front end (dms.query.adql) lowers ADQL to; udfs/*/50_adql.sql documents them."""

MAX_POLYGON_VERTICES = 20
"""scisql_s2PtInCPoly accepts 3 to this many vertices (scisql's SCISQL_MAX_VERTS)."""

_FUNCTION_HEADER = re.compile(
    r"^CREATE OR REPLACE FUNCTION (\w+)\s*\((.*?)\)\s*RETURNS", re.MULTILINE | re.DOTALL
)


def _sql_files(backend: str) -> str:
    """The ``*.sql`` files of one backend directory, concatenated in file-name order."""
    directory = resources.files(__name__) / backend
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def postgres_install_sql() -> str:
    """The script that creates (or replaces) every function on PostgreSQL 14 or later."""
    return _sql_files("postgres")


def postgres_drop_sql() -> str:
    """The script that drops every function :func:`postgres_install_sql` creates, dependents first.

    There is no CASCADE: if a view or index uses one of the functions, the drop fails instead of
    silently taking the user's object with it.
    """
    headers = _FUNCTION_HEADER.findall(postgres_install_sql())
    return "".join(
        f"DROP FUNCTION IF EXISTS {name}({' '.join(args.split())});\n" for name, args in reversed(headers)
    )


def install_postgres(conn: psycopg.Connection[Any]) -> None:
    """Create every function through a psycopg connection, in one transaction (or savepoint)."""
    with conn.transaction():
        conn.execute(postgres_install_sql())


def _polygon_macro(vertices: int) -> str:
    """One overload of the DuckDB ``scisql_s2PtInCPoly`` macro: the point, then ``vertices`` pairs.

    The test is the PL/pgSQL loop of ``udfs/postgres/10_geometry.sql`` unrolled: the vertex sum is
    added in vertex order, it orients the polygon through the first edge, and every edge test must
    pass (all ``>= 0``, or all ``<= 0`` for clockwise vertices).
    """
    pairs = [(f"v{i}_ra", f"v{i}_dec") for i in range(1, vertices + 1)]
    params = ", ".join(["ra DOUBLE", "dec DOUBLE", *(f"{lon} DOUBLE, {lat} DOUBLE" for lon, lat in pairs)])
    valid = " AND ".join(f"_dms_valid_sc({lon}, {lat})" for lon, lat in [("ra", "dec"), *pairs])
    vsum = ", ".join(
        " + ".join(
            f"_dms_sc_{axis}({lon}, {lat})" if axis != "z" else f"_dms_sc_z({lat})" for lon, lat in pairs
        )
        for axis in "xyz"
    )
    (lon1, lat1), (lon2, lat2) = pairs[0], pairs[1]
    first_edge = (
        f"_dms_sc_x({lon1}, {lat1}), _dms_sc_y({lon1}, {lat1}), _dms_sc_z({lat1}), "
        f"_dms_sc_x({lon2}, {lat2}), _dms_sc_y({lon2}, {lat2}), _dms_sc_z({lat2})"
    )
    edges = [
        f"_dms_cpoly_edge(ra, dec, {a}, {b}, {c}, {d})"
        for (a, b), (c, d) in zip(pairs, pairs[1:] + pairs[:1], strict=True)
    ]
    return (
        f"({params}) AS CASE WHEN {valid}\n"
        f"    THEN (CASE WHEN _dms_rcross_dot({vsum}, {first_edge}) < 0\n"
        f"        THEN {' AND '.join(f'{e} <= 0' for e in edges)}\n"
        f"        ELSE {' AND '.join(f'{e} >= 0' for e in edges)} END)::INTEGER END"
    )


def duckdb_install_sql(temporary: bool) -> str:
    """The script that creates every macro on DuckDB, as TEMP macros or stored in the database.

    All macros of one installation must share a kind: a stored macro that called a temporary helper
    would break on the next connection.
    """
    arities = range(3, MAX_POLYGON_VERTICES + 1)
    polygon = (
        "CREATE OR REPLACE MACRO scisql_s2PtInCPoly\n"
        + ",\n".join(_polygon_macro(n) for n in arities)
        + ";\n"
    )
    script = _sql_files("duckdb") + "\n" + polygon
    if temporary:
        script = re.sub(
            r"^CREATE OR REPLACE MACRO ", "CREATE OR REPLACE TEMP MACRO ", script, flags=re.MULTILINE
        )
    return script


def duckdb_drop_sql() -> str:
    """The script that drops every stored macro :func:`duckdb_install_sql` creates, dependents first."""
    names = re.findall(r"^CREATE OR REPLACE MACRO (\w+)", duckdb_install_sql(temporary=False), re.MULTILINE)
    return "".join(f"DROP MACRO IF EXISTS {name};\n" for name in reversed(dict.fromkeys(names)))


def register_duckdb(conn: duckdb.DuckDBPyConnection, *, temporary: bool = True) -> None:
    """Create every macro on a DuckDB connection (by default as TEMP macros of this connection)."""
    conn.execute(duckdb_install_sql(temporary))
