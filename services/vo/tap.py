"""TAP 1.1 at /tap: synchronous and asynchronous (UWS) queries, uploads, VOSI and examples."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

import psycopg
import pyarrow as pa
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from dms.deployment import Deployment
from dms.query.adql import frames
from dms.query.adql.grammar import quote_identifier
from dms.query.shape import shape_of
from dms.query.shape_memo import ShapeMemo
from dms.services.auth import authenticate
from dms.services.vo import formats, upload_fetch, vosi
from dms.services.vo.column_metadata import result_metadata
from dms.services.vo.errors import ServiceError
from dms.services.vo.files import URL_COLUMN, public_access_urls
from dms.services.vo.http import XML, Context, Params, error_response, guarded, read_params
from dms.services.vo.result_stream import ResultTruncated, stream_query
from dms.services.vo.tap_schema import Column, Table
from dms.services.vo.upload_fetch import AllowList
from dms.services.vo.uws import JobStore
from dms.services.vo.uws_xml import iso, job_list_xml, job_part_xml, job_xml
from dms.services.vo.votable import MAX_UPLOAD_BYTES, read_upload

DEFAULT_ROWS = 100_000
HARD_ROWS = 1_000_000
SYNC_TIMEOUT = 300.0
LANGS = {
    "ADQL": "adql",
    "ADQL-2.0": "adql",
    "ADQL-2.1": "adql",
    "POSTGRESQL": "sql",
    "SQL": "sql",
    "QSERV": "qserv",  # MySQL as Qserv accepts it, for Rubin's clients
    "MYSQL": "qserv",
}
VALID_LANGS = "ADQL, ADQL-2.0, ADQL-2.1, PostgreSQL, QSERV, MYSQL"
UPLOAD_ITEM = re.compile(r"^\s*([^,]+?)\s*,\s*(\S+)\s*$")
STORED = re.compile(r"stored:([0-9a-f]{32}\.xml)")
ORPHAN_AGE = 600.0  # seconds: an unreferenced stored upload younger than this may belong to a job being made
WHOLE_BYTES = 1 << 20  # a sync result document of at most this size is sent as one body
DISCONNECT_POLL = 0.25  # seconds between checks that a sync query's client is still there
AVAILABILITY_TIMEOUT = 3  # seconds to connect to the database for /availability
UPLOADS_DIR = Path("vo") / "uploads"  # inline uploads of async jobs, under the data directory

log = logging.getLogger(__name__)


class TapService:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.uploads_dir = context.deployment.data_dir / UPLOADS_DIR
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = JobStore(context.deployment, "tap", self._run_job, forget=self._forget_uploads)
        self.metadata: ShapeMemo[dict[str, Column]] = ShapeMemo()
        """Result column metadata by query shape, for one load of TAP_SCHEMA (dms.query.shape_memo)."""

    # ---- running a query ------------------------------------------------------------------------------

    def run(
        self,
        params: Params,
        cancel: threading.Event | None,
        timeout: float,
        *,
        stored: bool = False,
        base: str | None = None,
    ) -> tuple[Iterator[bytes], str, int, bool]:
        """Execute a TAP request's query: (the document's pieces, rendered as they are read; MIME type;
        rows; overflow)."""
        request = params.get("REQUEST")
        if request is not None and request.lower() != "doquery":
            raise ServiceError(f"REQUEST {request!r} is not supported; valid: doQuery")
        version = params.get("VERSION")
        if version is not None and version not in ("1.0", "1.1"):
            raise ServiceError(f"VERSION {version!r} is not supported; valid: 1.0, 1.1")
        lang_name = params.get("LANG")
        if not lang_name:
            raise ServiceError(f"LANG is missing; valid: {VALID_LANGS}")
        lang = LANGS.get(lang_name.upper())
        if lang is None:
            raise ServiceError(f"LANG {lang_name!r} is not supported; valid: {VALID_LANGS}")
        query = params.get("QUERY")
        if not query or not query.strip():
            raise ServiceError("QUERY is missing")
        fmt = formats.choose(params.get("RESPONSEFORMAT") or params.get("FORMAT"))
        max_rows = self._maxrec(params.get("MAXREC"))
        uploads = self._uploads(params, stored=stored)
        with frames.collect_notes() as notes:  # what the ADQL translation did (frames, RAND(seed))
            result = stream_query(
                self.context.executor,
                query,
                lang=lang,
                max_rows=max_rows,
                timeout=timeout,
                uploads=uploads,
                cancel=cancel,
            )
        try:
            columns = self._metadata(query, lang, result.schema.empty_table(), uploads)
        except BaseException:
            result.close()
            raise
        # ObsCore's file:// access URLs become the server's /files URLs (or nothing, without a base URL)
        if URL_COLUMN in result.schema.names:
            result = result.map(lambda batch: public_access_urls(batch, base or ""))
        body = formats.render_chunks(fmt, result, columns, infos=frames.infos(notes))
        return body, fmt.mime, result.num_rows, result.overflow

    def _metadata(
        self, query: str, lang: str, table: pa.Table, uploads: dict[str, pa.Table]
    ) -> dict[str, Column]:
        """The result columns' TAP_SCHEMA metadata (:func:`result_metadata`), remembered by the query's
        shape: the outputs of two queries of one shape come from the same columns of the same tables."""
        tables = self.context.tables()
        shape = None if uploads or "in_unit" in query.lower() else shape_of(query)
        if shape is None:
            return result_metadata(tables, query, lang, table, uploads)
        key = (lang, shape.key, tuple(table.column_names), tuple(t.name for t in tables))
        generation = self.context.version
        found = self.metadata.get(key, generation)
        if found is None:
            found = result_metadata(tables, query, lang, table, uploads)
            self.metadata.put(key, generation, found)
        return found

    @staticmethod
    def _maxrec(value: str | None) -> int:
        if value is None or value == "":
            return DEFAULT_ROWS
        try:
            rows = int(value)
        except ValueError:
            raise ServiceError(f"MAXREC {value!r} is not a whole number") from None
        if rows < 0:
            raise ServiceError(f"MAXREC {rows} is negative; give 0 (metadata only) or more")
        return min(rows, HARD_ROWS)

    def _uploads(self, params: Params, *, stored: bool) -> dict[str, pa.Table]:
        tables: dict[str, pa.Table] = {}
        for spec in params.all("UPLOAD"):
            for item in filter(None, (s.strip() for s in spec.split(";"))):
                match = UPLOAD_ITEM.match(item)
                if match is None:
                    raise ServiceError(f"UPLOAD {item!r} is not NAME,URI")
                name, uri = match.groups()
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name):
                    raise ServiceError(f"UPLOAD table name {name!r} is invalid: use letters, digits and _")
                tables[name] = read_upload(name, self._fetch(name, uri, params, stored))
        return tables

    def _fetch(self, name: str, uri: str, params: Params, stored: bool) -> bytes:
        if uri.startswith("param:"):
            part = uri[len("param:") :]
            if part not in params.files:
                raise ServiceError(f"UPLOAD {name}: no request part named {part!r}")
            return params.files[part]
        if stored and uri.startswith("stored:"):
            path = self.uploads_dir / Path(uri[len("stored:") :]).name
            if not path.is_file():
                raise ServiceError(f"UPLOAD {name}: the stored upload is gone")
            return path.read_bytes()
        if uri.startswith(("http://", "https://")):
            allow = AllowList.parse(self.context.deployment.config.vo_upload_allow)
            return upload_fetch.fetch(name, uri, allow, max_bytes=MAX_UPLOAD_BYTES)
        raise ServiceError(f"UPLOAD {name}: URI {uri!r} is not supported; use param:PART or an http(s) URL")

    def _run_job(
        self, parameters: dict[str, str], cancel: threading.Event, timeout: float
    ) -> tuple[Iterator[bytes], str, int]:
        body, mime, rows, overflow = self.run(
            Params({k: [v] for k, v in parameters.items()}), cancel, timeout, stored=True
        )
        return body, formats.stored_mime(mime, overflow), rows

    def _store_inline_uploads(self, params: Params) -> None:
        """Async jobs run later: keep inline upload parts as files and point UPLOAD at them."""
        specs = []
        for spec in params.all("UPLOAD"):
            items = []
            for item in filter(None, (s.strip() for s in spec.split(";"))):
                match = UPLOAD_ITEM.match(item)
                if match is None:
                    raise ServiceError(f"UPLOAD {item!r} is not NAME,URI")
                name, uri = match.groups()
                if uri.startswith("stored:"):
                    raise ServiceError(f"UPLOAD {name}: URI {uri!r} is not supported")
                if uri.startswith("param:"):
                    content = self._fetch(name, uri, params, False)
                    read_upload(name, content)  # refuse a malformed document now, not when the job runs
                    stored = f"{secrets.token_hex(16)}.xml"
                    (self.uploads_dir / stored).write_bytes(content)
                    uri = f"stored:{stored}"
                items.append(f"{name},{uri}")
            specs.append(";".join(items))
        if specs:
            params.values["UPLOAD"] = [";".join(specs)]

    def _forget_uploads(self, parameters: dict[str, str]) -> None:
        """Remove the stored uploads a job's UPLOAD parameter points at (the job is deleted or destroyed)."""
        for name in STORED.findall(parameters.get("UPLOAD", "")):
            (self.uploads_dir / name).unlink(missing_ok=True)

    def remove_orphan_uploads(self) -> int:
        """Remove stored uploads that no job points at (left by deleted jobs or failed submissions)."""
        return remove_orphan_uploads(self.context.deployment)

    # ---- endpoints ------------------------------------------------------------------------------------

    async def sync(self, request: Request) -> Response:
        """Run the query in the thread pool; if the client goes away meanwhile, cancel it."""
        params = await read_params(request)
        cancel = threading.Event()
        base = _base(request)
        work = asyncio.ensure_future(run_in_threadpool(lambda: self._run_sync(params, cancel, base)))
        while not work.done():
            await asyncio.wait({work}, timeout=DISCONNECT_POLL)
            if not work.done() and not cancel.is_set() and await request.is_disconnected():
                log.info("client of a sync query went away: cancelling the query")
                cancel.set()
        body, mime, overflow = work.result()
        headers = formats.result_headers(overflow)
        if isinstance(body, bytes):
            return Response(body, media_type=mime, headers=headers)
        # a large result is read and rendered batch by batch while it is sent, never whole in memory
        return StreamingResponse(body, media_type=mime, headers=headers)

    def _run_sync(
        self, params: Params, cancel: threading.Event, base: str
    ) -> tuple[bytes | Iterator[bytes], str, bool]:
        """A sync query's document: a small one whole (one write, no thread hop per piece while it is
        sent), a larger one as its pieces, the first of them rendered here. A result that fails part-way
        keeps the behaviour of a streamed one (:func:`_sent`): in-band where the format says so, else an
        incomplete transfer."""
        body, mime, _, overflow = self.run(params, cancel, SYNC_TIMEOUT, base=base)
        pieces: list[bytes] = []
        size = 0
        try:
            for piece in body:
                pieces.append(piece)
                size += len(piece)
                if size > WHOLE_BYTES:
                    return _sent(itertools.chain(pieces, body)), mime, overflow
        except ResultTruncated as exc:
            log.warning("a sync result failed part-way (reported in the document): %s", exc)
        except Exception as exc:
            return _sent(_then_raise(pieces, exc)), mime, overflow
        return b"".join(pieces), mime, overflow

    async def async_jobs(self, request: Request) -> Response:
        base = _base(request) + "/tap/async"
        user = authenticate(request)
        params = await read_params(request)
        if request.method == "GET":
            phases = [p.upper() for p in params.all("PHASE")]
            after = _parse_time(params.get("AFTER"), "AFTER") if params.get("AFTER") else None
            last = _positive_int(params.get("LAST"), "LAST") if params.get("LAST") else None
            jobs = await run_in_threadpool(self.jobs.list, user, phases or None, after, last)
            return Response(job_list_xml(jobs, base), media_type=XML)
        await run_in_threadpool(self._store_inline_uploads, params)
        values = {k: v for k, v in params.flat().items() if k not in ("PHASE", "RUNID")}
        try:
            job = await run_in_threadpool(self.jobs.create, values, params.get("RUNID"), user)
        except BaseException:
            await run_in_threadpool(self._forget_uploads, values)
            raise
        if (params.get("PHASE") or "").upper() == "RUN":
            await run_in_threadpool(self.jobs.run, job.job_id, user)
        return RedirectResponse(f"{base}/{job.job_id}", status_code=303)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        base = f"{_base(request)}/tap/async/{job_id}"
        user = authenticate(request)
        params = await read_params(request)
        if request.method == "DELETE" or (params.get("ACTION") or "").upper() == "DELETE":
            await run_in_threadpool(self.jobs.delete, job_id, user)
            return RedirectResponse(f"{_base(request)}/tap/async", status_code=303)
        if request.method == "POST":
            raise ServiceError("POST to a job needs ACTION=DELETE")
        wait = params.get("WAIT")
        if wait is not None:
            seconds = float(_positive_int(wait, "WAIT") if wait != "-1" else 120)
            job = await self.jobs.wait(job_id, seconds, (params.get("PHASE") or "").upper() or None, user)
        else:
            job = await run_in_threadpool(self.jobs.require, job_id, user)
        return Response(job_xml(job, base), media_type=XML)

    async def job_part(self, request: Request) -> Response:
        job_id, part = request.path_params["job_id"], request.path_params["part"]
        user = authenticate(request)
        params = await read_params(request)
        if request.method == "POST":
            return await run_in_threadpool(self._post_part, request, job_id, part, params)
        job = await run_in_threadpool(self.jobs.require, job_id, user)
        simple = {
            "phase": job.phase,
            "quote": "",
            "executionduration": str(job.execution_duration),
            "destruction": iso(job.destruction_time) or "",
            "owner": job.owner_id or "",
        }
        if part in simple:
            return PlainTextResponse(simple[part])
        if part == "parameters":
            return Response(job_part_xml(job, "", "parameters"), media_type=XML)
        if part == "results":
            return Response(
                job_part_xml(job, f"{_base(request)}/tap/async/{job_id}", "results"), media_type=XML
            )
        if part == "error":
            if job.phase != "ERROR":
                raise ServiceError(f"job {job_id} has no error (phase {job.phase})", status=404)
            return error_response(job.error_summary or "error", 200)
        raise ServiceError(f"no job resource {part!r}", status=404)

    def _post_part(self, request: Request, job_id: str, part: str, params: Params) -> Response:
        target = f"{_base(request)}/tap/async/{job_id}"
        user = authenticate(request)
        if part == "phase":
            phase = (params.get("PHASE") or "").upper()
            if phase == "RUN":
                self.jobs.run(job_id, user)
            elif phase == "ABORT":
                self.jobs.abort(job_id, user)
            else:
                self.jobs.require(job_id, user)  # another's job is "no such job", whatever was asked
                raise ServiceError(f"PHASE {phase!r} is not supported; valid: RUN, ABORT")
        elif part == "executionduration":
            self.jobs.require(job_id, user)
            seconds = _positive_int(params.get("EXECUTIONDURATION"), "EXECUTIONDURATION")
            self.jobs.set_duration(job_id, seconds, user)
        elif part == "destruction":
            self.jobs.require(job_id, user)
            self.jobs.set_destruction(job_id, _parse_time(params.get("DESTRUCTION"), "DESTRUCTION"), user)
        elif part == "parameters":
            self.jobs.set_parameters(job_id, params.flat(), user)
        else:
            raise ServiceError(f"job resource {part!r} cannot be changed", status=405)
        return RedirectResponse(target, status_code=303)

    async def result(self, request: Request) -> Response:
        job = await run_in_threadpool(self.jobs.require, request.path_params["job_id"], authenticate(request))
        if job.phase != "COMPLETED" or not job.result_url or not Path(job.result_url).is_file():
            raise ServiceError(f"job {job.job_id} has no result (phase {job.phase})", status=404)
        mime, overflow = formats.served_mime(job.result_format)
        return FileResponse(job.result_url, media_type=mime, headers=formats.result_headers(overflow))

    async def capabilities(self, request: Request) -> Response:
        xml = vosi.tap_capabilities(
            _base(request), upload_limit=MAX_UPLOAD_BYTES, default_rows=DEFAULT_ROWS, hard_rows=HARD_ROWS
        )
        return Response(xml, media_type=XML)

    async def availability(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self._check_database)
        except Exception as exc:  # any database failure means "not available", reported, not raised
            return Response(
                vosi.availability(False, f"the database cannot be reached: {type(exc).__name__}"),
                media_type=XML,
            )
        return Response(vosi.availability(True, "TAP accepting queries"), media_type=XML)

    def _check_database(self) -> None:
        """Connect afresh with a short timeout (the pool and the TAP_SCHEMA cache would hide an outage)."""
        url = self.context.deployment.control_url().set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        with psycopg.connect(conninfo, connect_timeout=AVAILABILITY_TIMEOUT, autocommit=True) as conn:
            conn.execute("SELECT 1 FROM tap_schema.tables LIMIT 1")

    async def tables(self, request: Request) -> Response:
        params = await read_params(request)
        detail = (params.get("DETAIL") or "max").lower() != "min"
        tables, keys = await run_in_threadpool(lambda: (self.context.tables(), self.context.keys()))
        return Response(vosi.tableset(tables, keys, detail), media_type=XML)

    async def table(self, request: Request) -> Response:
        name = request.path_params["name"]
        table = await run_in_threadpool(self.context.table, name)
        if table is None:
            raise ServiceError(f"no table {name!r}", status=404)
        return Response(vosi.single_table(table, self.context.keys()), media_type=XML)

    async def examples(self, request: Request) -> Response:
        tables = await run_in_threadpool(self.context.tables)
        return Response(examples_document(tables), media_type="application/xhtml+xml")

    def routes(self) -> list[Route]:
        both = ["GET", "POST"]
        return [
            Route("/tap/sync", guarded(self.sync), methods=both),
            Route("/tap/async", guarded(self.async_jobs), methods=both),
            Route("/tap/async/{job_id}", guarded(self.job), methods=["GET", "POST", "DELETE"]),
            Route("/tap/async/{job_id}/results/result", guarded(self.result), methods=["GET"]),
            Route("/tap/async/{job_id}/{part}", guarded(self.job_part), methods=both),
            Route("/tap/capabilities", guarded(self.capabilities), methods=["GET"]),
            Route("/tap/availability", guarded(self.availability), methods=["GET"]),
            Route("/tap/tables", guarded(self.tables), methods=["GET"]),
            Route("/tap/tables/{name}", guarded(self.table), methods=["GET"]),
            Route("/tap/examples", guarded(self.examples), methods=["GET"]),
        ]


def _then_raise(pieces: list[bytes], failure: Exception) -> Iterator[bytes]:
    """The pieces rendered before `failure`, then the failure (the transfer is cut short)."""
    yield from pieces
    raise failure


def _sent(body: Iterator[bytes]) -> Iterator[bytes]:
    """A sync response's body: a result that failed part-way and said so in-band (VOTable, JSON) ends
    normally; any other failure propagates, and the server then closes the connection without the final
    chunk, so the client sees an incomplete transfer."""
    try:
        yield from body
    except ResultTruncated as exc:
        log.warning("a sync result failed part-way (reported in the document): %s", exc)
    except Exception as exc:
        log.warning("a sync result failed part-way; the transfer is cut short: %s", exc)
        raise


def remove_orphan_uploads(deployment: Deployment) -> int:
    """Remove the stored uploads no TAP job points at; returns how many (once per server start)."""
    uploads_dir = deployment.data_dir / UPLOADS_DIR
    with deployment.engine().connect() as conn:
        uploads = conn.execute(
            sa.text("SELECT parameters->>'UPLOAD' FROM dms.job WHERE parameters ? 'UPLOAD'")
        ).scalars()
        referenced = {name for value in uploads for name in STORED.findall(value or "")}
    removed = 0
    for path in uploads_dir.iterdir() if uploads_dir.is_dir() else ():
        if path.name not in referenced and time.time() - path.stat().st_mtime > ORPHAN_AGE:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def examples_document(tables: list[Table]) -> str:
    """DALI examples (XHTML + RDFa), each a query that runs against what is published."""
    examples = [
        (
            "tables",
            "The published tables",
            "SELECT schema_name, table_name, description FROM TAP_SCHEMA.tables ORDER BY table_name",
        ),
        (
            "obscore-cone",
            "Images whose center is within 2 degrees of a position",
            "SELECT TOP 10 obs_id, s_ra, s_dec, access_url FROM ivoa.ObsCore\n"
            "WHERE CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', 10.0, 20.0, 2.0)) = 1",
        ),
    ]
    for table in tables:
        ra_col, dec_col = table.column_with_ucd("pos.eq.ra"), table.column_with_ucd("pos.eq.dec")
        if ra_col is not None and dec_col is not None and not table.name.lower().startswith("ivoa."):
            ra, dec = quote_identifier(ra_col.name), quote_identifier(dec_col.name)
            examples.append(
                (
                    f"cone-{re.sub(r'[^a-z0-9]+', '-', table.name.lower())}",
                    f"A cone search on {table.name}, nearest first",
                    f"SELECT TOP 10 {ra}, {dec}, DISTANCE(POINT('ICRS', {ra}, {dec}), "
                    "POINT('ICRS', 10.0, 20.0)) "
                    f"AS dist FROM {table.name}\n"
                    f"WHERE CONTAINS(POINT('ICRS', {ra}, {dec}), CIRCLE('ICRS', 10.0, 20.0, 0.5)) "
                    "= 1 "
                    "ORDER BY dist",
                )
            )
            break
    body = "".join(
        f'<div typeof="example" id="{ident}" resource="#{ident}"><h2 property="name">{escape(title)}</h2>'
        f'<pre property="query">{escape(query)}</pre></div>\n'
        for ident, title, query in examples
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
        '<head><title>DMS TAP examples</title></head><body vocab="http://www.ivoa.net/rdf/examples#">'
        f"<h1>DMS TAP examples</h1>\n{body}</body></html>\n"
    )


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _positive_int(value: str | None, name: str) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise ServiceError(f"{name} {value!r} is not a whole number") from None
    if number < 0:
        raise ServiceError(f"{name} {number} is negative")
    return number


def _parse_time(value: str | None, name: str) -> datetime:
    try:
        return datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError:
        raise ServiceError(f"{name} {value!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00Z") from None
