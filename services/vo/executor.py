"""What the VO services need from the query engine, and a provisional engine on the control database.

The services depend only on :class:`QueryExecutor` (the signature of the query engine's
``QueryEngine.execute``). Until the distributed engine (issue 4) is merged, :class:`ControlDatabaseExecutor`
runs queries on the control database itself: ADQL is translated by :mod:`dms.query.adql`, tables must be
published in TAP_SCHEMA (or uploaded), and the query runs as the read-only role ``dms_reader`` in a READ
ONLY transaction with a statement timeout, into a scrollable server-side cursor over its materialized
result capped at ``max_rows + 1`` rows, which is counted, then read in batches
(:meth:`ControlDatabaseExecutor.stream`). :func:`make_executor` is the one place that chooses the
implementation.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psycopg
import pyarrow as pa
import sqlglot
from sqlglot import exp

from dms.appname import application_name
from dms.deployment import Deployment, first_line
from dms.query import regions
from dms.query.adql import AdqlError, AdqlSyntaxError, parse
from dms.query.adql.bitwise import INTEGER_TYPES, check_column_types
from dms.query.adql.functions import check_functions
from dms.query.limits import check_depth, check_nesting, too_complex
from dms.query.lineage import (
    Origin,
    Source,
    catalog_region_resolver,
    catalog_unit_resolver,
    region_resolver,
)
from dms.query.parse import cte_for
from dms.query.reader import READER_ROLE, reader_transaction
from dms.query.shape import shape_of
from dms.query.shape_memo import ShapeMemo, names_spelled_out
from dms.query.sqlcompose import column_definitions, ident, statement
from dms.schema.catalog import legacy_name
from dms.services.vo.errors import QueryCancelled, QueryError, QueryRefused, QuerySyntaxError, QueryTimeout
from dms.services.vo.result_stream import ResultStream
from dms.services.workspace.viewer import current_viewer
from dms.services.workspace.visibility import generation, viewer_settings

UPLOAD_SCHEMA = "pg_temp"  # uploads are temporary tables: TAP_UPLOAD.x is rewritten to pg_temp.x
UPLOAD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
SQL_QUERY_NODES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
RESULT_CURSOR = "dms_query"
RESULT_NAME = "dms_result"  # the WITH query that holds the result
FETCH_ROWS = 10_000
"""Rows fetched from the server at a time: one batch of the streamed result."""


@dataclass
class QueryResult:
    """A query's rows (at most max_rows) and whether more rows existed."""

    table: pa.Table
    overflow: bool


class QueryExecutor(Protocol):
    """Runs one read-only query (the query engine's ``execute``)."""

    def execute(
        self,
        query: str,
        *,
        lang: str = "sql",
        max_rows: int | None = None,
        timeout: float | None = None,
        uploads: dict[str, pa.Table] | None = None,
        cancel: threading.Event | None = None,
    ) -> QueryResult: ...


def make_executor(deployment: Deployment) -> QueryExecutor:
    """The executor the services use: catalog tables go to the distributed query engine, ObsCore and
    TAP_SCHEMA to the control database, once the tables a query names are visible to its caller."""
    from dms.services.workspace.guard import VisibleExecutor

    return VisibleExecutor(deployment, RoutingExecutor(deployment))


class RoutingExecutor:
    """Sends a query that names a catalog table to the query engine, any other to the control database."""

    def __init__(self, deployment: Deployment) -> None:
        from dms.query.engine import QueryEngine

        self.control = ControlDatabaseExecutor(deployment)
        self.engine = QueryEngine(deployment)
        self.routes: ShapeMemo[bool] = ShapeMemo()
        """Whether a query names a catalog table, by (language, shape), for the registry generation."""

    def execute(
        self,
        query: str,
        *,
        lang: str = "sql",
        max_rows: int | None = None,
        timeout: float | None = None,
        uploads: dict[str, pa.Table] | None = None,
        cancel: threading.Event | None = None,
    ) -> QueryResult:
        if lang.lower() == "qserv" or self._names_catalog_table(query, lang):
            # the Qserv dialect is for the catalog (ObsCore and TAP_SCHEMA are PostgreSQL/ADQL tables)
            try:
                result = self.engine.execute(
                    query,
                    lang=lang.lower(),
                    max_rows=max_rows,
                    timeout=timeout,
                    uploads=uploads,
                    cancel=cancel,
                )
            except RecursionError as exc:  # the nesting limits should have refused it first
                raise too_complex(exc) from None
            return QueryResult(result.table, result.overflow)
        return self.control.execute(
            query, lang=lang, max_rows=max_rows, timeout=timeout, uploads=uploads, cancel=cancel
        )

    def stream(
        self,
        query: str,
        *,
        lang: str = "sql",
        max_rows: int | None = None,
        timeout: float | None = None,
        uploads: dict[str, pa.Table] | None = None,
        cancel: threading.Event | None = None,
    ) -> ResultStream:
        """As :meth:`execute`, the control database's result read in batches (the engine's is whole)."""
        options: dict[str, Any] = dict(max_rows=max_rows, timeout=timeout, uploads=uploads, cancel=cancel)
        if lang.lower() == "qserv" or self._names_catalog_table(query, lang):
            result = self.execute(query, lang=lang, **options)
            return ResultStream.of_table(result.table, result.overflow)
        return self.control.stream(query, lang=lang, **options)

    def _names_catalog_table(self, query: str, lang: str) -> bool:
        snapshot = self.engine.registry.snapshot()
        # IN_UNIT's unit (a string) decides whether the query can be read at all, so it is read each time
        shape = shape_of(query) if "in_unit" not in query.lower() else None
        key = (lang.lower(), shape.key) if shape is not None else None
        if key is not None:
            known = self.routes.get(key, snapshot.generation)
            if known is not None:
                return known
        tables = snapshot.tables
        tree: exp.Expr
        try:
            if lang.lower() == "adql":
                tree = parse(
                    query, unit_of=catalog_unit_resolver(tables), region_of=catalog_region_resolver(tables)
                )
            else:
                check_nesting(query)
                tree = sqlglot.parse_one(query, read="postgres")
                check_depth(tree)
        except (AdqlError, sqlglot.errors.SqlglotError):
            return False  # the control executor reports the error in its usual form
        except RecursionError as exc:
            raise too_complex(exc) from None
        catalog = {name.lower() for name in tables}
        bare = {name.split(".")[1] for name in catalog}
        named = False
        for table in tree.find_all(exp.Table):
            name = f"{table.db}.{table.name}".lower() if table.db else table.name.lower()
            renamed = (legacy_name(table.db, table.name) or "").lower()  # catalog.x is cat.x (deprecated)
            if name in catalog or renamed in catalog or (not table.db and name in bare):
                named = True
                break
        if key is not None and shape is not None and names_spelled_out(query, shape, tree):
            self.routes.put(key, snapshot.generation, named)
        return named


Columns = dict[str, list[tuple[str, str]]]
"""Published columns: lower-case schema.table -> [(column, TAP datatype)], in TAP_SCHEMA order."""


def published_regions(columns: Columns) -> Callable[[exp.Column], Literal["region", "text"] | None]:
    """ADQL's region columns over TAP_SCHEMA's tables: a char column is a region column where its table
    publishes its representation columns (ObsCore's s_region), else text, which no geometry function takes
    (ConsDB's exposure.s_region)."""
    bare: dict[str, list[str]] = {}
    for qualified in columns:
        bare.setdefault(qualified.split(".", 1)[-1], []).append(qualified)

    def lookup(schema: str | None, name: str) -> Source | None:
        if schema is not None:
            key = f"{schema}.{name}".lower()
        else:
            matches = bare.get(name.lower(), [])
            key = matches[0] if len(matches) == 1 else ""
        found = columns.get(key)
        return None if found is None else Source(key, [c for c, _ in found])

    def kind_of(origin: Origin) -> Literal["region", "text"] | None:
        published = columns.get(origin.table, [])
        if regions.has_representation(origin.column, [c for c, _ in published]):
            return "region"
        return "text" if any(c == origin.column and t == "char" for c, t in published) else None

    return region_resolver(lookup, kind_of)


# PostgreSQL type OID -> Arrow type of the result column; anything else is returned as text.
_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    1700: pa.float64(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1082: pa.date32(),
    1021: pa.list_(pa.float32()),
    1022: pa.list_(pa.float64()),
    1007: pa.list_(pa.int32()),
    1016: pa.list_(pa.int64()),
}
_PG_TYPES: dict[str, str] = {
    "bool": "boolean",
    "int8": "smallint",
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "uint8": "smallint",
    "uint16": "integer",
    "uint32": "bigint",
    "float": "real",
    "halffloat": "real",
    "double": "double precision",
    "string": "text",
    "large_string": "text",
    "date32[day]": "date",
}


class ControlDatabaseExecutor:
    """Queries on the control database under the read-only role (thread-safe: a connection per query)."""

    def __init__(self, deployment: Deployment, *, cache_seconds: float = 10.0) -> None:
        self.deployment = deployment
        self._conninfo = deployment.control_url().set(drivername="postgresql").render_as_string(False)
        self._cache_seconds = cache_seconds
        self._published: tuple[float, dict[str, tuple[str, str]], dict[str, str], Columns] = (0.0, {}, {}, {})
        self._column_types: dict[str, dict[str, str]] = {}  # lower-case schema.table -> column -> ADQL type
        self._lock = threading.Lock()
        self._generation = -1

    def execute(
        self,
        query: str,
        *,
        lang: str = "sql",
        max_rows: int | None = None,
        timeout: float | None = None,
        uploads: dict[str, pa.Table] | None = None,
        cancel: threading.Event | None = None,
    ) -> QueryResult:
        stream = self.stream(
            query, lang=lang, max_rows=max_rows, timeout=timeout, uploads=uploads, cancel=cancel
        )
        return QueryResult(stream.read_all(), stream.overflow)

    def stream(
        self,
        query: str,
        *,
        lang: str = "sql",
        max_rows: int | None = None,
        timeout: float | None = None,
        uploads: dict[str, pa.Table] | None = None,
        cancel: threading.Event | None = None,
    ) -> ResultStream:
        """The query's result read in batches of ``FETCH_ROWS`` from the server (see :meth:`_run`); the
        connection stays open until the batches are read or the stream is closed."""
        uploads = uploads or {}
        for name in uploads:
            if not UPLOAD_NAME.match(name):
                raise QueryRefused(f"upload table name {name!r} is not a valid name (letters, digits, _)")
        tables, units, columns = self._published_tables()
        tree = self._parse(query, lang, units, columns)
        if lang.lower() == "adql":
            self._check_types(tree)
        for with_ in tree.find_all(exp.With):
            if with_.args.get("recursive"):
                raise QueryRefused("recursive WITH queries (WITH RECURSIVE) are not supported")
        self._check_tables(tree, tables, {n.lower() for n in uploads})
        text = _materialized(tree, max_rows).sql(dialect="postgres", normalize_functions=False)
        conn = psycopg.connect(self._conninfo, autocommit=True, application_name=application_name())
        try:
            self._load_uploads(conn, uploads)
            return self._run(conn, text, max_rows, timeout, cancel)
        except BaseException:
            conn.close()
            raise

    # ---- steps --------------------------------------------------------------------------------------------

    def _parse(self, query: str, lang: str, units: dict[str, str], columns: Columns) -> exp.Expression:
        if lang.lower() == "adql":
            try:
                return parse(
                    query, unit_of=lambda c: units.get(c.name.lower()), region_of=published_regions(columns)
                )
            except AdqlSyntaxError as exc:
                raise QuerySyntaxError(str(exc)) from exc
            except AdqlError as exc:
                raise QueryRefused(str(exc)) from exc
        if lang.lower() not in ("sql", "postgresql"):
            raise QueryRefused(f"unknown query language {lang!r}; valid: adql, sql")
        check_nesting(query)
        try:
            statements = [s for s in sqlglot.parse(query, read="postgres") if s is not None]
        except sqlglot.errors.SqlglotError as exc:
            raise QuerySyntaxError(f"SQL: {first_line(exc)}") from exc
        except RecursionError as exc:
            raise too_complex(exc) from None
        if len(statements) != 1 or not isinstance(statements[0], SQL_QUERY_NODES):
            raise QueryRefused("only one SELECT statement may be run")
        check_depth(statements[0])
        try:
            # The same functions as ADQL: server functions (set_config, pg_sleep, ...) stay out of reach.
            check_functions(statements[0])
        except AdqlError as exc:
            raise QueryRefused(exc.message) from exc
        return statements[0]

    def _check_tables(
        self, tree: exp.Expression, published: dict[str, tuple[str, str]], uploads: set[str]
    ) -> None:
        """Every table must be published in TAP_SCHEMA, an upload or a WITH query visible where it is named
        (resolved scope by scope: a WITH query inside a subquery does not cover a table beside it).

        Names are matched case-insensitively and replaced by the exact (quoted) database names, so that
        ADQL's ``ivoa.ObsCore`` finds PostgreSQL's ``ivoa."ObsCore"``; uploads move to ``pg_temp``.
        """
        for table in list(tree.find_all(exp.Table)):
            schema, name = table.db.lower(), table.name.lower()
            if not name:
                raise QueryRefused(f"table function {table.sql()} is not allowed")
            if schema == "tap_upload":
                if name not in uploads:
                    raise QueryRefused(
                        f"no uploaded table {table.name!r} (uploaded: {sorted(uploads) or 'none'})"
                    )
                table.set("db", exp.to_identifier(UPLOAD_SCHEMA))
                table.set("this", exp.to_identifier(name))
                table.set("catalog", None)
            elif not schema and cte_for(table) is not None:
                continue
            elif f"{schema}.{name}" not in published or table.catalog:
                raise QueryRefused(f"unknown table {table.sql()}; the tables are listed at /tap/tables")
            else:
                exact_schema, exact_name = published[f"{schema}.{name}"]
                table.set("db", exp.to_identifier(exact_schema, quoted=True))
                table.set("this", exp.to_identifier(exact_name, quoted=True))

    def _check_types(self, tree: exp.Expression) -> None:
        """ADQL's bitwise operators on published columns of a type that is not an integer: an error at the
        column (a name of several of the query's tables counts only when it is of no integer type in any)."""
        with self._lock:
            published = self._column_types
        named = [published.get(f"{t.db}.{t.name}".lower(), {}) for t in tree.find_all(exp.Table)]

        def type_of(column: exp.Column) -> str | None:
            types = [columns[column.name.lower()] for columns in named if column.name.lower() in columns]
            if not types or any(t.lower() in INTEGER_TYPES for t in types):
                return None
            return types[0]

        try:
            check_column_types(tree, type_of)
        except AdqlSyntaxError as exc:
            raise QuerySyntaxError(str(exc)) from exc

    def _published_tables(self) -> tuple[dict[str, tuple[str, str]], dict[str, str], Columns]:
        """Published tables (lower-case schema.table -> exact schema, table), column units and each table's
        columns (cached)."""
        with self._lock:
            when, tables, units, columns = self._published
            if time.monotonic() - when < self._cache_seconds and self._generation == generation():
                return tables, units, columns
        current = generation()
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            tables = {
                qualified.lower(): (schema, qualified.split(".", 1)[-1])
                for schema, qualified in conn.execute("SELECT schema_name, table_name FROM tap_schema.tables")
            }
            units = {}
            for column, unit in conn.execute(
                "SELECT column_name, unit FROM tap_schema.columns WHERE unit IS NOT NULL AND unit <> ''"
            ):
                units.setdefault(column.lower().strip('"'), unit)
            columns = {}
            types: dict[str, dict[str, str]] = {}
            for table, name, datatype in conn.execute(
                "SELECT table_name, column_name, datatype FROM tap_schema.columns ORDER BY column_index"
            ):
                columns.setdefault(table.lower(), []).append((name.strip('"'), datatype))
                types.setdefault(table.lower(), {})[name.lower().strip('"')] = datatype or ""
        with self._lock:
            self._published = (time.monotonic(), tables, units, columns)
            self._column_types = types
            self._generation = current
        return tables, units, columns

    def _load_uploads(self, conn: psycopg.Connection[Any], uploads: dict[str, pa.Table]) -> None:
        """Uploaded tables become temporary tables of the reader role, created as that role in a transaction
        of their own (the query's READ ONLY transaction could not); they go with the connection."""
        if not uploads:
            return
        with conn.transaction():
            conn.execute(statement("SET LOCAL ROLE {role}", role=READER_ROLE))
            for name, table in uploads.items():
                columns = []
                for field in table.schema:
                    if not UPLOAD_NAME.match(field.name):
                        raise QueryRefused(f"upload {name}: column name {field.name!r} is not a valid name")
                    columns.append((field.name.lower(), _pg_type(field.type)))
                target = ident(name.lower())
                conn.execute(
                    statement(
                        "CREATE TEMP TABLE {name} ({columns})",
                        name=target,
                        columns=column_definitions(columns),
                    )
                )
                with conn.cursor() as cur, cur.copy(statement("COPY {name} FROM STDIN", name=target)) as copy:
                    for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
                        copy.write_row(row)

    def _run(
        self,
        conn: psycopg.Connection[Any],
        text: str,
        max_rows: int | None,
        timeout: float | None,
        cancel: threading.Event | None,
    ) -> ResultStream:
        """Run the query (materialized, capped at ``max_rows + 1`` rows: see :func:`_materialized`) in a
        scrollable server-side cursor of the READ ONLY transaction and move to its end: PostgreSQL computes
        the whole capped result into a tuplestore (spilling to temporary files, within the reader's
        limits), under the statement timeout and the cancel event, so every error of the query (a division
        by zero at row N, the time limit) is raised here, before the first byte is sent, and the exact row
        count, hence the overflow, is known. The stored rows are then fetched in batches of ``FETCH_ROWS``
        while the transaction stays open, never all at once."""
        done = threading.Event()
        if cancel is not None:
            threading.Thread(target=_cancel_when_set, args=(conn, cancel, done), daemon=True).start()
        cursor = conn.cursor(name=RESULT_CURSOR, scrollable=True)
        try:
            with ExitStack() as stack, _query_errors(cancel, timeout):
                stack.enter_context(reader_transaction(conn, timeout))
                viewer_settings(conn, current_viewer())  # TAP_SCHEMA lists what the caller may read
                cursor.execute(text.encode())
                total = conn.execute(statement("MOVE FORWARD ALL IN {c}", c=ident(RESULT_CURSOR))).rowcount
                cursor.scroll(0, mode="absolute")
                description = cursor.description or []
                transaction = stack.pop_all()  # it stays open while the rows are read
        finally:
            done.set()
        overflow = max_rows is not None and total > max_rows
        rows = min(total, max_rows) if max_rows is not None else total
        schema = _arrow_table(description, []).schema

        def close() -> None:
            if conn.closed:
                return
            with suppress(psycopg.Error):  # a lost connection has no transaction to end
                transaction.close()  # the end of the READ ONLY transaction
            conn.close()  # the upload tables go with the connection

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                left = rows
                while left > 0:
                    if cancel is not None and cancel.is_set():
                        raise QueryCancelled("the query was cancelled")
                    with _query_errors(cancel, timeout):
                        fetched = cursor.fetchmany(min(FETCH_ROWS, left))
                    if not fetched:
                        raise QueryError(f"the result ended after {rows - left} of its {rows} rows")
                    left -= len(fetched)
                    yield from _arrow_table(description, fetched).cast(schema).to_batches()
            finally:
                close()

        return ResultStream(schema, rows, overflow, batches(), close)


def _materialized(tree: exp.Expression, max_rows: int | None) -> exp.Expression:
    """``WITH dms_result AS MATERIALIZED (query) SELECT * FROM dms_result [LIMIT max_rows + 1]``: the rows
    are computed once into a tuplestore, so a scrollable cursor reads them back without running the query
    (or its volatile functions, RAND()) again; one row more than asked for tells an overflow (the query's
    own ORDER BY and LIMIT apply first)."""
    alias = exp.TableAlias(this=exp.to_identifier(RESULT_NAME))
    select = exp.Select(expressions=[exp.Star()]).from_(exp.to_table(RESULT_NAME), copy=False)
    select.set("with_", exp.With(expressions=[exp.CTE(this=tree, alias=alias, materialized=True)]))
    return select if max_rows is None else select.limit(max_rows + 1, copy=False)


@contextmanager
def _query_errors(cancel: threading.Event | None, timeout: float | None) -> Iterator[None]:
    """PostgreSQL's errors as the services' query errors."""
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        if cancel is not None and cancel.is_set():
            raise QueryCancelled("the query was cancelled") from exc
        raise QueryTimeout(f"the query ran longer than its time limit of {timeout or 0:g} s") from exc
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction) as exc:
        raise QueryRefused(f"not allowed: {first_line(exc)}") from exc
    except psycopg.errors.SyntaxError as exc:
        raise QuerySyntaxError(first_line(exc)) from exc
    except psycopg.OperationalError as exc:
        raise QueryError(f"the database connection was lost: {first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise QueryError(first_line(exc)) from exc


def _cancel_when_set(conn: psycopg.Connection[Any], cancel: threading.Event, done: threading.Event) -> None:
    """Cancel the connection's statement once `cancel` is set, and again until `done`: a cancel that
    reaches the server between two statements (the cursor's DECLARE and its MOVE) cancels nothing."""
    while not done.is_set():
        if cancel.wait(0.05):
            while not done.is_set():
                conn.cancel_safe()
                done.wait(0.25)
            return


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return f"{_pg_type(arrow_type.value_type)}[]"
    return _PG_TYPES.get(str(arrow_type), "text")


def _arrow_table(description: Any, rows: list[tuple[Any, ...]]) -> pa.Table:
    arrays, names = [], []
    seen: dict[str, int] = {}
    for i, column in enumerate(description):
        name = column.name
        if name in seen:  # duplicate output names (SELECT a.id, b.id) stay distinct
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        kind = _ARROW_TYPES.get(column.type_code, pa.string())
        values = [r[i] for r in rows]
        if column.type_code == 1700:
            values = [None if v is None else float(v) for v in values]
        elif kind == pa.string():
            values = [
                None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values
            ]
        arrays.append(pa.array(values, type=kind))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)
