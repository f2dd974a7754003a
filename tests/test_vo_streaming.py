"""Results streamed batch by batch (issues 16 and 17): control-database results come from a server-side
cursor in batches with MAXREC exact in every format; a failure after the first rows were sent ends a VOTable
well-formed with QUERY_STATUS=ERROR after the table (DALI 1.1, section 4.4.1) that votlint accepts and pyvo
raises, JSON with "error", and CSV as an incomplete HTTP transfer; a failure before the first byte (a bad
value at a late row, on the control database or the catalog engine) is an HTTP 400 error document."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pyvo
from astropy.io import fits
from astropy.io.votable import parse
from astropy.table import Table
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)
from vo_support import N_ROWS

from dms.services.vo.errors import QueryError
from dms.services.vo.result_stream import ResultStream, ResultTruncated
from dms.services.vo.votable_writer import result_chunks, result_votable

# every pair of survey.obj ids (a.id <= the bound), in order: row k is (k // N_ROWS + 1, k % N_ROWS + 1)
PAIRS = (
    "SELECT a.id AS a_id, b.id AS b_id FROM survey.obj AS a, survey.obj AS b WHERE a.id <= {} "
    "ORDER BY a.id, b.id"
)


def expected_pairs(rows: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(rows)
    return k // N_ROWS + 1, k % N_ROWS + 1


def votlint_errors(document: bytes) -> list[str]:
    lint = subprocess.run(["stilts", "votlint", "-"], input=document, capture_output=True, timeout=300)
    return [line for line in (lint.stdout + lint.stderr).decode().splitlines() if "ERROR" in line]


def statuses(document: bytes) -> list[tuple[str, str]]:
    """(value, text) of the results resource's QUERY_STATUS INFOs, in document order."""
    resource = parse(io.BytesIO(document)).resources[0]
    return [(i.value, i.content or "") for i in resource.infos if i.name == "QUERY_STATUS"]


def pyvo_error(document: bytes) -> str:
    with pytest.raises(pyvo.dal.DALQueryError) as raised:
        pyvo.dal.DALResults(parse(io.BytesIO(document)), url="http://test/tap/sync")
    return str(raised.value)


# ---- the writer, with a source that fails after some batches ------------------------------------------


def failing_stream(batches: int, rows: int) -> tuple[ResultStream, pa.Table]:
    """A stream whose source fails (a shard lost) after `batches` batches of `rows` rows."""
    table = pa.table(
        {
            "id": pa.array(np.arange(batches * rows, dtype=np.int64)),
            "name": pa.array([f"<row {i} & co>" for i in range(batches * rows)]),
        }
    )

    def source() -> Iterator[pa.RecordBatch]:
        yield from table.to_batches(max_chunksize=rows)
        raise QueryError("shard s2 failed: could not connect to server")

    return ResultStream(table.schema, batches * rows + 10, False, source()), table


@pytest.mark.parametrize("serialization", ["tabledata", "binary2"])
def test_a_failure_mid_stream_ends_the_votable_with_an_error(serialization: str) -> None:
    stream, sent = failing_stream(3, 700)
    pieces = []
    with pytest.raises(ResultTruncated, match="shard s2 failed"):
        for piece in result_chunks(stream, serialization=serialization, batch_rows=500):
            pieces.append(piece)
    document = b"".join(pieces)
    table = Table.read(io.BytesIO(document), format="votable")
    assert table["id"].tolist() == sent["id"].to_pylist()  # every row that was read, none twice
    assert table["name"].tolist() == sent["name"].to_pylist()
    assert statuses(document) == [("OK", ""), ("ERROR", "shard s2 failed: could not connect to server")]
    assert "shard s2 failed" in pyvo_error(document)
    if shutil.which("stilts"):
        assert votlint_errors(document) == []


def test_a_failure_before_the_first_row_is_an_error_document() -> None:
    stream, _ = failing_stream(0, 100)
    pieces = []
    with pytest.raises(ResultTruncated):
        pieces.extend(result_chunks(stream))
    document = b"".join(pieces)
    assert statuses(document) == [("ERROR", "shard s2 failed: could not connect to server")]
    assert "shard s2 failed" in pyvo_error(document)
    if shutil.which("stilts"):
        assert votlint_errors(document) == []


def test_overflow_is_in_the_results_resource_beside_a_datalink_descriptor() -> None:
    """SIA's results carry a DataLink service descriptor after the results resource: the OVERFLOW status
    belongs to the results resource (where pyvo looks), not inside the descriptor."""
    table = pa.table({"obs_publisher_did": ["ivo://x/a", "ivo://x/b"], "s_ra": [1.0, 2.0]})
    document = result_votable(table, overflow=True, datalink=("obs_publisher_did", "http://x/datalink"))
    votable = parse(io.BytesIO(document))
    assert [i.value for i in votable.resources[0].infos if i.name == "QUERY_STATUS"] == ["OK", "OVERFLOW"]
    assert not [i for i in votable.resources[1].infos if i.name == "QUERY_STATUS"]
    with pytest.warns(pyvo.dal.DALOverflowWarning):  # pyvo sees the overflow
        pyvo.dal.DALResults(votable, url="http://x")


# ---- over HTTP ------------------------------------------------------------------------------------------


def _sync(url: str, query: str, fmt: str, maxrec: int) -> httpx.Response:
    return httpx.post(
        f"{url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": fmt, "MAXREC": str(maxrec)},
        timeout=300,
    )


def _read(fmt: str, content: bytes) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        return pd.read_csv(io.BytesIO(content), sep="," if fmt == "csv" else "\t")
    if fmt == "json":
        document = json.loads(content)
        return pd.DataFrame(document["data"], columns=[m["name"] for m in document["metadata"]])
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(content)).to_pandas()
    if fmt == "fits":
        with fits.open(io.BytesIO(content)) as hdus:
            return Table(hdus[1].data).to_pandas()
    return Table.read(io.BytesIO(content), format="votable").to_pandas()


@pytest.mark.parametrize("fmt", ["votable", "votable/b2", "csv", "json", "parquet", "fits"])
def test_control_database_results_in_several_batches_are_exact(meta_vo: MetaVO, fmt: str) -> None:
    """30,000 rows (three fetches of the server-side cursor), cut at MAXREC in the middle of a batch and
    not cut at all: the rows, their order and the overflow as numpy computes them."""
    query = PAIRS.format(10)
    for maxrec, overflow in ((25_001, True), (30_000, False)):
        response = _sync(meta_vo.url, query, fmt, maxrec)
        assert response.status_code == 200, response.text
        assert response.headers["X-DMS-Overflow"] == ("true" if overflow else "false")
        frame = _read(fmt, response.content)
        a_id, b_id = expected_pairs(maxrec)
        assert frame["a_id"].tolist() == a_id.tolist() and frame["b_id"].tolist() == b_id.tolist()
        if fmt.startswith("votable"):
            assert statuses(response.content)[-1][0] == ("OVERFLOW" if overflow else "OK")
        if fmt == "json":
            assert json.loads(response.content)["overflow"] is overflow


BAD_ROW = {  # a value that cannot be converted at a late row, on each backend
    "control": "SELECT id, CAST(CASE WHEN id = 2900 THEN 'x' ELSE '1' END AS INTEGER) AS v FROM survey.obj",
    "catalog": (
        "SELECT source_id, CAST(CASE WHEN source_id = {} THEN 'x' ELSE '1' END AS INTEGER) AS v FROM cat.gaia"
    ),
}


@pytest.mark.parametrize("backend", ["control", "catalog"])
@pytest.mark.parametrize("fmt", ["votable", "csv"])
def test_a_query_failing_at_a_late_row_is_an_error_before_any_row(
    meta_vo: MetaVO, backend: str, fmt: str
) -> None:
    """The control database materializes the capped result before the first byte, the engine merges it:
    either way the failure is an HTTP 400 error document, never a short result."""
    late = sorted(meta_vo.gaia["source_id"].to_pylist())[-3]
    response = _sync(meta_vo.url, BAD_ROW[backend].format(late), fmt, 1_000_000)
    assert response.status_code == 400, response.text[:500]
    assert statuses(response.content)[0][0] == "ERROR"
    assert re.search(r"[\"']x[\"']", pyvo_error(response.content))  # the value that failed


def _terminate_streaming_backend(meta_vo: MetaVO) -> int:
    """End the PostgreSQL backend that is reading a streamed result (as a database restart would)."""
    url = meta_vo.deployment.control_url().set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query ILIKE %s",
                ('%FETCH%"dms_query"%',),
            ).fetchall()
        )


def _stream_and_cut(meta_vo: MetaVO, fmt: str) -> tuple[bytes, BaseException | None]:
    """Start a 600,000-row result, end its database connection after the first piece, read the rest."""
    data = {"LANG": "ADQL", "QUERY": PAIRS.format(200), "RESPONSEFORMAT": fmt, "MAXREC": "1000000"}
    pieces: list[bytes] = []
    failure: BaseException | None = None
    with httpx.stream("POST", f"{meta_vo.url}/tap/sync", data=data, timeout=300) as response:
        assert response.status_code == 200
        chunks = response.iter_bytes()
        pieces.append(next(chunks))
        assert _terminate_streaming_backend(meta_vo) == 1
        try:
            pieces.extend(chunks)
        except httpx.HTTPError as exc:
            failure = exc
    return b"".join(pieces), failure


@pytest.mark.parametrize("fmt", ["votable", "votable/b2"])
def test_connection_lost_mid_stream_ends_the_votable_with_an_error(meta_vo: MetaVO, fmt: str) -> None:
    document, failure = _stream_and_cut(meta_vo, fmt)
    assert failure is None  # the document is complete, and says it is not
    table = Table.read(io.BytesIO(document), format="votable")
    assert 0 < len(table) < 600_000
    a_id, b_id = expected_pairs(len(table))
    assert table["a_id"].tolist() == a_id.tolist() and table["b_id"].tolist() == b_id.tolist()
    status, message = statuses(document)[-1]
    assert status == "ERROR" and "connection was lost" in message
    assert "connection was lost" in pyvo_error(document)
    if shutil.which("stilts"):
        assert votlint_errors(document) == []


def test_connection_lost_mid_stream_ends_json_with_an_error(meta_vo: MetaVO) -> None:
    document, failure = _stream_and_cut(meta_vo, "json")
    assert failure is None
    parsed = json.loads(document)
    assert "connection was lost" in parsed["error"] and "overflow" not in parsed
    a_id, b_id = expected_pairs(len(parsed["data"]))
    assert parsed["data"] == np.column_stack([a_id, b_id]).tolist()


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_connection_lost_mid_stream_cuts_a_csv_transfer_short(meta_vo: MetaVO, fmt: str) -> None:
    """CSV and TSV cannot say in-band that rows are missing: the transfer ends without its final chunk,
    which every HTTP client reports as an error, rather than as a shorter result that looks whole."""
    document, failure = _stream_and_cut(meta_vo, fmt)
    assert isinstance(failure, httpx.RemoteProtocolError)
    lines = document.decode().split("\n")
    assert 1 < len(lines) < 600_001
