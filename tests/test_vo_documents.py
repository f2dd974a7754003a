"""UWS and VOSI documents from vo-models (issue 17), read back by pyvo's own parsers (an independent
reader of the same standards): what was said is what a client reads, text with XML specials included."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from pyvo.io import uws as pyvo_uws
from pyvo.io import vosi as pyvo_vosi

from dms.services.vo import vosi
from dms.services.vo.tap_schema import Column, Table
from dms.services.vo.uws import Job
from dms.services.vo.uws_xml import iso, job_list_xml, job_xml


def job(phase: str, **changes: object) -> Job:
    values: dict[str, object] = {
        "job_id": "j1",
        "phase": phase,
        "run_id": None,
        "owner_id": None,
        "parameters": {"QUERY": "SELECT ra FROM cat.obj WHERE mag < 20 & 1", "LANG": "ADQL"},
        "creation_time": datetime(2026, 12, 4, 1, 2, 3),
        "start_time": None,
        "end_time": None,
        "destruction_time": datetime(2026, 12, 11, 1, 2, 3),
        "execution_duration": 600,
        "error_summary": None,
        "error_type": None,
        "result_url": None,
        "result_format": None,
        "row_count": None,
    }
    values.update(changes)
    return Job(**values)  # type: ignore[arg-type]


def test_pending_job_reads_back() -> None:
    parsed = pyvo_uws.parse_job(io.BytesIO(job_xml(job("PENDING"), "http://h/tap/async/j1").encode()))
    assert parsed.jobid == "j1" and parsed.phase == "PENDING" and parsed.executionduration.value == 600
    assert parsed.ownerid is None and parsed.runid is None and parsed.results == []
    assert parsed.creationtime.isot.startswith("2026-12-04T01:02:03")
    values = {p.id_: p.content for p in parsed.parameters}
    assert values == {"lang": "ADQL", "query": "SELECT ra FROM cat.obj WHERE mag < 20 & 1"}


def test_completed_and_failed_jobs_read_back() -> None:
    done = job("COMPLETED", run_id="r<1>", owner_id="alice", result_format="application/x-votable+xml")
    parsed = pyvo_uws.parse_job(io.BytesIO(job_xml(done, "http://h/tap/async/j1").encode()))
    assert parsed.runid == "r<1>" and parsed.ownerid == "alice"
    (result,) = parsed.results
    assert result.id_ == "result" and result.href == "http://h/tap/async/j1/results/result"
    failed = job("ERROR", error_summary="column 'x' & more", error_type="fatal")
    parsed = pyvo_uws.parse_job(io.BytesIO(job_xml(failed, "http://h/tap/async/j1").encode()))
    assert parsed.errorsummary.message.content == "column 'x' & more"
    assert parsed.errorsummary.type_ == "fatal" and parsed.errorsummary.has_detail


def test_job_list_reads_back() -> None:
    jobs = [job("PENDING", job_id="a"), job("EXECUTING", job_id="b", run_id="mine", owner_id="bob")]
    parsed = pyvo_uws.parse_job_list(io.BytesIO(job_list_xml(jobs, "http://h/tap/async").encode()))
    assert [(j.jobid, j.phase, j.runid, j.ownerid) for j in parsed] == [
        ("a", "PENDING", None, None),
        ("b", "EXECUTING", "mine", "bob"),
    ]
    assert 'xlink:href="http://h/tap/async/b"' in job_list_xml(jobs, "http://h/tap/async")


def test_times_say_the_same_text_everywhere() -> None:
    document = job_xml(job("PENDING"), "http://h/tap/async/j1")
    assert f"<uws:destruction>{iso(datetime(2026, 12, 11, 1, 2, 3))}</uws:destruction>" in document


def test_tap_capabilities_read_back() -> None:
    document = vosi.tap_capabilities("http://h:8000", upload_limit=1000, default_rows=10, hard_rows=99)
    capabilities = pyvo_vosi.parse_capabilities(io.BytesIO(document.encode()))
    by_id = {str(c.standardid): c for c in capabilities}
    tap = by_id["ivo://ivoa.net/std/TAP"]
    assert tap.interfaces[0].accessurls[0].content == "http://h:8000/tap"
    assert tap.outputlimit.default.content == 10 and tap.outputlimit.hard.content == 99
    assert tap.uploadlimit.hard.content == 1000
    (language,) = tap.languages
    assert language.name == "ADQL" and [v.content for v in language.versions] == ["2.0", "2.1"]
    features = {f.form for group in language.languagefeaturelists for f in group.features}
    assert {
        "POINT",
        "CONTAINS",
        "ivo_healpix_index(order INTEGER, ra DOUBLE, dec DOUBLE) -> BIGINT",
    } <= features
    mimes = {o.mime for o in tap.outputformats}
    assert {"application/x-votable+xml", "text/csv", "application/fits"} <= mimes
    assert "ivo://ivoa.net/std/VOSI#tables-1.1" in by_id and "ivo://ivoa.net/std/DALI#examples" in by_id


def test_simple_service_capabilities_and_availability_read_back() -> None:
    document = vosi.service_capabilities("http://h", "scs", "ivo://ivoa.net/std/ConeSearch", "http://h/scs/x")
    ids = [str(c.standardid) for c in pyvo_vosi.parse_capabilities(io.BytesIO(document.encode()))]
    assert ids[0] == "ivo://ivoa.net/std/ConeSearch" and "ivo://ivoa.net/std/VOSI#availability" in ids
    for up, note in ((True, "fine"), (False, "database down: <OperationalError> & more")):
        parsed = pyvo_vosi.parse_availability(io.BytesIO(vosi.availability(up, note).encode()))
        assert parsed.available is up and parsed.notes == [note]


@pytest.mark.parametrize("detail", [True, False])
def test_tableset_reads_back(detail: bool) -> None:
    columns = (
        Column("size", "int", description="a reserved word & <markup>", indexed=True, std=True),
        Column("t", "char", arraysize="*", xtype="timestamp", unit="s", ucd="time.epoch"),
    )
    tables = [
        Table("cat", "cat.obj", "objects: ra < 10 & dec > 0", "table", columns),
        Table("cat", "cat.src", None, "table", (Column("obj_id", "long"),)),
    ]
    keys = [("k1", "cat.src", "cat.obj", [("obj_id", "size")])]
    tableset = pyvo_vosi.parse_tables(io.BytesIO(vosi.tableset(tables, keys, detail).encode()))
    (schema,) = tableset.tableset.schemas
    assert schema.name == "cat" and [t.name for t in schema.tables] == ["cat.obj", "cat.src"]
    obj, src = schema.tables
    assert obj.description == "objects: ra < 10 & dec > 0"
    if not detail:
        assert obj.columns == [] and src.foreignkeys == []
        return
    size, t = obj.columns
    assert size.name == "size" and size.description == "a reserved word & <markup>"
    assert size.datatype.content == "int" and set(size.flags) == {"indexed", "std"}
    assert t.datatype.arraysize == "*" and t.unit == "s" and t.ucd == "time.epoch"
    (key,) = src.foreignkeys
    assert key.targettable == "cat.obj" and key.fkcolumns[0].fromcolumn == "obj_id"


def test_single_table_reads_back() -> None:
    from xml.etree import ElementTree

    table = Table("cat", "cat.obj", "objects", "table", (Column("ra", "double", unit="deg"),))
    root = ElementTree.fromstring(vosi.single_table(table, []).encode())
    assert root.tag == "{http://www.ivoa.net/xml/VOSITables/v1.0}table"
    assert root.findtext("name") == "cat.obj" and root.findtext("column/unit") == "deg"
