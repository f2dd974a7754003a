"""The portal in real headless Chromium (Debian's `chromium`, driven by Playwright) against a live server:
log in, browse the schema, run an ADQL cone query, sort, page and download the results in every format, see
the sky plot and an image, plot a light curve, run an async job; accessibility basics. Screenshots go to
``<basetemp>/portal-screenshots``. Results are checked against astropy on the same Gaia rows."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse_single_table
from astropy.table import Table
from portal_support import LIGHT_CURVE_OBJECT, LivePortal

pytest_plugins = ["portal_support"]  # the live_portal fixture

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

CONE = (83.6, 22.0, 10.0)
QUERY = (
    "SELECT source_id, ra, dec, phot_g_mean_mag FROM cat.gaia WHERE "
    f"CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {CONE[0]}, {CONE[1]}, {CONE[2]})) = 1"
)
TIMEOUT = 60_000


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "portal-screenshots"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(live_portal: LivePortal, browser: Any) -> Iterator[Any]:
    # Playwright's wait_for_function evaluates its predicate with eval, which the portal's CSP forbids:
    # this context bypasses the CSP (test_the_page_works_under_its_content_security_policy keeps it).
    context = browser.new_context(
        accept_downloads=True, viewport={"width": 1400, "height": 1000}, bypass_csp=True
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_portal.url}/portal/")
    yield page
    context.close()
    assert errors == [], errors  # no uncaught script error on the whole journey


def expected_cone(live: LivePortal) -> pd.DataFrame:
    ra, dec = live.gaia["ra"].to_numpy(), live.gaia["dec"].to_numpy()
    inside = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(CONE[0], CONE[1], unit="deg")).deg <= CONE[2]
    return live.gaia.select(["source_id", "ra", "dec", "phot_g_mean_mag"]).to_pandas()[inside]


def test_the_page_works_under_its_content_security_policy(live_portal: LivePortal, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"{live_portal.url}/portal/")
    page.fill("#token", live_portal.token)
    page.press("#token", "Enter")
    page.wait_for_selector("#app:not([hidden])", timeout=TIMEOUT)
    page.wait_for_selector(".cm-content", timeout=TIMEOUT)
    page.wait_for_selector(".tree-table[data-table='cat.gaia']", state="attached", timeout=TIMEOUT)
    context.close()
    assert violations == []


def test_login_refuses_a_wrong_token_then_accepts_alice(
    page: Any, live_portal: LivePortal, shots: Path
) -> None:
    page.wait_for_selector("#login:not([hidden])")
    page.screenshot(path=shots / "01-login.png")
    page.fill("#token", "dms_not_a_token")
    page.click("#login-button")
    page.wait_for_function("document.getElementById('login-error').textContent.includes('not known')")
    assert page.is_visible("#login") and not page.is_visible("#app")
    page.fill("#token", live_portal.token)
    page.press("#token", "Enter")
    page.wait_for_selector("#app:not([hidden])")
    assert "Logged in as alice" in page.inner_text("#who")
    assert page.evaluate("sessionStorage.getItem('dms.portal.token')") == live_portal.token
    assert page.evaluate("document.cookie") == ""  # no cookie: nothing a cross-site request could carry


def test_schema_browser_lists_tap_schema(page: Any, shots: Path) -> None:
    page.wait_for_selector(".tree-table[data-table='cat.gaia']", state="attached")
    schemas = page.locator(".tree-schema > summary").all_inner_texts()
    assert any(s.startswith("cat") for s in schemas) and any(s.startswith("ivoa") for s in schemas)
    page.fill("#schema-filter", "gaia")
    assert page.locator(".tree-table:not([hidden])").count() == 1
    page.click(".tree-table[data-table='cat.gaia'] > summary")
    columns = page.locator("ul[aria-label='Columns of cat.gaia'] li")
    columns.first.wait_for()
    names = [text.split()[0] for text in columns.all_inner_texts()]
    assert {"source_id", "ra", "dec", "phot_g_mean_mag"} <= set(names)
    page.screenshot(path=shots / "02-schema.png")


def test_examples_fill_the_editor(page: Any) -> None:
    options = page.locator("#examples option").all_inner_texts()
    assert "The published tables" in options and any(o.startswith("A cone search on") for o in options)
    page.select_option("#examples", label="The published tables")
    assert "TAP_SCHEMA.tables" in page.inner_text(".cm-content")
    # syntax highlighting: the keyword SELECT is a span coloured unlike the plain text of its line
    page.wait_for_function(
        """() => [...document.querySelectorAll('.cm-content .cm-line span')].some((s) =>
        s.textContent === 'SELECT'
        && getComputedStyle(s).color !== getComputedStyle(s.closest('.cm-line')).color)"""
    )


def _type_query(page: Any, query: str) -> None:
    page.click(".cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(query)
    page.keyboard.press("Escape")


def _column(page: Any, index: int) -> list[str]:
    return page.locator(f"#results tbody tr td:nth-child({index + 1})").all_inner_texts()


def test_run_a_cone_query_sort_and_page(page: Any, live_portal: LivePortal, shots: Path) -> None:
    expected = expected_cone(live_portal)
    _type_query(page, QUERY)
    page.click("#run-sync")
    page.wait_for_function("document.getElementById('query-status').textContent.startsWith('Done')")
    assert page.inner_text("#results-info").startswith(f"{len(expected)} rows, 4 columns")
    assert len(expected) > 100
    page.click("button[aria-label='Sort by phot_g_mean_mag']")
    assert page.get_attribute("#results th[data-index='3']", "aria-sort") == "ascending"
    mags = np.sort(expected["phot_g_mean_mag"].to_numpy())
    assert np.allclose([float(v) for v in _column(page, 3)], mags[:50])
    by_mag = expected.sort_values("phot_g_mean_mag")["source_id"].astype(str).tolist()
    assert _column(page, 0) == by_mag[:50]  # 64-bit ids shown exactly (not rounded to a double)
    page.click("#page-next")
    assert np.allclose([float(v) for v in _column(page, 3)], mags[50:100])
    assert page.inner_text("#page-info") == f"Page 2 of {math.ceil(len(expected) / 50)}"
    page.click("button[aria-label='Sort by phot_g_mean_mag']")
    assert page.get_attribute("#results th[data-index='3']", "aria-sort") == "descending"
    assert np.allclose([float(v) for v in _column(page, 3)], mags[::-1][:50])
    page.select_option("#page-size", "25")
    assert len(_column(page, 0)) == 25
    page.screenshot(path=shots / "03-results.png", full_page=True)


def _read(fmt: str, path: Path) -> list[int]:
    if fmt.startswith("votable"):
        return [int(v) for v in parse_single_table(str(path)).to_table()["source_id"]]
    if fmt in ("csv", "tsv"):
        return pd.read_csv(path, sep="," if fmt == "csv" else "\t")["source_id"].tolist()
    if fmt == "fits":
        return [int(v) for v in Table.read(path, format="fits")["source_id"]]
    if fmt == "parquet":
        return pq.read_table(path)["source_id"].to_pylist()
    document = json.loads(path.read_text())
    index = [c["name"] for c in document["metadata"]].index("source_id")
    return [row[index] for row in document["data"]]


@pytest.mark.parametrize("fmt", ["votable", "votable/b2", "csv", "tsv", "fits", "parquet", "json"])
def test_download_in_every_format(page: Any, live_portal: LivePortal, tmp_path: Path, fmt: str) -> None:
    page.select_option("#download-format", fmt)
    with page.expect_download() as download:
        page.click("#download")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert sorted(_read(fmt, path)) == sorted(expected_cone(live_portal)["source_id"].tolist())


def mollweide_pixel(ra: float, dec: float, width: int = 900, height: int = 450) -> tuple[float, float]:
    """The canvas position of (ra, dec): Mollweide with RA 180 at the centre, increasing to the left."""
    from scipy.optimize import brentq

    lon = math.radians(180 - ra % 360)
    phi = math.radians(dec)
    theta = brentq(lambda t: 2 * t + math.sin(2 * t) - math.pi * math.sin(phi), -math.pi / 2, math.pi / 2)
    x, y = 2 * math.sqrt(2) / math.pi * lon * math.cos(theta), math.sqrt(2) * math.sin(theta)
    scale = min((width - 20) / (4 * math.sqrt(2)), (height - 20) / (2 * math.sqrt(2)))
    return width / 2 + x * scale, height / 2 - y * scale


def test_sky_plot_shows_the_density_map_and_the_results(
    page: Any, live_portal: LivePortal, shots: Path
) -> None:
    page.wait_for_function("Number(document.getElementById('sky').dataset.pixels) > 0")
    expected = expected_cone(live_portal)
    assert page.get_attribute("#sky", "data-points") == str(len(expected))
    label = page.get_attribute("#sky", "aria-label")
    assert "density map of cat.gaia" in label and f"{len(expected)} result positions" in label
    status = page.inner_text("#sky-status")
    assert status.startswith(f"cat.gaia: {live_portal.gaia.num_rows} rows")
    red = page.evaluate(
        """([points]) => {
        const ctx = document.getElementById('sky').getContext('2d');
        return points.map(([x, y]) => { const d = ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data;
          return d[0] > 200 && d[1] < 60 && d[2] < 90 ? true : Array.from(d).concat([x, y]); });
        }""",
        [[mollweide_pixel(r, d) for r, d in zip(expected["ra"], expected["dec"], strict=True)][:40]],
    )
    page.locator("#sky").screenshot(path=shots / "04-sky.png")
    assert all(r is True for r in red), red  # every result is drawn where the Mollweide projection puts it
    far = page.evaluate(
        "([x, y]) => Array.from(document.getElementById('sky').getContext('2d')"
        ".getImageData(x, y, 1, 1).data)",
        [round(c) for c in mollweide_pixel(CONE[0] + 180, -CONE[1])],
    )
    assert not (far[0] > 200 and far[1] < 60)  # and nothing red on the other side of the sky
    page.locator("#sky").screenshot(path=shots / "04-sky.png")


def test_image_search_preview_and_download(
    page: Any, live_portal: LivePortal, shots: Path, tmp_path: Path
) -> None:
    page.fill("#sia-ra", "250.42")
    page.fill("#sia-dec", "36.46")
    page.fill("#sia-radius", "1")
    page.click("#sia-search")
    page.wait_for_function("document.getElementById('sia-status').textContent.endsWith('images')")
    assert page.locator("#images tbody tr").count() == 1
    page.click("button[aria-label='Preview m13']")
    page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
    assert page.evaluate("[preview.naturalWidth, preview.naturalHeight]") == [300, 300]
    assert "Preview of image m13" in page.get_attribute("#preview", "alt")
    page.locator("#preview-figure").screenshot(path=shots / "05-image.png")
    with page.expect_download() as download:
        page.click("button[aria-label='Download m13']")  # through its DataLink #this link
    saved = tmp_path / "m13.fits"
    download.value.save_as(saved)
    assert saved.read_bytes() == live_portal.images["ivo://dms.example/image?0"].read_bytes()
    page.fill("#cutout-size", "0.02")
    page.click("button[aria-label='Preview m13']")
    page.wait_for_function("document.getElementById('preview').alt.includes('cutout')")
    page.wait_for_function("document.getElementById('preview').naturalWidth < 300")


def test_light_curve(page: Any, live_portal: LivePortal, shots: Path) -> None:
    page.fill("#dia-object-id", str(LIGHT_CURVE_OBJECT))
    page.click("#lightcurve-show")
    page.wait_for_selector("#lightcurve svg")
    assert page.locator("#lightcurve svg g.source").count() == len(live_portal.history)
    assert page.locator("#lightcurve svg g.forced").count() == len(live_portal.forced)
    assert f"DiaObject {LIGHT_CURVE_OBJECT}" in page.get_attribute("#lightcurve svg", "aria-label")
    page.locator("#lightcurve").screenshot(path=shots / "06-lightcurve.png")
    page.fill("#dia-object-id", "424242")
    page.click("#lightcurve-show")
    page.wait_for_function(
        "document.getElementById('lightcurve-status').textContent.includes('no DiaObject')"
    )


def test_async_job_runs_and_is_listed(page: Any, live_portal: LivePortal, shots: Path) -> None:
    _type_query(page, "SELECT TOP 7 source_id FROM cat.gaia ORDER BY source_id")
    page.click("#run-async")
    page.wait_for_function("document.getElementById('query-status').textContent.includes('7 rows')")
    row = page.locator("#jobs tbody tr").first
    assert row.locator("td").nth(1).inner_text() == "COMPLETED"
    ids = sorted(live_portal.gaia["source_id"].to_pylist())[:7]
    assert [int(v) for v in _column(page, 0)] == ids
    page.locator("#jobs-section").screenshot(path=shots / "07-jobs.png")
    job = row.get_attribute("data-job")
    page.click(f"button[aria-label='Delete job {job}']")
    page.wait_for_selector(f"#jobs tbody tr[data-job='{job}']", state="detached")
    gone = httpx.get(
        f"{live_portal.url}/tap/async/{job}", headers={"Authorization": f"Bearer {live_portal.token}"}
    )
    assert gone.status_code == 404


def test_accessibility_basics(page: Any) -> None:
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, [contenteditable=true]')]
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
          && !(el.getAttribute('aria-labelledby') || '').split(' ').some((id) => document.getElementById(id)))
        .map((el) => el.id || el.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []
    nameless = page.evaluate(
        "() => [...document.querySelectorAll('button')].filter((b) => !(b.getAttribute('aria-label')"
        " || b.textContent.trim())).map((b) => b.outerHTML)"
    )
    assert nameless == []
    assert page.evaluate("() => [...document.images].filter((i) => !i.alt).length") == 0
    assert page.evaluate(
        "() => [...document.querySelectorAll('canvas, svg')].every((g) => g.getAttribute('aria-label'))"
    )
    # the keyboard alone reaches the run button from the examples and runs the query
    page.focus("#examples")
    for _ in range(10):
        if page.evaluate("document.activeElement.id") == "run-sync":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "run-sync"
    page.evaluate("document.getElementById('query-status').textContent = ''")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('query-status').textContent.startsWith('Done')")
    # and Ctrl-Enter in the editor runs it too
    page.evaluate("document.getElementById('query-status').textContent = ''")
    page.click(".cm-content")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("document.getElementById('query-status').textContent.startsWith('Done')")


def test_hostile_strings_are_shown_as_text(page: Any) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    _type_query(page, f"SELECT TOP 2 id, '{hostile}' AS h FROM survey.obj ORDER BY id")
    page.click("#run-sync")
    page.wait_for_function("document.getElementById('query-status').textContent.startsWith('Done')")
    assert _column(page, 1) == [hostile, hostile]
    assert page.locator("#results img, #results script").count() == 0 and dialogs == []
    _type_query(page, "SELECT nope FROM survey.obj WHERE '<b>x</b>' = 1")
    page.click("#run-sync")
    page.wait_for_function("document.getElementById('query-error').textContent.includes('failed')")
    assert page.locator("#query-error b").count() == 0


def test_anonymous_access_where_the_deployment_allows_it(
    live_portal: LivePortal, browser: Any, shots: Path
) -> None:
    from dms.deployment import Deployment
    from dms.services.vo.server import running_server

    open_deployment = Deployment.open(live_portal.deployment.data_dir)
    open_deployment.config.anonymous_access = True  # this server only; the file still says deny
    try:
        with running_server(open_deployment) as url:
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT)
            page.goto(f"{url}/portal/")
            page.click("#anonymous-button")
            page.wait_for_selector("#app:not([hidden])")
            assert "Anonymous" in page.inner_text("#who")
            _type_query(page, "SELECT TOP 3 id, name FROM survey.obj ORDER BY id")
            page.click("#run-sync")
            page.wait_for_function("document.getElementById('query-status').textContent.startsWith('Done')")
            assert _column(page, 1) == ["star 1", "star 2", "star 3"]
            assert page.evaluate("sessionStorage.getItem('dms.portal.token')") is None
            page.screenshot(path=shots / "08-anonymous.png")
            context.close()
    finally:
        open_deployment.dispose()


def test_a_token_revoked_during_the_session_returns_to_the_login_page(
    live_portal: LivePortal, browser: Any
) -> None:
    from portal_support import dms

    output = dms(live_portal.deployment, "users", "token", "alice")
    token, token_id = output.splitlines()[0].strip(), output.split("id ")[1].split()[0].strip("():,")
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(f"{live_portal.url}/portal/")
    page.fill("#token", token)
    page.press("#token", "Enter")
    page.wait_for_selector("#app:not([hidden])")
    dms(live_portal.deployment, "users", "revoke", token_id)
    # the portal's own background requests may meet the revocation first and show the login page before
    # the click: click Run only if it is still shown (in the page, so nothing changes in between)
    page.evaluate("() => { const b = document.querySelector('#run-sync'); if (b.offsetParent) b.click() }")
    page.wait_for_selector("#login:not([hidden])")
    assert "was revoked" in page.inner_text("#login-error")
    assert page.evaluate("sessionStorage.getItem('dms.portal.token')") is None
    context.close()


def test_logout_forgets_the_token(page: Any, live_portal: LivePortal) -> None:
    page.click("#logout")
    assert page.evaluate("sessionStorage.getItem('dms.portal.token')") is None
    page.reload()
    page.wait_for_selector("#login:not([hidden])")
    assert not page.is_visible("#app")
    options = page.locator("#examples option").count()
    page.fill("#token", live_portal.token)
    page.press("#token", "Enter")
    page.wait_for_selector("body[data-ready=true]", state="attached")
    again = page.locator("#examples option").count()
    page.click("#logout")  # a second log-in in the same page lists each example once
    page.fill("#token", live_portal.token)
    page.press("#token", "Enter")
    page.wait_for_selector("body[data-ready=true]", state="attached")
    assert page.locator("#examples option").count() == again > options
