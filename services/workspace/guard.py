"""The executor the services use: the routing executor behind a visibility check on every named table.

Before a query runs, every table it names (bar WITH queries and TAP uploads) is checked against the viewer
with dms.table_visible: an unreleased table on the DAC, another user's private workspace table or a table
that does not exist get the same answer, "unknown table", so a query cannot probe what exists. A query that
joins workspace tables with partitioned catalog tables ships the workspace tables to the query engine as
TAP uploads (the engine's zone join and chunk shipping do the rest), as a TAP UPLOAD would be.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pyarrow as pa
import sqlglot
from psycopg import sql
from sqlglot import exp
from sqlglot.tokens import TokenType

from dms.deployment import Deployment
from dms.query.adql.functions import ANY_UNIT
from dms.query.errors import QuerySyntaxError
from dms.query.parse import cte_for
from dms.query.parse import parse as parse_query
from dms.query.shape import shape_of
from dms.query.shape_memo import ShapeMemo, names_spelled_out
from dms.services.vo.errors import QueryRefused
from dms.services.vo.executor import QueryExecutor, QueryResult, RoutingExecutor
from dms.services.vo.result_stream import ResultStream, stream_query
from dms.services.workspace.viewer import Viewer, current_viewer
from dms.services.workspace.visibility import hidden_tables

WORKSPACE_PREFIX = "user_"
NAME_TOKENS = (TokenType.VAR, TokenType.IDENTIFIER)


class VisibleExecutor:
    """Runs queries for the current viewer (see the module docstring) through `inner`."""

    def __init__(self, deployment: Deployment, inner: QueryExecutor | None = None) -> None:
        self.deployment = deployment
        self.inner: QueryExecutor = inner or RoutingExecutor(deployment)
        self.named: ShapeMemo[tuple[tuple[str, str], ...]] = ShapeMemo()
        """The tables a query names by (language, shape), for the registry generation."""

    def __getattr__(self, name: str) -> Any:  # control, engine, ... of the routing executor
        return getattr(self.inner, name)

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
        query, uploads = self._checked(query, lang, uploads)
        return self.inner.execute(
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
        """As :meth:`execute`, the result read batch by batch (when the inner executor can)."""
        query, uploads = self._checked(query, lang, uploads)
        return stream_query(
            self.inner, query, lang=lang, max_rows=max_rows, timeout=timeout, uploads=uploads, cancel=cancel
        )

    def _checked(
        self, query: str, lang: str, uploads: dict[str, pa.Table] | None
    ) -> tuple[str, dict[str, pa.Table] | None]:
        """The query and uploads to run, once every table it names is visible to the viewer."""
        viewer = current_viewer()
        catalog = self._catalog_names()
        named = self._named_tables(query, lang, catalog)
        if named:
            with self.deployment.engine().connect() as conn:
                hidden = hidden_tables(conn, viewer, named)
            if hidden:
                raise QueryRefused(f"unknown table {hidden[0]}; the tables are listed at /tap/tables")
            workspace = [(s, t) for s, t in named if s.lower().startswith(WORKSPACE_PREFIX)]
            if workspace and any(f"{s}.{t}".lower() in catalog[1] for s, t in named):
                query, shipped = self._ship_workspace_tables(query, workspace, uploads or {})
                uploads = {**(uploads or {}), **shipped}
        return query, uploads

    # ---- steps --------------------------------------------------------------------------------------------

    def _catalog_names(self) -> tuple[int | None, set[str]]:
        """The registry generation and the lower-case names of the catalog tables."""
        engine = getattr(self.inner, "engine", None)
        if engine is None:
            return None, set()
        snapshot = engine.registry.snapshot()
        return snapshot.generation, {name.lower() for name in snapshot.tables}

    def _named_tables(
        self, query: str, lang: str, catalog: tuple[int | None, set[str]]
    ) -> list[tuple[str, str]]:
        """(schema, table) of every table the query names; unqualified names of catalog tables get their
        schema. IN_UNIT, whose units only the inner executor knows, reads as its bare column here. A query
        this parse refuses for any reason but its syntax is refused here: the check fails closed. A query
        of a shape read before is not parsed again (dms.query.shape_memo)."""
        language = {"postgresql": "sql", "mysql": "qserv"}.get(lang.lower(), lang.lower())
        if language not in ("sql", "adql", "qserv"):
            return []  # the inner executor refuses the language before it reads the query
        shape = shape_of(query)
        if shape is not None:
            known = self.named.get((language, shape.key), catalog[0])
            if known is not None:
                return list(known)
        try:
            tree = parse_query(query, language, unit_of=lambda column: ANY_UNIT)
        except QuerySyntaxError:
            # not valid in its language: every inner executor checks the same grammar first and refuses it,
            # in the words of the service that answers (a syntax error runs nothing)
            return []
        except (sqlglot.errors.SqlglotError, RecursionError) as exc:
            raise QueryRefused(f"the query could not be read: {str(exc).splitlines()[0][:200]}") from None
        bare = {name.split(".", 1)[1]: name.split(".", 1)[0] for name in catalog[1]}
        named = []
        for table in tree.find_all(exp.Table):
            schema, name = table.db.lower(), table.name.lower()
            if not name or schema == "tap_upload" or (not schema and cte_for(table) is not None):
                continue
            if not schema:
                if name not in bare:
                    continue  # unknown: the inner executor refuses it
                schema = bare[name]
            named.append((schema, name))
        if shape is not None and catalog[0] is not None and names_spelled_out(query, shape, tree):
            self.named.put((language, shape.key), catalog[0], tuple(named))
        return named

    def _ship_workspace_tables(
        self, query: str, workspace: list[tuple[str, str]], uploads: dict[str, pa.Table]
    ) -> tuple[str, dict[str, pa.Table]]:
        """The query with each workspace table renamed TAP_UPLOAD.wsN_table, and those tables' rows."""
        names: dict[tuple[str, str], str] = {}
        for index, (schema, table) in enumerate(sorted(set(workspace)), start=1):
            upload = f"ws{index}_{table}"[:63]
            if upload in {u.lower() for u in uploads}:
                raise QueryRefused(f"upload name {upload!r} is reserved for workspace tables; rename it")
            names[(schema, table)] = upload
        tokens = list(sqlglot.tokenize(query, read="postgres"))
        pieces, last = [], 0
        for i in range(len(tokens) - 2):
            first, dot, second = tokens[i], tokens[i + 1], tokens[i + 2]
            if (
                first.token_type in NAME_TOKENS
                and dot.token_type == TokenType.DOT
                and second.token_type in (NAME_TOKENS)
            ):
                key = (first.text.lower(), second.text.lower())
                if key in names and (i == 0 or tokens[i - 1].token_type != TokenType.DOT):
                    pieces.append(query[last : first.start])
                    pieces.append(f"TAP_UPLOAD.{names[key]}")
                    last = second.end + 1
        pieces.append(query[last:])
        shipped = {upload: self._read_table(schema, table) for (schema, table), upload in names.items()}
        return "".join(pieces), shipped

    def _read_table(self, schema: str, table: str) -> pa.Table:
        conninfo = self.deployment.control_url().set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            columns = [d.name for d in cur.description or []]
            rows = cur.fetchall()
        return pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})


def make_visible_executor(deployment: Deployment) -> VisibleExecutor:
    return VisibleExecutor(deployment)


def run_for(viewer: Viewer, executor: QueryExecutor, query: str, **options: Any) -> QueryResult:
    """Run `query` for `viewer` (outside a request: the command line, tests)."""
    from dms.services.workspace.viewer import acting_as

    with acting_as(viewer):
        return executor.execute(query, **options)
