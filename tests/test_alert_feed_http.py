"""`dms alerts serve` on a real PostgreSQL log and a real HTTP server: a token-authenticated consumer
streams, commits, is cut mid-stream and resumes, the server restarts and nothing is lost; archived packets
come back by id byte for byte; the archive answers TAP (ADQL, as dms_reader) and `dms query`; bad tokens,
topics and offsets get JSON errors naming them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import astropy.units as u
import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from click.testing import CliRunner
from feed_support import running_feed, visit_alerts

from dms.cli import main
from dms.deployment import Deployment
from dms.services.alerts.archive import archive_batch
from dms.services.alerts.feed import FeedConfig, FeedError, open_feed
from dms.services.alerts.feed.client import HttpConsumer
from dms.services.alerts.feed.http import AVRO, create_app
from dms.services.auth import add_user, issue_token
from dms.services.backbone import Backbone
from dms.services.vo.server import prepare, running_server

pytest_plugins = ["backbone_support", "feed_support"]


def _token(deployment: Deployment, *scopes: str) -> str:
    with deployment.engine().begin() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM dms.user_account WHERE name = 'broker1'")).first():
            add_user(conn, "broker1")
        _, token = issue_token(conn, "broker1", scopes or ("alerts",))
    return token


def _app(deployment: Deployment, feed_url: str):  # type: ignore[no-untyped-def]
    return create_app(deployment, FeedConfig(database_url=feed_url), allow_anonymous=False)


def test_a_consumer_cut_mid_stream_and_a_server_restart_lose_nothing(
    deployment: Deployment, feed_config: FeedConfig
) -> None:
    """On both transports behind the server: the PostgreSQL log and NATS JetStream."""
    sources, packets = visit_alerts(21, 70_000)
    app = lambda: create_app(deployment, feed_config, allow_anonymous=False)  # noqa: E731
    with open_feed(feed_config) as feed:
        feed.create_topic("alerts", partitions=2)
        feed.publish_visit("alerts", sources["diaSourceId"].tolist(), packets)
    token = _token(deployment)
    handled: list[int] = []
    with running_feed(app()) as url:
        client = HttpConsumer(url, token)
        first = list(client.stream("alerts", "b1", max_messages=80, wait=1))
        client.commit("alerts", "b1", first)
        handled += [int(m.key) for m in first]
        cut = []
        for m in client.stream("alerts", "b1", wait=1):  # read 30 more, then drop the connection
            cut.append(int(m.key))
            if len(cut) == 30:
                break
        client.close()
    with running_feed(app()) as url:  # a new server on the same log
        client = HttpConsumer(url, token)
        rest = list(client.stream("alerts", "b1", wait=1))
        committed = client.commit("alerts", "b1", rest)
        client.close()
    rest_keys = [int(m.key) for m in rest]
    assert set(cut) <= set(rest_keys) and not set(rest_keys) & set(handled)
    assert sorted(handled + rest_keys) == sorted(sources["diaSourceId"])
    assert {m.value for m in first + rest} == set(packets)
    with open_feed(feed_config) as feed:
        assert committed == feed.committed("alerts", "b1")


def test_archived_packets_by_id_and_archive_search(deployment: Deployment, feed_url: str) -> None:
    sources, packets = visit_alerts(22, 80_000)
    archive_batch(Backbone(deployment), 22, 42, sources, packets)
    headers = {"Authorization": f"Bearer {_token(deployment)}"}
    with running_feed(_app(deployment, feed_url)) as url:
        for k in (0, 57, 199):
            got = httpx.get(f"{url}/alerts/{int(sources['diaSourceId'].iloc[k])}", headers=headers)
            assert got.status_code == 200 and got.headers["content-type"] == AVRO
            assert got.content == packets[k] and got.headers["x-alert-schema-id"] == "1101"
        missing = httpx.get(f"{url}/alerts/5", headers=headers)
        assert missing.status_code == 404 and "no alert 5 in the archive" in missing.json()["error"]
        assert httpx.get(f"{url}/alerts/abc", headers=headers).status_code == 400
        found = httpx.get(f"{url}/alerts", params={"ra": 150.2, "dec": 2.1, "radius": 0.4}, headers=headers)
        half = httpx.get(f"{url}/alerts", params={"ra": 150.2, "dec": 2.1}, headers=headers)
    coords = SkyCoord(sources["ra"].to_numpy() * u.deg, sources["dec"].to_numpy() * u.deg)
    inside = coords.separation(SkyCoord(150.2 * u.deg, 2.1 * u.deg)) <= 0.4 * u.deg
    assert sorted(r["alert_id"] for r in found.json()) == sorted(sources["diaSourceId"][inside])
    assert inside.sum() > 0
    assert half.status_code == 400 and "ra, dec and radius" in half.json()["error"]


def test_the_archive_answers_tap_and_dms_query(deployment: Deployment) -> None:
    sources, packets = visit_alerts(23, 90_000)
    archive_batch(Backbone(deployment), 23, 42, sources, packets)
    prepare(deployment)  # TAP_SCHEMA
    one = int(sources["diaObjectId"].iloc[3])
    adql = f"SELECT alert_id, ra, dec FROM alerts.alert WHERE dia_object_id = {one}"
    with running_server(deployment) as url:
        tables = httpx.get(f"{url}/tap/tables").text
        answer = httpx.get(
            f"{url}/tap/sync", params={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql, "FORMAT": "csv"}
        )
        cone = httpx.get(
            f"{url}/tap/sync",
            params={
                "LANG": "ADQL",
                "FORMAT": "csv",
                "QUERY": "SELECT COUNT(*) AS n FROM alerts.alert WHERE "
                "1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.2, 2.1, 0.4))",
            },
        )
    assert "alerts.alert" in tables
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [int(r["alert_id"]) for r in rows] == [int(sources["diaSourceId"].iloc[3])], answer.text[:500]
    coords = SkyCoord(sources["ra"].to_numpy() * u.deg, sources["dec"].to_numpy() * u.deg)
    inside = int(np.sum(coords.separation(SkyCoord(150.2 * u.deg, 2.1 * u.deg)) <= 0.4 * u.deg))
    assert int(next(csv.DictReader(io.StringIO(cone.text)))["n"]) == inside, cone.text[:500]
    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            str(deployment.data_dir),
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM alerts.alert WHERE visit = 23",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "200"


def test_bad_tokens_topics_and_offsets_get_clear_errors(deployment: Deployment, feed_url: str) -> None:
    with open_feed(database_url=feed_url) as feed:
        feed.create_topic("alerts")
        sources, packets = visit_alerts(24, 95_000, n=10)
        feed.publish_visit("alerts", sources["diaSourceId"].tolist(), packets)
    good = _token(deployment)
    tap_only = _token(deployment, "tap")
    with running_feed(_app(deployment, feed_url)) as url:
        for bad in ("not-a-token", "dms_" + "0" * 43, "x y"):
            got = httpx.get(
                f"{url}/feed/alerts", params={"group": "g"}, headers={"Authorization": f"Bearer {bad}"}
            )
            assert got.status_code == 401 and got.json()["error"], (bad, got.text)
            assert got.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{url}/feed/alerts", params={"group": "g"}).status_code == 401
        scoped = httpx.get(
            f"{url}/feed/alerts", params={"group": "g"}, headers={"Authorization": f"Bearer {tap_only}"}
        )
        assert scoped.status_code == 403 and "not alerts" in scoped.json()["error"]
        client = HttpConsumer(url, good)
        with pytest.raises(FeedError, match="404: unknown topic 'nosuch'"):
            list(client.stream("nosuch", "g"))
        with pytest.raises(
            FeedError, match=r"400: topic 'alerts' has no offset 999: its messages are at offsets 1\.\.10"
        ):
            list(client.stream("alerts", "g", from_offset=999))
        with pytest.raises(FeedError, match=r"400: invalid group name 'bad group!'"):
            list(client.stream("alerts", "bad group!"))
        assert len(list(client.stream("alerts", "g", wait=0.5))) == 10  # nothing lost to the bad requests
        client.close()


def test_the_readme_consumer_example_reads_the_feed(
    deployment: Deployment, feed_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("## Alert Broker Feed", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    sources, packets = visit_alerts(25, 96_000, n=30)
    with open_feed(database_url=feed_url) as feed:
        feed.create_topic("alerts")
        feed.publish_visit("alerts", sources["diaSourceId"].tolist(), packets)
    monkeypatch.setenv("DMS_TOKEN", _token(deployment))
    with running_feed(_app(deployment, feed_url)) as url:
        monkeypatch.setenv("DMS_FEED_URL", url)
        exec(compile(example, "README.md", "exec"), {})
        printed = [line.split() for line in capsys.readouterr().out.splitlines()]
        assert [int(p[0]) for p in printed] == sources["diaSourceId"].tolist()
        assert [float(p[1]) for p in printed] == pytest.approx(sources["ra"].tolist())
        exec(compile(example, "README.md", "exec"), {})  # everything was committed: nothing comes again
        assert capsys.readouterr().out == ""
