"""A hostile-input pass over every HTTP endpoint and parameter of the VO services.

Hypothesis draws an endpoint, a method and parameter values from hostile shapes (SQL and ADQL injection,
path traversal, control characters, huge and deeply nested values, XML entities, numbers out of range) and
sends them over real HTTP to `dms serve`'s application on a real deployment with a loaded catalog. Every
answer must be a clear client error or a success: never a 5xx, never a Python traceback or a server path in
the body. After the pass the control database and the catalog files are exactly as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.services.vo.server import running_server
from tests.hypothesis_profiles import examples
from tests.pg_support import control_database, drop_database, seed_default_shard
from tests.vo_support import publish_test_data


@dataclass
class Live:
    url: str
    deployment: Deployment
    conninfo: str


@pytest.fixture(scope="module")
def live(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    name = control_database(pg_server, "ho")
    directory = tmp_path_factory.mktemp("hostile")
    deployment = Deployment.create(directory / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    try:
        migrate.upgrade(deployment)
        publish_test_data(deployment)
        gaia = gaia_table().take(pa.array(np.arange(0, 482_176, 200)))
        path = write_parquet(gaia, directory / "gaia.parquet")
        options = TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2)
        load_files(deployment, "gaia", [path], progress=False, create=options)
        with running_server(deployment) as url:
            yield Live(url, deployment, pg_server.get_uri(name))
    finally:
        deployment.dispose()
        drop_database(pg_server, name)


# ---- what must not change ----------------------------------------------------------------------------------

# Tables whose rows change by design when a client uses the services (UWS jobs, and what users create).
CHANGING = {("dms", "job")}


def fingerprint(live: Live) -> dict[str, Any]:
    """Every user table's rows (hashed), the schemas, roles and functions, and the catalog files' bytes."""
    state: dict[str, Any] = {}
    with psycopg.connect(live.conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        state["tables"] = tables
        for schema, table in tables:
            if (schema, table) in CHANGING:
                continue
            query = psycopg.sql.SQL(
                "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t"
            )
            row = conn.execute(query.format(psycopg.sql.Identifier(schema, table))).fetchone()
            state[f"{schema}.{table}"] = row[0] if row else None
        state["roles"] = conn.execute("SELECT rolname, rolsuper FROM pg_roles ORDER BY 1").fetchall()
        state["functions"] = conn.execute(
            "SELECT n.nspname, p.proname, md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = "
            "p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        ).fetchall()
    catalog = live.deployment.data_dir / "catalog"
    state["files"] = {
        str(p.relative_to(catalog)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(catalog.rglob("*"))
        if p.is_file() and p.suffix != ".wal"
    }
    return state


# ---- hostile values ----------------------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE dms.shard; --",
    "1; CREATE TABLE public.pwned (a int)",
    "SELECT 1; COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned'",
    'SELECT * FROM (WITH "a"" integer); DROP TABLE dms.job; --" AS (SELECT 1) SELECT 1) x',
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM pg_shadow",
    "SELECT * FROM dms.shard",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT * FROM read_csv('/etc/passwd')",
    "INSTALL httpfs",
    "ATTACH '/tmp/x.duckdb'",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "SELECT * FROM cat.gaia WHERE 1 = (SELECT 1 FROM pg_sleep(1000))",
    "SELECT " + "(" * 300 + "1" + ")" * 300,
    "SELECT " + "ABS(" * 200 + "1" + ")" * 200,
    "SELECT source_id FROM cat.gaia WHERE " + " OR ".join(f"source_id = {i}" for i in range(3000)),
    "SELECT " + " + ".join("1" for _ in range(3000)),
    "SELECT * FROM cat.gaia WHERE source_id IN "
    + "(SELECT source_id FROM cat.gaia WHERE source_id IN " * 60
    + "(1)"
    + ")" * 60,
    "SELECT TOP 1 * FROM cat.gaia UNION SELECT TOP 1 * FROM tap_upload.nothing",
    "SELECT COUNT(*) FROM _local.x",
    "SELECT * FROM TAP_SCHEMA.tables WHERE table_name = '\x00'",
    "SELECT CONTAINS(POINT('ICRS', 1, 2), CIRCLE('ICRS', 1, 2, -1)) FROM cat.gaia",
    "SELECT IN_UNIT(ra, 'parsec/furlong') FROM cat.gaia",
]
PATHS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/hostname", "%00", "a" * 5000, "💥", "\\x00"]
NUMBERS = ["-1", "1e309", "-1e309", "nan", "inf", "99999999999999999999999", "0x10", "", " ", "1,2", "-0"]
XML_BOMB = (
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    "<VOTABLE><RESOURCE><TABLE><FIELD name='x' datatype='char' arraysize='*'/><DATA><TABLEDATA>"
    "<TR><TD>&d;</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
)
STREAM_HREF = (
    '<?xml version="1.0"?><VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>'
    '<FIELD name="line" datatype="char" arraysize="*"/><DATA><BINARY2><STREAM encoding="base64" '
    'href="file:///etc/hostname"/></BINARY2></DATA></TABLE></RESOURCE></VOTABLE>'
)
BAD_FIELD = (
    '<?xml version="1.0"?><VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>'
    '<FIELD name="a&quot; integer); DROP TABLE dms.job; --" datatype="int"/><DATA><TABLEDATA><TR><TD>1</TD>'
    "</TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
)

hostile_text = st.one_of(
    st.sampled_from(INJECTIONS + PATHS + NUMBERS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8).map(lambda s: s * 500),
)

# endpoint -> its parameters (the names each service reads)
ENDPOINTS: dict[str, list[str]] = {
    "/tap/sync": ["REQUEST", "LANG", "QUERY", "FORMAT", "RESPONSEFORMAT", "MAXREC", "UPLOAD", "VERSION"],
    "/tap/async": [
        "REQUEST",
        "LANG",
        "QUERY",
        "FORMAT",
        "MAXREC",
        "UPLOAD",
        "PHASE",
        "RUNID",
        "AFTER",
        "LAST",
    ],
    "/tap/tables": ["DETAIL"],
    "/tap/capabilities": [],
    "/tap/availability": [],
    "/tap/examples": [],
    "/scs/gaia": ["RA", "DEC", "SR", "VERB", "MAXREC", "RESPONSEFORMAT"],
    "/scs/cat.gaia": ["RA", "DEC", "SR", "VERB"],
    "/sia/query": [
        "POS",
        "BAND",
        "TIME",
        "POL",
        "FOV",
        "SPATRES",
        "EXPTIME",
        "ID",
        "COLLECTION",
        "FACILITY",
        "INSTRUMENT",
        "DPTYPE",
        "CALIB",
        "TARGET",
        "FORMAT",
        "MAXREC",
        "RESPONSEFORMAT",
    ],
    "/datalink": ["ID", "RESPONSEFORMAT"],
}
JOB_PARTS = ["phase", "executionduration", "destruction", "parameters", "results", "error", "owner", "quote"]


def check(response: httpx.Response, live: Live) -> None:
    body = response.text
    assert response.status_code < 500, (response.request.url, response.status_code, body[:500])
    assert "Traceback" not in body and 'File "/' not in body, body[:500]
    assert str(live.deployment.data_dir) not in body, body[:500]


BEFORE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[httpx.Client]:
    """The HTTP client of the pass; the state before it is taken first."""
    BEFORE.update(fingerprint(live))
    with httpx.Client(base_url=live.url, timeout=120) as http:
        yield http


@settings(
    max_examples=examples(100), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(data=st.data())
def test_every_endpoint_and_parameter_answers_clearly(
    data: st.DataObject, live: Live, client: httpx.Client
) -> None:
    path = data.draw(st.sampled_from(sorted(ENDPOINTS)), label="endpoint")
    names = ENDPOINTS[path]
    params: dict[str, str] = {}
    if names:
        chosen = data.draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True), label="params")
        params = {name: data.draw(hostile_text, label=name) for name in chosen}
    if path.startswith("/tap/") and data.draw(st.booleans(), label="plausible"):
        params.setdefault("LANG", "ADQL")
        params.setdefault("REQUEST", "doQuery")
    method = data.draw(st.sampled_from(["GET", "POST"]), label="method")
    if method == "GET" and sum(len(v) for v in params.values()) < 4000:
        response = client.get(path, params=params)
    else:
        response = client.post(path, data=params)
    check(response, live)


@pytest.mark.parametrize("query", INJECTIONS)
def test_hostile_queries_are_refused_or_answered(query: str, live: Live, client: httpx.Client) -> None:
    for lang in ("ADQL", "PostgreSQL"):
        response = client.post("/tap/sync", data={"REQUEST": "doQuery", "LANG": lang, "QUERY": query})
        check(response, live)
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("document", [XML_BOMB, STREAM_HREF, BAD_FIELD, "<VOTABLE", "\x00" * 100, ""])
def test_hostile_uploads_are_refused(document: str, live: Live, client: httpx.Client) -> None:
    response = client.post(
        "/tap/sync",
        data={
            "REQUEST": "doQuery",
            "LANG": "ADQL",
            "QUERY": "SELECT * FROM TAP_UPLOAD.t",
            "UPLOAD": "t,param:t",
        },
        files={"t": ("t.xml", document.encode(), "application/x-votable+xml")},
    )
    check(response, live)
    assert response.status_code == 400 or "pwned" not in response.text
    host = Path("/etc/hostname")
    if host.exists() and host.read_text().strip():
        assert host.read_text().strip() not in response.text


@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    part=st.sampled_from([*JOB_PARTS, *PATHS]),
    value=hostile_text,
    name=st.sampled_from(["PHASE", "EXECUTIONDURATION", "DESTRUCTION", "QUERY", "ACTION", "WAIT", "LANG"]),
)
def test_job_resources_answer_clearly(
    part: str, value: str, name: str, live: Live, client: httpx.Client
) -> None:
    created = client.post(
        "/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT TOP 1 * FROM cat.gaia"}
    )
    check(created, live)
    assert created.status_code == 303
    job = httpx.URL(created.headers["location"]).path
    for method in ("GET", "POST"):
        if method == "GET":
            response = client.get(f"{job}/{part}", params={name: value} if name == "WAIT" else {})
        else:
            response = client.post(f"{job}/{part}", data={name: value})
        check(response, live)
    check(client.get(job, params={"WAIT": value[:20]}), live)
    with contextlib.suppress(httpx.InvalidURL):  # the client itself refuses some paths
        check(client.get(f"/tap/async/{value[:200]}"), live)
    check(client.delete(job), live)


def test_nothing_stored_changed_and_the_server_still_answers(live: Live, client: httpx.Client) -> None:
    """Runs last in this module: the pass above must have left the database and the files as they were."""
    after = fingerprint(live)
    assert after == BEFORE
    response = client.get(
        "/tap/sync",
        params={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT COUNT(*) AS n FROM cat.gaia"},
    )
    assert response.status_code == 200 and "2411" in response.text
