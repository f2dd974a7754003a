"""A result cut at MAXREC says so in every format: the X-DMS-Overflow header on TAP sync, async results, SCS
and SIA; in-band in VOTable, JSON and Parquet; and `dms query` on stderr and in-band (issue 11, item 7)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from click.testing import CliRunner
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)

from dms.cli import main

QUERIES = ["SELECT source_id, ra FROM cat.gaia", "SELECT id, mag FROM survey.obj"]
FORMATS = ["votable", "votable/b2", "csv", "tsv", "json", "parquet"]


def _sync(url: str, query: str, fmt: str, maxrec: int) -> httpx.Response:
    response = httpx.post(
        f"{url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": fmt, "MAXREC": str(maxrec)},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response


def _rows(fmt: str, content: bytes) -> int:
    if fmt in ("csv", "tsv"):
        frame = pd.read_csv(io.BytesIO(content), sep="," if fmt == "csv" else "\t")
        table = Table.read(content.decode(), format="ascii.csv" if fmt == "csv" else "ascii.tab")
        assert len(table) == len(frame) and not frame.isna().any().any()
        return len(frame)
    if fmt == "json":
        return len(json.loads(content)["data"])
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(content)).num_rows
    return len(Table.read(io.BytesIO(content), format="votable"))


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_sync_results_report_overflow_in_every_format(meta_vo: MetaVO, query: str, fmt: str) -> None:
    cut = _sync(meta_vo.url, query, fmt, 5)
    assert cut.headers["X-DMS-Overflow"] == "true"
    assert _rows(fmt, cut.content) == 5
    whole = _sync(meta_vo.url, f"{query} WHERE {query.split()[1].rstrip(',')} < 0", fmt, 5)
    assert whole.headers["X-DMS-Overflow"] == "false"
    if fmt == "parquet":
        for response, status in ((cut, b"OVERFLOW"), (whole, b"OK")):
            metadata = pq.read_schema(io.BytesIO(response.content)).metadata
            assert metadata[b"IVOA.QUERY_STATUS"] == status
            embedded = metadata[b"IVOA.VOTable-Parquet.content"]
            assert (b'value="OVERFLOW"' in embedded) == (status == b"OVERFLOW")
    if fmt == "json":
        assert json.loads(cut.content)["overflow"] is True and json.loads(whole.content)["overflow"] is False
    if fmt.startswith("votable"):
        assert b'value="OVERFLOW"' in cut.content and b'value="OVERFLOW"' not in whole.content


@pytest.mark.parametrize("fmt", ["csv", "parquet", "votable"])
def test_async_results_report_overflow(meta_vo: MetaVO, fmt: str) -> None:
    for maxrec, expected in ((7, "true"), (1_000_000, "false")):
        created = httpx.post(
            f"{meta_vo.url}/tap/async",
            data={
                "LANG": "ADQL",
                "QUERY": QUERIES[0],
                "RESPONSEFORMAT": fmt,
                "MAXREC": str(maxrec),
                "PHASE": "RUN",
            },
            follow_redirects=False,
        )
        job = created.headers["location"]
        for _ in range(600):
            phase = httpx.get(f"{job}/phase").text
            if phase in ("COMPLETED", "ERROR", "ABORTED"):
                break
            time.sleep(0.1)
        assert phase == "COMPLETED"
        result = httpx.get(f"{job}/results/result")
        assert result.status_code == 200 and result.headers["X-DMS-Overflow"] == expected
        assert not result.headers["content-type"].endswith("overflow=true")
        if fmt == "csv" and expected == "true":
            assert _rows("csv", result.content) == 7


def test_scs_and_sia_report_overflow(meta_vo: MetaVO) -> None:
    cone = httpx.get(
        f"{meta_vo.url}/scs/gaia",
        params={"RA": 10, "DEC": 10, "SR": 20, "MAXREC": 3, "RESPONSEFORMAT": "csv"},
    )
    assert cone.status_code == 200 and cone.headers["X-DMS-Overflow"] == "true"
    images = httpx.get(f"{meta_vo.url}/sia/query", params={"MAXREC": 1, "RESPONSEFORMAT": "csv"})
    assert images.status_code == 200 and images.headers["X-DMS-Overflow"] == "true"
    images = httpx.get(f"{meta_vo.url}/sia/query", params={"MAXREC": 100, "RESPONSEFORMAT": "csv"})
    assert images.headers["X-DMS-Overflow"] == "false"


def test_dms_query_reports_overflow(meta_vo: MetaVO, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data-dir", str(meta_vo.deployment.data_dir), "query", QUERIES[0], "--max-rows", "4"]
    for fmt in ("csv", "json", "table", "parquet"):
        output = tmp_path / f"out.{fmt}"
        result = runner.invoke(main, [*base, "--format", fmt, "--output", str(output)])
        assert result.exit_code == 0, result.output
        assert "result cut at 4 rows" in result.stderr
        if fmt == "parquet":
            table = pq.read_table(output)
            assert table.num_rows == 4 and table.schema.metadata[b"IVOA.QUERY_STATUS"] == b"OVERFLOW"
        elif fmt == "json":
            assert json.loads(output.read_text())["overflow"] is True
        elif fmt == "table":
            assert "cut at --max-rows" in output.read_text()
        else:
            assert len(pd.read_csv(output)) == 4
    whole = runner.invoke(
        main, [*base[:-1], "1000000", "--format", "parquet", "--output", str(tmp_path / "w")]
    )
    assert whole.exit_code == 0 and "result cut" not in whole.stderr
    assert pq.read_schema(tmp_path / "w").metadata[b"IVOA.QUERY_STATUS"] == b"OK"
