"""The Alert Mini-Broker on real PostgreSQL: filters evaluated in the database select the same alerts as the
same condition computed in pandas on the same batch; features agree with numpy; users never see each other's
filters, watch lists or matches (Python and HTTP); bad filters and tokens get clear errors, others unaffected.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
import uvicorn
from apdb_support import conninfo
from astropy.coordinates import SkyCoord
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minibroker_support import Batch, add_users, make_batch

from dms.cli import main
from dms.deployment import Deployment
from dms.services.apdb import Apdb
from dms.services.minibroker import store
from dms.services.minibroker.app import make_app
from dms.services.minibroker.delivery import feed_topic
from dms.services.minibroker.errors import FilterError, NotYoursError
from dms.services.minibroker.evaluate import FilterSpec, evaluate_visit, run_filters
from dms.services.minibroker.filters import compile_filter
from tests.hypothesis_profiles import examples

pytest_plugins = ["apdb_support"]  # the apdb_deployment fixture

N_OBJECTS = 1500
WATCH_CENTRE = (150.3, 2.0)


@dataclass
class World:
    deployment: Deployment
    conninfo: str
    batch: Batch
    frame: pd.DataFrame
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def world(apdb_deployment: Deployment) -> World:
    url = conninfo(apdb_deployment)
    with Apdb(url) as apdb:
        batch = make_batch(apdb, url, N_OBJECTS)
    tokens = add_users(url, ["alice", "bob", "carol"])
    with apdb_deployment.engine().begin() as conn:
        store.add_watch(conn, "alice", "field", [(*WATCH_CENTRE, 1800.0, "centre")])
    return World(apdb_deployment, url, batch, batch.frame(), tokens)


def _run(world: World, where: str, select: str = "", owner: str = "alice") -> pd.DataFrame:
    with psycopg.connect(world.conninfo) as conn:
        (run,) = run_filters(conn, [FilterSpec(0, owner, where, select)], world.batch.visit)
    assert run.error is None, run.error
    rows = [{"alert_id": a, **s} for a, _, s in run.rows]
    return pd.DataFrame(rows) if rows else pd.DataFrame({"alert_id": []})


def _pandas_ids(frame: pd.DataFrame, mask: pd.Series) -> list[int]:
    return sorted(frame.loc[mask.fillna(False).astype(bool), "diaSourceId"].astype(int).tolist())


CASES: list[tuple[str, Callable[[pd.DataFrame], pd.Series]]] = [
    ("psfFlux > 4000 AND band = 'r'", lambda f: (f.psfFlux > 4000) & (f.band == "r")),
    (
        "diaSource.snr > 50 OR (reliability < 0.1 AND NOT isDipole)",
        lambda f: (f.snr > 50) | ((f.reliability < 0.1) & ~f.isDipole),
    ),
    ("psfFlux / psfFluxErr BETWEEN 10 AND 20", lambda f: (f.psfFlux / f.psfFluxErr).between(10, 20)),
    (
        "band IN ('g', 'i') AND ABS(psfFlux) > 2500",
        lambda f: f.band.isin(["g", "i"]) & (f.psfFlux.abs() > 2500),
    ),
    ("features.amplitude > 2500 AND features.slope < 0", lambda f: (f.f_amplitude > 2500) & (f.f_slope < 0)),
    ("features.colour_g_r > 0.3", lambda f: f.f_colour_g_r > 0.3),
    ("features.colour_g_r IS NULL AND snr > 80", lambda f: f.f_colour_g_r.isna() & (f.snr > 80)),
    (
        "diaObject.g_psfFluxMean > 2 * diaObject.r_psfFluxMean",
        lambda f: f.o_g_psfFluxMean > 2 * f.o_r_psfFluxMean,
    ),
    (
        "-2.5 * LOG(GREATEST(psfFlux, 1)) + 31.4 < 22.5",
        lambda f: -2.5 * np.log10(np.maximum(f.psfFlux.astype(float), 1)) + 31.4 < 22.5,
    ),
]


@pytest.mark.parametrize(("where", "mask"), CASES, ids=[c[0][:40] for c in CASES])
def test_filter_selects_what_pandas_selects(
    world: World, where: str, mask: Callable[[pd.DataFrame], pd.Series]
) -> None:
    expected = _pandas_ids(world.frame, mask(world.frame))
    assert 0 < len(expected) < len(world.frame), "the case must select some alerts, not all"
    assert sorted(_run(world, where)["alert_id"].tolist()) == expected


@settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flux=st.floats(-2000, 8000, allow_nan=False),
    snr=st.floats(0, 100, allow_nan=False),
    band=st.sampled_from(list("ugrizy")),
    amplitude=st.floats(0, 5000, allow_nan=False),
    either=st.booleans(),
)
def test_random_thresholds_agree_with_pandas(
    world: World, flux: float, snr: float, band: str, amplitude: float, either: bool
) -> None:
    join = "OR" if either else "AND"
    right_sql = f"(band = '{band}' AND features.amplitude > {amplitude!r})"
    where = f"(psfFlux >= {flux!r} AND snr < {snr!r}) {join} {right_sql}"
    f = world.frame
    left, right = (f.psfFlux >= flux) & (f.snr < snr), (f.band == band) & (f.f_amplitude > amplitude)
    expected = _pandas_ids(f, (left | right) if either else (left & right))
    assert sorted(_run(world, where)["alert_id"].tolist()) == expected


def test_select_list_values_are_those_pandas_computes(world: World) -> None:
    got = _run(world, "snr > 90", "snr, psfFlux / psfFluxErr AS ratio, features.amplitude AS amp")
    f = world.frame.set_index("diaSourceId").loc[got["alert_id"]]
    np.testing.assert_allclose(got["snr"], f["snr"], rtol=1e-6)
    np.testing.assert_allclose(got["ratio"], f["psfFlux"] / f["psfFluxErr"], rtol=1e-5)
    np.testing.assert_allclose(got["amp"], f["f_amplitude"], rtol=1e-9)


def test_watchlist_filter_selects_the_alerts_astropy_finds_within_the_radius(world: World) -> None:
    f = world.frame
    separation = SkyCoord(f.ra, f.dec, unit="deg").separation(SkyCoord(*WATCH_CENTRE, unit="deg")).arcsec
    expected = _pandas_ids(f, pd.Series(separation <= 1800.0, index=f.index))
    assert 0 < len(expected) < len(f)
    assert sorted(_run(world, "in_watchlist('field')")["alert_id"].tolist()) == expected


def test_feature_distance_is_the_euclidean_distance_numpy_computes(world: World) -> None:
    target = [2000.0, 0.0, 10.0, 2.0, 0.0, 2000.0]
    feats = world.batch.features
    values = feats[
        ["amplitude", "slope", "periodogram_period", "periodogram_power", "colour_g_r", "mean_flux"]
    ]
    distance = np.linalg.norm(values.fillna(0.0).to_numpy() - np.array(target), axis=1)
    near = set(feats.loc[distance < 800, "dia_object_id"].astype(int))
    expected = sorted(world.frame.loc[world.frame.diaObjectId.isin(near), "diaSourceId"].astype(int))
    assert 0 < len(expected) < len(world.frame)
    args = ", ".join(repr(v) for v in target)
    assert sorted(_run(world, f"feature_distance({args}) < 800")["alert_id"].tolist()) == expected


def test_features_agree_with_numpy_on_the_apdb_history(world: World) -> None:
    with psycopg.connect(world.conninfo) as conn:
        forced = pd.DataFrame(
            conn.execute('SELECT "diaObjectId", "psfFlux" FROM apdb."DiaForcedSource"').fetchall(),
            columns=["id", "flux"],
        )
        detected = pd.DataFrame(
            conn.execute('SELECT "diaObjectId", "psfFlux", band FROM apdb."DiaSource"').fetchall(),
            columns=["id", "flux", "band"],
        )
    both = pd.concat([forced, detected[["id", "flux"]]]).astype({"flux": float})
    amplitude = both.groupby("id")["flux"].agg(lambda v: (v.max() - v.min()) / 2)
    feats = world.batch.features.set_index("dia_object_id")
    np.testing.assert_allclose(feats["amplitude"], amplitude.loc[feats.index], rtol=1e-5)
    means = detected[detected.band.isin(["g", "r"])].groupby(["id", "band"])["flux"].mean().unstack()
    colour = -2.5 * np.log10((means["g"] / means["r"]).where((means["g"] > 0) & (means["r"] > 0)))
    got = feats["colour_g_r"].reindex(colour.index)
    np.testing.assert_allclose(got.fillna(-99), colour.fillna(-99), rtol=1e-5)


@pytest.mark.parametrize(
    ("where", "offending"),
    [
        ("snr >", None),
        ('snr > (SELECT max(snr) FROM apdb."DiaSource")', "SUBQUERY"),
        ("EXISTS (SELECT 1 FROM minibroker.filter)", "EXISTS"),
        ("pg_sleep(20) IS NULL", "pg_sleep"),
        ("dms.access_token.token_hash IS NOT NULL", "dms.access_token.token_hash"),
        ("minibroker.match > 1", "minibroker"),
        ("count(*) > 1", "COUNT"),
        ("snrr > 10", "snrr"),
        ("snr > 1; DELETE FROM minibroker.filter", ";"),
        ("in_watchlist('field')", "field"),  # alice's list, asked for by bob
    ],
)
def test_bad_filters_are_refused_naming_the_problem(world: World, where: str, offending: str | None) -> None:
    with world.deployment.engine().begin() as conn, pytest.raises(FilterError) as info:
        store.add_filter(conn, "bob", "bad", where)
    assert info.value.offending == offending, str(info.value)
    if offending:
        assert offending.lower() in str(info.value).lower()
    with world.deployment.engine().begin() as conn:
        assert store.list_filters(conn, "bob") == []


def test_a_filter_running_too_long_is_stopped_and_others_are_unaffected(world: World) -> None:
    rng = np.random.default_rng(3)
    many = [
        (float(r), float(d), 30000.0, "")
        for r, d in zip(rng.uniform(300, 320, 20000), rng.uniform(-8, 12, 20000), strict=True)
    ]
    with world.deployment.engine().begin() as conn:
        store.add_watch(conn, "carol", "huge", many)
        slow = store.add_filter(conn, "carol", "slow", "in_watchlist('huge')")
        fast = store.add_filter(conn, "bob", "fast", "snr > 95")
    try:
        runs = {r.filter_id: r for r in evaluate_visit(world.conninfo, world.batch.visit, timeout_s=0.2)}
        assert runs[slow].error is not None and "stopped" in runs[slow].error and runs[slow].rows == []
        assert runs[fast].error is None
        assert sorted(a for a, _, _ in runs[fast].rows) == _pandas_ids(world.frame, world.frame.snr > 95)
        with world.deployment.engine().begin() as conn:
            assert next(r["error"] for r in store.list_runs(conn, "carol")).startswith("stopped")
            assert all(r["error"] is None for r in store.list_runs(conn, "bob"))
            assert {m["filter_id"] for m in store.list_matches(conn, "bob")} == {fast}
            assert store.list_matches(conn, "carol") == []
    finally:
        with world.deployment.engine().begin() as conn:
            store.remove_filter(conn, "carol", slow)
            store.remove_filter(conn, "bob", fast)


def test_users_never_reach_each_others_filters_or_matches(world: World) -> None:
    with world.deployment.engine().begin() as conn:
        mine = store.add_filter(conn, "alice", "mine", "snr > 90")
        theirs = store.add_filter(conn, "bob", "theirs", "snr > 80")
    try:
        evaluate_visit(world.conninfo, world.batch.visit)
        with world.deployment.engine().begin() as conn:
            assert [f.filter_id for f in store.list_filters(conn, "bob")] == [theirs]
            with pytest.raises(NotYoursError, match=f"no filter {mine}"):
                store.remove_filter(conn, "bob", mine)
            with pytest.raises(NotYoursError):
                store.get_filter(conn, "bob", mine)
            bob = store.list_matches(conn, "bob")
            alice = store.list_matches(conn, "alice")
        assert {m["filter_id"] for m in bob} == {theirs} and {m["filter_id"] for m in alice} == {mine}
        assert len(bob) == len(_pandas_ids(world.frame, world.frame.snr > 80))
        # bob's filter can never name alice's watch list, even spelled as his own
        with pytest.raises(FilterError, match="no watch list 'field'"):
            compile_filter("in_watchlist('field')", owner="bob", watchlists=set())
    finally:
        with world.deployment.engine().begin() as conn:
            store.remove_filter(conn, "alice", mine)
            store.remove_filter(conn, "bob", theirs)


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app(world.deployment.engine), log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started and thread.is_alive():
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/minibroker"
    running.should_exit = True
    thread.join(timeout=30)
    sock.close()


def _as(world: World, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[user]}"}


def test_http_each_user_sees_only_their_own(world: World, server: str) -> None:
    made = httpx.post(
        f"{server}/filters", json={"name": "h1", "where": "snr > 85"}, headers=_as(world, "alice")
    )
    assert made.status_code == 201, made.text
    alice_filter = made.json()["filter_id"]
    added = httpx.post(
        f"{server}/watchlists/mine", json={"positions": [[150.0, 2.2, 60.0, "x"]]}, headers=_as(world, "bob")
    )
    assert added.status_code == 201, added.text
    try:
        evaluate_visit(world.conninfo, world.batch.visit)
        bob = httpx.get(f"{server}/filters", headers=_as(world, "bob")).json()
        assert alice_filter not in [f["filter_id"] for f in bob]
        assert httpx.get(f"{server}/watchlists", headers=_as(world, "alice")).json() == {"field": 1}
        assert httpx.get(f"{server}/watchlists", headers=_as(world, "bob")).json() == {"mine": 1}
        assert httpx.get(f"{server}/matches", headers=_as(world, "bob")).json() == []
        alice = httpx.get(f"{server}/matches", headers=_as(world, "alice")).json()
        assert sorted(m["alert_id"] for m in alice) == _pandas_ids(world.frame, world.frame.snr > 85)
        resumed = httpx.get(
            f"{server}/matches", params={"after": alice[-1]["seq"]}, headers=_as(world, "alice")
        )
        assert resumed.json() == []
        refused = httpx.delete(f"{server}/filters/{alice_filter}", headers=_as(world, "bob"))
        assert refused.status_code == 404 and refused.json() == {
            "error": f"you have no filter {alice_filter}"
        }
    finally:
        gone = httpx.delete(f"{server}/filters/{alice_filter}", headers=_as(world, "alice"))
        assert gone.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "needs a token"),
        ({"Authorization": "Bearer"}, 401, "Bearer TOKEN"),
        ({"Authorization": "Basic YWxpY2U6eA=="}, 401, "Bearer TOKEN"),
        ({"Authorization": "Bearer dms_not-a-token"}, 401, "not known"),
    ],
)
def test_http_malformed_tokens_are_refused(
    server: str, headers: dict[str, str], status: int, message: str
) -> None:
    answer = httpx.get(f"{server}/filters", headers=headers)
    assert answer.status_code == status and message in answer.json()["error"], answer.text


def test_http_token_without_the_minibroker_scope_is_refused(world: World, server: str) -> None:
    from dms.services.auth import issue_token

    with world.deployment.engine().begin() as conn:
        _, tap_only = issue_token(conn, "alice", ["tap"])
    answer = httpx.get(f"{server}/filters", headers={"Authorization": f"Bearer {tap_only}"})
    assert answer.status_code == 403 and "minibroker" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "where": "snr >"}, "syntax error"),
        ({"name": "x", "where": "pg_read_file('/etc/passwd') IS NULL"}, "pg_read_file"),
        ({"name": "x", "where": "snr IN (SELECT owner FROM minibroker.filter)"}, "subqueries"),
        ({"name": "x"}, "as strings"),
    ],
)
def test_http_bad_filters_get_400_naming_the_problem(
    world: World, server: str, body: dict[str, str], message: str
) -> None:
    answer = httpx.post(f"{server}/filters", json=body, headers=_as(world, "carol"))
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    assert httpx.get(f"{server}/filters", headers=_as(world, "carol")).json() == []


def test_cli_filter_add_list_test_remove(world: World) -> None:
    base = ["--data-dir", str(world.deployment.data_dir), "minibroker"]
    runner = CliRunner()
    added = runner.invoke(main, [*base, "filter", "add", "cli1", "snr > 97", "--user", "carol"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, [*base, "filter", "list", "--user", "carol"])
    assert '"cli1"' in listed.output
    tried = runner.invoke(
        main, [*base, "filter", "test", "snr > 97", "--visit", str(world.batch.visit), "--user", "carol"]
    )
    assert tried.exit_code == 0, tried.output
    assert tried.output.count('"alert_id"') == len(_pandas_ids(world.frame, world.frame.snr > 97))
    bad = runner.invoke(main, [*base, "filter", "add", "cli2", "foo > 1", "--user", "carol"])
    assert bad.exit_code != 0 and "unknown column 'foo'" in bad.output and "Traceback" not in bad.output
    filter_id = next(iter(listed.output.split('"filter_id": ')[1:])).split(",")[0]
    removed = runner.invoke(main, [*base, "filter", "remove", filter_id, "--user", "carol"])
    assert removed.exit_code == 0, removed.output


def test_feed_topics_fit_the_feed_alphabet_and_differ_per_user() -> None:
    import re

    names = ["alice", "Alice", "a.b@c-d", "x" * 64]
    topics = [feed_topic(n) for n in names]
    assert all(re.match(r"^[a-z][a-z0-9_\-]{0,62}$", t) for t in topics) and len(set(topics)) == len(names)


def test_a_filter_failing_in_the_database_is_reported_and_others_still_match(world: World) -> None:
    with psycopg.connect(world.conninfo) as conn:
        broken, fine = run_filters(
            conn,
            [FilterSpec(1, "carol", "psfFlux / (snr - snr) > 1"), FilterSpec(2, "bob", "snr > 95", "snr")],
            world.batch.visit,
        )
    assert broken.error is not None and "division by zero" in broken.error and broken.rows == []
    assert fine.error is None
    assert sorted(a for a, _, _ in fine.rows) == _pandas_ids(world.frame, world.frame.snr > 95)
    by_id = world.frame.set_index("diaSourceId")["snr"]
    assert all(abs(s["snr"] - by_id[a]) < 1e-4 for a, _, s in fine.rows)


def test_evaluating_a_visit_again_adds_no_duplicate_matches(world: World) -> None:
    with world.deployment.engine().begin() as conn:
        once = store.add_filter(conn, "carol", "once", "snr > 96")
    try:
        evaluate_visit(world.conninfo, world.batch.visit, owner="carol")
        evaluate_visit(world.conninfo, world.batch.visit, owner="carol")
        with world.deployment.engine().begin() as conn:
            matches = store.list_matches(conn, "carol", filter_id=once)
        assert sorted(m["alert_id"] for m in matches) == _pandas_ids(world.frame, world.frame.snr > 96)
    finally:
        with world.deployment.engine().begin() as conn:
            store.remove_filter(conn, "carol", once)
