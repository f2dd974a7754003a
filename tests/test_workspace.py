"""Science Platform back end over real HTTP (issue 18): instances and released data, groups, personal
workspaces, shares and quotas, portal sessions; every refusal checked for its status, its message and that
nothing changed. A live server on a migrated deployment with a partitioned Gaia sample (vo_meta_support)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
from astropy.table import Table
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_upload_crossmatch import ADQL, astropy_pairs, make_upload
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)

from dms.cli import main
from dms.deployment import Deployment
from dms.loaders.samples import hipparcos_table
from dms.services.auth import issue_token
from dms.services.workspace.visibility import CACHE_SECONDS
from tests.hypothesis_profiles import examples

TIMEOUT = 120


def dms(deployment: Deployment, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csv_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


def hipparcos(rows: int) -> pa.Table:
    hip = hipparcos_table()
    keep = [c for c in ("hip", "ra", "dec", "hpmag") if c in hip.column_names]
    return hip.select(keep).slice(0, rows)


@pytest.fixture(scope="module")
def tokens(meta_vo: MetaVO) -> dict[str, str]:
    deployment = meta_vo.deployment
    for name in ("alice", "bob", "carol"):
        dms(deployment, "users", "add", name)
    found = {
        name: dms(deployment, "users", "token", name).splitlines()[0] for name in ("alice", "bob", "carol")
    }
    with deployment.connect() as conn:
        found["alice_tap_only"] = issue_token(conn, "alice", ["tap"])[1]
        found["alice_unreleased"] = issue_token(conn, "alice", ["tap", "workspace", "unreleased"])[1]
        found["expired"] = issue_token(conn, "alice", expires=datetime.now(UTC) - timedelta(minutes=1))[1]
        conn.commit()
    return found


def tap(url: str, query: str, token: str | None = None, **extra: str) -> httpx.Response:
    return httpx.post(
        f"{url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": query, "FORMAT": "votable", **extra},
        headers=bearer(token) if token else {},
        timeout=TIMEOUT,
    )


def rows(response: httpx.Response) -> Table:
    assert response.status_code == 200, response.text
    return Table.read(io.BytesIO(response.content), format="votable")


def upload(url: str, token: str, name: str, content: bytes, filename: str = "t.csv") -> httpx.Response:
    return httpx.post(
        f"{url}/api/workspace/tables",
        data={"name": name},
        files={"file": (filename, content)},
        headers=bearer(token),
        timeout=TIMEOUT,
    )


def listed(url: str, token: str) -> set[str]:
    """The tables TAP_SCHEMA lists to the token's user."""
    table = rows(tap(url, "SELECT table_name FROM TAP_SCHEMA.tables", token))
    return {str(n).lower() for n in table["table_name"]}


def pg_tables(deployment: Deployment, schema: str) -> set[str]:
    with deployment.engine().connect() as conn:
        return set(
            conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
            ).scalars()
        )


@pytest.fixture
def cleanup(meta_vo: MetaVO) -> Iterator[None]:
    yield
    with meta_vo.deployment.engine().connect() as conn:
        owned = conn.execute(sa.text("SELECT owner, table_name FROM dms.workspace_table")).all()
    for owner, name in owned:
        dms(meta_vo.deployment, "workspace", "drop", name, "--user", owner)


# ---- workspaces ------------------------------------------------------------------------------------------


def test_upload_query_and_join_with_the_partitioned_catalog(
    meta_vo: MetaVO, tokens: dict[str, str], cleanup: None
) -> None:
    url, alice = meta_vo.url, tokens["alice"]
    hip = hipparcos(500)
    response = upload(url, alice, "hip", csv_bytes(hip), "hip.csv")
    assert response.status_code == 201, response.text
    assert response.json()["qualified_name"] == "user_alice.hip" and response.json()["rows"] == 500
    got = rows(tap(url, "SELECT hip, ra, dec FROM user_alice.hip ORDER BY hip", alice))
    order = np.argsort(hip["hip"].to_numpy())
    assert got["hip"].tolist() == hip["hip"].to_numpy()[order].tolist()
    assert np.allclose(got["ra"], hip["ra"].to_numpy()[order], rtol=0, atol=1e-12)
    assert "user_alice.hip" in listed(url, alice)
    # a workspace table joins the partitioned catalog as a TAP upload does: compare with astropy
    near = make_upload(meta_vo.gaia, 400, seed=9)
    assert upload(url, alice, "near", csv_bytes(near), "near.csv").status_code == 201
    query = ADQL.replace("TAP_UPLOAD.t", "user_alice.near")
    got = rows(tap(url, query, alice, MAXREC="100000"))
    pairs = sorted(zip(got["k"].tolist(), got["source_id"].tolist(), strict=True))
    assert pairs == sorted(astropy_pairs(near, meta_vo.gaia)) and pairs


def test_nobody_reads_another_users_private_table(
    meta_vo: MetaVO, tokens: dict[str, str], cleanup: None
) -> None:
    url, deployment = meta_vo.url, meta_vo.deployment
    assert upload(url, tokens["alice"], "secret", csv_bytes(hipparcos(20))).status_code == 201
    query = "SELECT * FROM user_alice.secret"
    for token in (tokens["bob"], None):
        response = tap(url, query, token)
        assert response.status_code == 400 and "unknown table user_alice.secret" in response.text
        assert "user_alice.secret" not in listed(url, token) if token else True
    # hiding is the same as not existing: nothing to probe
    missing = tap(url, "SELECT * FROM user_alice.nothing", tokens["bob"])
    assert missing.status_code == 400 and "unknown table user_alice.nothing" in missing.text
    tables = httpx.get(f"{url}/tap/tables", headers=bearer(tokens["bob"]), timeout=TIMEOUT)
    assert tables.status_code == 200 and "user_alice" not in tables.text
    assert "user_alice.secret" in httpx.get(f"{url}/tap/tables", headers=bearer(tokens["alice"])).text
    one = httpx.get(f"{url}/tap/tables/user_alice.secret", headers=bearer(tokens["bob"]))
    assert one.status_code == 404
    # a TAP_SCHEMA query of the columns, an async job, the JSON API, dms query: refused alike
    columns = rows(
        tap(
            url,
            "SELECT column_name FROM TAP_SCHEMA.columns WHERE table_name = 'user_alice.secret'",
            tokens["bob"],
        )
    )
    assert len(columns) == 0
    job = httpx.post(
        f"{url}/tap/async",
        data={"LANG": "ADQL", "QUERY": query, "PHASE": "RUN"},
        headers=bearer(tokens["bob"]),
        follow_redirects=True,
    )
    done = httpx.get(f"{job.url}?WAIT=30", headers=bearer(tokens["bob"]), timeout=TIMEOUT)
    assert "ERROR" in done.text and "unknown table user_alice.secret" in done.text
    api = httpx.get(f"{url}/api/workspace/tables/secret", headers=bearer(tokens["bob"]))
    assert api.status_code == 404 and "no table 'secret'" in api.json()["error"]
    dropped = httpx.delete(f"{url}/api/workspace/tables/secret", headers=bearer(tokens["bob"]))
    assert dropped.status_code == 404
    output = dms(deployment, "query", "--user", "bob", "--lang", "adql", query, ok=False)
    assert "unknown table user_alice.secret" in output
    assert "secret" in pg_tables(deployment, "user_alice")  # nothing changed
    assert len(rows(tap(url, query, tokens["alice"]))) == 20


def test_share_with_a_user_and_a_group_then_unshare(
    meta_vo: MetaVO, tokens: dict[str, str], cleanup: None
) -> None:
    url, deployment = meta_vo.url, meta_vo.deployment
    hip = hipparcos(30)
    assert upload(url, tokens["alice"], "shared", csv_bytes(hip)).status_code == 201
    query = "SELECT count(*) AS n FROM user_alice.shared"
    shares = f"{url}/api/workspace/tables/shared/shares"
    made = httpx.post(shares, json={"user": "bob"}, headers=bearer(tokens["alice"]))
    assert made.status_code == 201, made.text
    assert rows(tap(url, query, tokens["bob"]))["n"][0] == 30
    assert "user_alice.shared" in listed(url, tokens["bob"])
    assert tap(url, query, tokens["carol"]).status_code == 400
    # read-only: bob can neither drop it nor share it on
    assert (
        httpx.delete(f"{url}/api/workspace/tables/shared", headers=bearer(tokens["bob"])).status_code == 404
    )
    on = httpx.post(shares, json={"user": "carol"}, headers=bearer(tokens["bob"]))
    assert on.status_code == 404
    mine = httpx.get(f"{url}/api/workspace/tables", headers=bearer(tokens["bob"])).json()
    assert [t["qualified_name"] for t in mine["shared_with_me"]] == ["user_alice.shared"]
    gone = httpx.delete(f"{shares}/user/bob", headers=bearer(tokens["alice"]))
    assert gone.status_code == 200
    assert tap(url, query, tokens["bob"]).status_code == 400
    # a group: carol reads it while she is a member
    dms(deployment, "users", "group", "create", "survey-team")
    dms(deployment, "users", "group", "add", "survey-team", "carol")
    assert "survey-team: carol" in dms(deployment, "users", "group", "list")
    dms(deployment, "workspace", "share", "shared", "--with-group", "survey-team", "--user", "alice")
    assert rows(tap(url, query, tokens["carol"]))["n"][0] == 30
    assert tap(url, query, tokens["bob"]).status_code == 400
    dms(deployment, "users", "group", "remove", "survey-team", "carol")
    assert tap(url, query, tokens["carol"]).status_code == 400
    assert "group survey-team" in dms(deployment, "workspace", "list", "--user", "alice")


def test_save_a_query_result_as_a_table(meta_vo: MetaVO, tokens: dict[str, str], cleanup: None) -> None:
    url, deployment = meta_vo.url, meta_vo.deployment
    query = "SELECT TOP 50 source_id, ra, dec FROM cat.gaia WHERE dec > 60 ORDER BY source_id"
    saved = httpx.post(
        f"{url}/api/workspace/results",
        json={"name": "north", "query": query},
        headers=bearer(tokens["alice"]),
        timeout=TIMEOUT,
    )
    assert saved.status_code == 201, saved.text
    got = rows(tap(url, "SELECT source_id FROM user_alice.north ORDER BY source_id", tokens["alice"]))
    gaia = meta_vo.gaia
    ids = np.sort(gaia["source_id"].to_numpy()[gaia["dec"].to_numpy() > 60])[:50]
    assert got["source_id"].tolist() == ids.tolist()
    # the same from the command line, and dms query as the owner
    dms(deployment, "workspace", "save", "north2", query, "--user", "alice")
    output = dms(
        deployment,
        "query",
        "--user",
        "alice",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM user_alice.north2",
    )
    assert output.strip().splitlines()[-1] == "50"


# ---- bad input ---------------------------------------------------------------------------------------


def test_over_quota_upload_is_refused_and_nothing_is_stored(
    meta_vo: MetaVO, tokens: dict[str, str], cleanup: None
) -> None:
    url, deployment = meta_vo.url, meta_vo.deployment
    dms(deployment, "workspace", "quota", "--user", "bob", "--rows", "100")
    try:
        assert upload(url, tokens["bob"], "small", csv_bytes(hipparcos(60))).status_code == 201
        over = upload(url, tokens["bob"], "big", csv_bytes(hipparcos(60)))
        assert over.status_code == 413 and "100 rows" in over.json()["error"]
        dms(deployment, "workspace", "quota", "--user", "bob", "--bytes", "1000")
        over = upload(url, tokens["bob"], "big", csv_bytes(hipparcos(10)))
        assert over.status_code == 413 and "bytes" in over.json()["error"]
        assert pg_tables(deployment, "user_bob") == {"small"}
        listing = httpx.get(f"{url}/api/workspace/tables", headers=bearer(tokens["bob"])).json()
        assert [t["name"] for t in listing["tables"]] == ["small"]
    finally:
        dms(deployment, "workspace", "quota", "--user", "bob")


@pytest.mark.parametrize(
    ("name", "content", "status", "message"),
    [
        ('x"; DROP TABLE dms.job; --', b"a\n1\n", 400, "table name"),
        ("pg_catalog", b"a\n1\n", 400, "table name"),
        ("t" * 64, b"a\n1\n", 400, "table name"),
        ("ok", b'"a b";c\n1;2\n', 400, "column name"),
        ("ok", b"A,a\n1,2\n", 400, "appears twice"),
        ("ok", b"ctid\n1\n", 400, "column name"),
    ],
)
def test_hostile_names_are_refused(
    meta_vo: MetaVO, tokens: dict[str, str], name: str, content: bytes, status: int, message: str
) -> None:
    response = upload(meta_vo.url, tokens["carol"], name, content)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert pg_tables(meta_vo.deployment, "user_carol") == set()


def test_colliding_corrupt_and_unknown_share(meta_vo: MetaVO, tokens: dict[str, str], cleanup: None) -> None:
    url, alice = meta_vo.url, tokens["alice"]
    assert upload(url, alice, "t1", csv_bytes(hipparcos(5))).status_code == 201
    again = upload(url, alice, "T1", csv_bytes(hipparcos(7)))
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    assert len(rows(tap(url, "SELECT * FROM user_alice.t1", alice))) == 5  # nothing lost
    corrupt = upload(url, alice, "bad", b"PAR1 not really parquet", "bad.parquet")
    assert corrupt.status_code == 400 and "bad.parquet" in corrupt.json()["error"]
    assert "/tmp" not in corrupt.json()["error"]
    unknown = httpx.post(
        f"{url}/api/workspace/tables/t1/shares", json={"user": "mallory"}, headers=bearer(alice)
    )
    assert unknown.status_code == 404 and "no user 'mallory'" in unknown.json()["error"]
    group = httpx.post(f"{url}/api/workspace/tables/t1/shares", json={"group": "nope"}, headers=bearer(alice))
    assert group.status_code == 404 and "no group 'nope'" in group.json()["error"]
    both = httpx.post(f"{url}/api/workspace/tables/t1/shares", json={}, headers=bearer(alice))
    assert both.status_code == 400
    with meta_vo.deployment.engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dms.workspace_share")).scalar_one() == 0
    bad_json = httpx.post(
        f"{url}/api/workspace/tables/t1/shares",
        content=b"{not json",
        headers={**bearer(alice), "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]


# ---- credentials -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "needs a token"),
        ({"Authorization": "Bearer dms_wrong"}, 401, "not known"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, 401, "Bearer TOKEN"),
        ({"Authorization": "Bearer"}, 401, "Bearer TOKEN"),
    ],
)
def test_api_refuses_missing_and_malformed_tokens(
    meta_vo: MetaVO, tokens: dict[str, str], headers: dict[str, str], status: int, message: str
) -> None:
    for method, path in (("GET", "/api/workspace/tables"), ("POST", "/api/workspace/results")):
        response = httpx.request(method, f"{meta_vo.url}{path}", headers=headers, json={"query": "SELECT 1"})
        assert response.status_code == status and message in response.json()["error"], response.text


def test_expired_and_scopeless_tokens(meta_vo: MetaVO, tokens: dict[str, str]) -> None:
    url = meta_vo.url
    expired = httpx.get(f"{url}/api/workspace/tables", headers=bearer(tokens["expired"]))
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    scopeless = upload(url, tokens["alice_tap_only"], "x", b"a\n1\n")
    assert scopeless.status_code == 403 and "not workspace" in scopeless.json()["error"]
    assert "x" not in pg_tables(meta_vo.deployment, "user_alice")
    who = httpx.get(f"{url}/api/whoami", headers=bearer(tokens["alice_tap_only"])).json()
    assert who["user"] == "alice" and who["scopes"] == ["tap"]


def test_login_session_cookie_and_logout(meta_vo: MetaVO, tokens: dict[str, str]) -> None:
    url = meta_vo.url
    with httpx.Client(base_url=url) as browser:
        assert browser.get("/api/whoami").json()["user"] is None
        bad = browser.post("/api/login", json={"token": "dms_wrong"})
        assert bad.status_code == 401 and "dms_session" not in browser.cookies
        login = browser.post("/api/login", json={"token": tokens["alice"]})
        assert login.status_code == 200 and login.json()["user"] == "alice"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert tokens["alice"] not in login.headers["set-cookie"]
        assert browser.get("/api/whoami").json()["user"] == "alice"
        assert browser.get("/api/workspace/tables").status_code == 200
        session = browser.cookies["dms_session"]
        assert browser.post("/api/logout").status_code == 200
    ended = httpx.get(f"{url}/api/workspace/tables", cookies={"dms_session": session})
    assert ended.status_code == 401 and "session has ended" in ended.json()["error"]


def test_tokens_are_never_logged(
    meta_vo: MetaVO, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url, token = meta_vo.url, tokens["carol"]
    upload(url, token, "logged", csv_bytes(hipparcos(3)))
    tap(url, "SELECT * FROM user_carol.logged", token)
    tap(url, "SELECT * FROM no.such", token)
    httpx.post(f"{url}/api/login", json={"token": token})
    httpx.get(f"{url}/api/workspace/tables", headers=bearer(token + "x"))
    dms(meta_vo.deployment, "workspace", "drop", "logged", "--user", "carol")
    assert caplog.records and token not in caplog.text and token[4:20] not in caplog.text


# ---- instances and released data ------------------------------------------------------------------------


def test_unreleased_data_on_the_dac_and_on_qa(meta_vo: MetaVO, tokens: dict[str, str]) -> None:
    url, deployment = meta_vo.url, meta_vo.deployment
    query = "SELECT count(*) AS n FROM survey.obj"
    catalog = "SELECT count(*) AS n FROM cat.gaia"
    # IN_UNIT needs the columns' units, which only the engine knows: the visibility check still sees the table
    in_unit = "SELECT count(*) AS n FROM cat.gaia WHERE IN_UNIT(dec, 'arcsec') > -324000"
    dms(deployment, "release", "set", "survey", "unreleased")
    dms(deployment, "release", "set", "cat.gaia", "unreleased")
    try:
        assert "survey: unreleased" in dms(deployment, "release", "list")
        for token in (tokens["alice"], tokens["alice_unreleased"], None):
            for text, name in ((query, "survey.obj"), (catalog, "cat.gaia"), (in_unit, "cat.gaia")):
                response = tap(url, text, token)
                assert response.status_code == 400 and f"unknown table {name}" in response.text
        assert "survey.obj" not in listed(url, tokens["alice_unreleased"])  # the DAC never shows it
        assert "survey.obj" not in httpx.get(f"{url}/tap/tables", headers=bearer(tokens["alice"])).text
        assert "unknown table" in dms(
            deployment, "query", "--user", "alice", "--lang", "adql", query, ok=False
        )
        deployment.config.instance = "qa"  # the running server reads its config object per request
        try:
            assert rows(tap(url, query, tokens["alice_unreleased"]))["n"][0] == 3000
            assert rows(tap(url, catalog, tokens["alice_unreleased"]))["n"][0] == meta_vo.gaia.num_rows
            assert "survey.obj" in listed(url, tokens["alice_unreleased"])
            assert tap(url, query, tokens["alice"]).status_code == 400  # no unreleased scope
            assert tap(url, query).status_code == 400
            who = httpx.get(f"{url}/api/whoami", headers=bearer(tokens["alice_unreleased"])).json()
            assert who["instance"] == "qa" and who["unreleased"] is True
        finally:
            deployment.config.instance = "dac"
        # a table marked released inside an unreleased schema is visible again
        dms(deployment, "release", "set", "survey.obj", "released")
        assert rows(tap(url, query, tokens["alice"]))["n"][0] == 3000
    finally:
        dms(deployment, "release", "set", "survey", "released")
        dms(deployment, "release", "set", "cat.gaia", "released")
    assert rows(tap(url, catalog, tokens["alice"]))["n"][0] == meta_vo.gaia.num_rows
    assert rows(tap(url, in_unit, tokens["alice"]))["n"][0] == meta_vo.gaia.num_rows


def test_a_known_query_shape_is_still_checked_against_the_release_state(
    meta_vo: MetaVO, tokens: dict[str, str]
) -> None:
    """The tables a query of a known shape names are remembered, never whether the viewer may read them:
    cones of one shape over cat.gaia are refused once it is unreleased and answered once it is released."""
    url, deployment = meta_vo.url, meta_vo.deployment

    def cone(ra: float) -> str:
        return (
            "SELECT TOP 5 ra, dec FROM cat.gaia WHERE "
            f"CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.3f}, 20.000, 2.0)) = 1"
        )

    for ra in (10.0, 11.0):
        assert tap(url, cone(ra), tokens["alice"]).status_code == 200
    dms(deployment, "release", "set", "cat.gaia", "unreleased")
    try:
        time.sleep(CACHE_SECONDS)  # another process changed it: this server's brief cache runs out
        for ra in (12.0, 13.0):
            refused = tap(url, cone(ra), tokens["alice"])
            assert refused.status_code == 400 and "unknown table cat.gaia" in refused.text
    finally:
        dms(deployment, "release", "set", "cat.gaia", "released")
    time.sleep(CACHE_SECONDS)
    assert tap(url, cone(14.0), tokens["alice"]).status_code == 200


# ---- hostile input over the whole API --------------------------------------------------------------------

HOSTILE = st.one_of(
    st.sampled_from(
        [
            "'; DROP TABLE dms.workspace; --",
            '" OR 1=1 --',
            "../../etc/passwd",
            "\x00",
            "user_alice.secret",
            "SELECT * FROM dms.access_token",
            "pg_sleep(10)",
            "%s%s%s",
            "<script>alert(1)</script>",
        ]
    ),
    st.text(max_size=30),
    st.text(min_size=1, max_size=4).map(lambda s: s * 300),
)
API_CALLS = [
    ("POST", "/api/login", ["token"]),
    ("GET", "/api/whoami", []),
    ("GET", "/api/workspace/tables/{x}", []),
    ("DELETE", "/api/workspace/tables/{x}", []),
    ("POST", "/api/workspace/tables/{x}/shares", ["user", "group"]),
    ("DELETE", "/api/workspace/tables/{x}/shares/user/{x}", []),
    ("POST", "/api/workspace/results", ["name", "query", "lang"]),
]


def _state(deployment: Deployment) -> tuple[object, ...]:
    with deployment.engine().connect() as conn:
        return tuple(
            tuple(conn.execute(sa.text(q)).all())
            for q in (
                "SELECT owner, table_name, row_count FROM dms.workspace_table ORDER BY 1, 2",
                "SELECT * FROM dms.workspace_share ORDER BY 1, 2, 3, 4",
                "SELECT token_id, revoked_at FROM dms.access_token ORDER BY 1",
            )
        )


@settings(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_hostile_api_input_answers_clearly_and_changes_nothing(
    data: st.DataObject, meta_vo: MetaVO, tokens: dict[str, str]
) -> None:
    method, template, fields = data.draw(st.sampled_from(API_CALLS), label="call")
    value = data.draw(HOSTILE, label="value")
    path = template.replace("{x}", quote(value, safe="") or "x")
    body = {f: data.draw(HOSTILE, label=f) for f in fields if data.draw(st.booleans(), label=f"with {f}")}
    before = _state(meta_vo.deployment)
    response = httpx.request(
        method, f"{meta_vo.url}{path}", json=body or None, headers=bearer(tokens["carol"]), timeout=TIMEOUT
    )
    assert response.status_code < 500, (path, body, response.text[:300])
    assert "Traceback" not in response.text and str(meta_vo.deployment.data_dir) not in response.text
    if response.status_code >= 400:
        assert response.json()["error"]
    if method != "POST" or template != "/api/workspace/results" or response.status_code >= 400:
        assert _state(meta_vo.deployment) == before


def test_async_jobs_run_with_their_owners_rights(
    meta_vo: MetaVO, tokens: dict[str, str], cleanup: None
) -> None:
    url, alice = meta_vo.url, tokens["alice"]
    assert upload(url, alice, "jobbed", csv_bytes(hipparcos(7))).status_code == 201
    job = httpx.post(
        f"{url}/tap/async",
        data={"LANG": "ADQL", "QUERY": "SELECT hip FROM user_alice.jobbed", "PHASE": "RUN"},
        headers=bearer(alice),
        follow_redirects=True,
    )
    done = httpx.get(f"{job.url}?WAIT=60", headers=bearer(alice), timeout=TIMEOUT)
    assert "COMPLETED" in done.text, done.text
    result = httpx.get(f"{job.url}/results/result", headers=bearer(alice), timeout=TIMEOUT)
    got = rows(result)
    assert sorted(got["hip"].tolist()) == sorted(hipparcos(7)["hip"].to_pylist())
    # the session cookie of the portal works on TAP too
    with httpx.Client(base_url=url) as browser:
        assert browser.post("/api/login", json={"token": alice}).status_code == 200
        response = browser.post(
            "/tap/sync", data={"LANG": "ADQL", "QUERY": "SELECT count(*) AS n FROM user_alice.jobbed"}
        )
        assert rows(response)["n"][0] == 7
