"""Users, bearer tokens and job ownership over real HTTP (issue 11, item 4).

A live server on a migrated deployment; users and tokens made with `dms users`; pyvo through a requests
session carrying the token; another user, anonymous callers and bad tokens tried against every UWS resource.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
import pyvo
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from vo_support import LiveVO, live_vo_fixture  # noqa: F401 (the live_vo fixture)

from dms.cli import main
from dms.deployment import Deployment
from dms.services.auth import issue_token
from dms.services.gateway.server import background
from dms.services.vo.server import running_server

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

QUERY = "SELECT TOP 3 id FROM survey.obj ORDER BY id"


def dms(deployment: Deployment, *args: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def token_for(deployment: Deployment, name: str, *options: str) -> str:
    """A new token for `name` from `dms users token` (the first line of its output)."""
    return dms(deployment, "users", "token", name, *options).splitlines()[0].strip()


@pytest.fixture(scope="module")
def tokens(live_vo: LiveVO) -> dict[str, str]:
    dms(live_vo.deployment, "users", "add", "alice")
    dms(live_vo.deployment, "users", "add", "bob")
    return {"alice": token_for(live_vo.deployment, "alice"), "bob": token_for(live_vo.deployment, "bob")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(url: str, headers: dict[str, str] | None = None, **extra: str) -> str:
    response = httpx.post(
        f"{url}/tap/async", data={"LANG": "ADQL", "QUERY": QUERY, **extra}, headers=headers or {}
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def test_cli_prints_a_token_once_and_stores_only_its_hash(live_vo: LiveVO, tokens: dict[str, str]) -> None:
    listing = dms(live_vo.deployment, "users", "list")
    assert "alice" in listing and "bob" in listing and "anonymous access: allowed" in listing
    assert tokens["alice"] not in listing and tokens["alice"].startswith("dms_")
    with live_vo.deployment.engine().connect() as conn:
        rows = conn.execute(sa.text("SELECT token_id, token_hash, scopes FROM dms.access_token")).all()
        dump = conn.execute(sa.text("SELECT string_agg(t::text, '') FROM dms.access_token AS t")).scalar_one()
    assert tokens["alice"] not in dump  # the secret itself is nowhere in the database
    assert hashlib.sha256(tokens["alice"].encode()).hexdigest() in {r.token_hash for r in rows}
    assert all(r.token_id in listing for r in rows)
    bad = CliRunner().invoke(
        main, ["--data-dir", str(live_vo.deployment.data_dir), "users", "token", "nobody"]
    )
    assert bad.exit_code != 0 and "no user 'nobody'" in bad.output
    bad = CliRunner().invoke(
        main, ["--data-dir", str(live_vo.deployment.data_dir), "users", "token", "bob", "--scope", "root"]
    )
    assert bad.exit_code != 0 and "unknown scope root" in bad.output


def test_pyvo_session_with_a_token_owns_and_lists_its_jobs(live_vo: LiveVO, tokens: dict[str, str]) -> None:
    session = requests.Session()
    session.headers.update(bearer(tokens["alice"]))
    tap = pyvo.dal.TAPService(f"{live_vo.url}/tap", session=session)
    job = tap.submit_job(QUERY)
    job.run()
    job.wait(timeout=30)
    assert job.phase == "COMPLETED" and job.owner == "alice"
    assert job.fetch_result().to_table()["id"].tolist() == [1, 2, 3]
    assert job.job_id in {j.jobid for j in tap.get_job_list()}
    bobs = requests.Session()
    bobs.headers.update(bearer(tokens["bob"]))
    bob_tap = pyvo.dal.TAPService(f"{live_vo.url}/tap", session=bobs)
    assert job.job_id not in {j.jobid for j in bob_tap.get_job_list()}
    assert job.job_id not in httpx.get(f"{live_vo.url}/tap/async").text  # nor anonymously
    job.delete()


def test_another_user_can_neither_see_nor_change_a_job(live_vo: LiveVO, tokens: dict[str, str]) -> None:
    alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
    job_url = submit(live_vo.url, alice, RUNID="mine")
    original = httpx.get(job_url, headers=alice).text
    attempts: list[httpx.Response] = []
    for who in (bob, {}):  # another user, and an anonymous caller who guessed the URL
        attempts += [
            httpx.get(job_url, headers=who),
            httpx.get(job_url, params={"WAIT": "1"}, headers=who),
            httpx.get(f"{job_url}/phase", headers=who),
            httpx.get(f"{job_url}/parameters", headers=who),
            httpx.get(f"{job_url}/results/result", headers=who),
            httpx.post(f"{job_url}/parameters", data={"QUERY": "SELECT 1"}, headers=who),
            httpx.post(f"{job_url}/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"}, headers=who),
            httpx.post(f"{job_url}/executionduration", data={"EXECUTIONDURATION": "1"}, headers=who),
            httpx.post(f"{job_url}/phase", data={"PHASE": "ABORT"}, headers=who),
            httpx.post(f"{job_url}/phase", data={"PHASE": "RUN"}, headers=who),
            httpx.post(job_url, data={"ACTION": "DELETE"}, headers=who),
            httpx.delete(job_url, headers=who),
        ]
    assert [a.status_code for a in attempts] == [404] * len(attempts), [a.text for a in attempts]
    assert all("RUNID" not in a.text and "mine" not in a.text for a in attempts)
    # the owner's job is untouched: same document, still PENDING, same query and destruction time
    assert httpx.get(job_url, headers=alice).text == original
    httpx.post(f"{job_url}/phase", data={"PHASE": "RUN"}, headers=alice)
    done = httpx.get(job_url, params={"WAIT": "20", "PHASE": "QUEUED"}, headers=alice)
    done = httpx.get(job_url, params={"WAIT": "20", "PHASE": "EXECUTING"}, headers=alice)
    assert "<uws:phase>COMPLETED</uws:phase>" in done.text and "<uws:ownerId>alice</uws:ownerId>" in done.text
    assert httpx.delete(job_url, headers=alice).status_code == 303


def test_anonymous_jobs_are_reachable_by_url_and_never_listed(
    live_vo: LiveVO, tokens: dict[str, str]
) -> None:
    job_url = submit(live_vo.url)
    job_id = job_url.rsplit("/", 1)[1]
    assert len(job_id) == 32  # 128 random bits
    owner = ElementTree.fromstring(httpx.get(job_url).content).find(f"{{{UWS}}}ownerId")
    assert owner is not None and owner.get(f"{{{XSI}}}nil") == "true" and not (owner.text or "").strip()
    assert job_id not in httpx.get(f"{live_vo.url}/tap/async").text
    assert job_id not in httpx.get(f"{live_vo.url}/tap/async", headers=bearer(tokens["alice"])).text
    assert httpx.get(f"{live_vo.url}/tap/async/{'0' * 32}").status_code == 404
    assert httpx.delete(job_url).status_code == 303


def test_a_past_destruction_is_clamped_to_now(live_vo: LiveVO, tokens: dict[str, str]) -> None:
    alice = bearer(tokens["alice"])
    job_url = submit(live_vo.url, alice)
    before = datetime.now(UTC).replace(microsecond=0)
    posted = httpx.post(f"{job_url}/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"}, headers=alice)
    assert posted.status_code == 303
    shown = httpx.get(f"{job_url}/destruction", headers=alice)
    if shown.status_code == 200:  # not yet swept
        when = datetime.fromisoformat(shown.text.replace("Z", "+00:00"))
        assert when >= before - timedelta(seconds=1)
    far = httpx.post(
        f"{submit(live_vo.url, alice)}/destruction", data={"DESTRUCTION": "2999-01-01T00:00:00Z"}
    )
    assert far.status_code == 404  # without the token, alice's job is not there


def test_bad_tokens_get_401_with_a_challenge_on_every_service(
    live_vo: LiveVO, tokens: dict[str, str]
) -> None:
    with live_vo.deployment.connect() as conn:
        _, expired = issue_token(conn, "bob", expires=datetime.now(UTC) - timedelta(minutes=1))
        conn.commit()
    revoked = token_for(live_vo.deployment, "bob")
    assert "revoked 1 token" in dms(live_vo.deployment, "users", "revoke", _token_id(live_vo, revoked))
    urls = [
        f"{live_vo.url}/tap/sync?LANG=ADQL&QUERY=SELECT+TOP+1+id+FROM+survey.obj",
        f"{live_vo.url}/tap/async",
        f"{live_vo.url}/sia/query?POS=CIRCLE+10+20+1",
        f"{live_vo.url}/datalink?ID=ivo://dms.example/image?0",
        f"{live_vo.url}/scs/survey.obj?RA=10&DEC=20&SR=0.1",
    ]
    cases = {
        "dms_not-a-token": "not known",
        expired: "expired",
        revoked: "revoked",
    }
    for url in urls:
        good = httpx.get(url, headers=bearer(tokens["alice"]))
        assert good.status_code == 200, (url, good.text)
        for token, message in cases.items():
            refused = httpx.get(url, headers=bearer(token))
            assert refused.status_code == 401, (url, refused.text)
            assert message in refused.text and 'error="invalid_token"' in refused.headers["www-authenticate"]
            assert refused.headers["www-authenticate"].startswith("Bearer ")
        basic = httpx.get(url, headers={"Authorization": "Basic YTpi"})
        assert basic.status_code == 401 and "Bearer TOKEN" in basic.text


def _token_id(vo: LiveVO, token: str) -> str:
    with vo.deployment.engine().connect() as conn:
        return str(
            conn.execute(
                sa.text("SELECT token_id FROM dms.access_token WHERE token_hash = :h"),
                {"h": hashlib.sha256(token.encode()).hexdigest()},
            ).scalar_one()
        )


def test_revoking_a_user_revokes_all_their_tokens(live_vo: LiveVO) -> None:
    dms(live_vo.deployment, "users", "add", "carol")
    first, second = token_for(live_vo.deployment, "carol"), token_for(live_vo.deployment, "carol")
    url = f"{live_vo.url}/tap/async"
    assert httpx.get(url, headers=bearer(first)).status_code == 200
    assert "revoked 2 tokens" in dms(live_vo.deployment, "users", "revoke", "carol")
    assert [httpx.get(url, headers=bearer(t)).status_code for t in (first, second)] == [401, 401]


def test_a_token_works_only_for_its_scopes(live_vo: LiveVO) -> None:
    token = token_for(live_vo.deployment, "alice", "--scope", "sia", "--expires", "1h")
    assert httpx.get(f"{live_vo.url}/sia/query?POS=CIRCLE+10+20+1", headers=bearer(token)).status_code == 200
    refused = httpx.get(f"{live_vo.url}/tap/async", headers=bearer(token))
    assert refused.status_code == 403 and "not tap" in refused.text
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]


@pytest.fixture()
def closed_deployment(live_vo: LiveVO) -> Iterator[str]:
    """The same deployment served with anonymous access turned off (`dms users anonymous deny`)."""
    dms(live_vo.deployment, "users", "anonymous", "deny")
    try:
        closed = Deployment.open(live_vo.deployment.data_dir)
        assert closed.config.anonymous_access is False
        with running_server(closed) as url:
            yield url
        closed.dispose()
    finally:
        dms(live_vo.deployment, "users", "anonymous", "allow")


def test_a_deployment_can_refuse_anonymous_access(closed_deployment: str, tokens: dict[str, str]) -> None:
    sync = f"{closed_deployment}/tap/sync?LANG=ADQL&QUERY=SELECT+TOP+1+id+FROM+survey.obj"
    anonymous = httpx.get(sync)
    assert anonymous.status_code == 401 and "needs a token" in anonymous.text
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="DMS"'
    assert httpx.post(f"{closed_deployment}/tap/async", data={"QUERY": QUERY}).status_code == 401
    assert httpx.get(f"{closed_deployment}/tap/availability").status_code == 200  # VOSI stays open
    assert httpx.get(f"{closed_deployment}/tap/capabilities").status_code == 200
    assert httpx.get(sync, headers=bearer(tokens["alice"])).status_code == 200


def test_the_gateway_checks_bearer_tokens(live_vo: LiveVO, tokens: dict[str, str]) -> None:
    conninfo = live_vo.deployment.control_url().set(drivername="postgresql").render_as_string(False)
    with background(conninfo) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        refused = httpx.get(f"{url}/events", headers=bearer("dms_wrong"))
        assert refused.status_code == 401 and "not known" in refused.text
        with httpx.stream("GET", f"{url}/events", headers=bearer(tokens["bob"]), timeout=10) as stream:
            assert stream.status_code == 200
            assert next(stream.iter_lines()).startswith(": dms telemetry gateway")
    with background(conninfo, allow_anonymous=False) as url:
        assert httpx.get(f"{url}/events").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200


def test_init_can_refuse_anonymous_access(tmp_path: Path, pg_database: str) -> None:
    result = CliRunner().invoke(
        main, ["--data-dir", str(tmp_path / "dep"), "init", "--database-url", pg_database, "--no-anonymous"]
    )
    assert result.exit_code == 0, result.output
    assert Deployment.open(tmp_path / "dep").config.anonymous_access is False
    assert "anonymous_access: false" in (tmp_path / "dep" / "deployment.yaml").read_text()
