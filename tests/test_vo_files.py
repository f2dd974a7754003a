"""SIA and DataLink give HTTP URLs for the server's image files, the files download over HTTP, and no
response (results or errors) shows where the server keeps its data (issue 11, item 18)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pyvo
from astropy.io import fits
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)

from dms.loaders.catalog import TableOptions, load_files


def _no_server_paths(live: MetaVO, text: str) -> None:
    data_dir = str(live.deployment.data_dir)
    assert data_dir not in text and str(live.deployment.data_dir.resolve()) not in text
    assert "file://" not in text


def test_sia_access_urls_are_http_and_download_the_fits_bytes(meta_vo: MetaVO) -> None:
    response = httpx.get(f"{meta_vo.url}/sia/query", params={"POS": "CIRCLE 11 20 3"})
    assert response.status_code == 200
    _no_server_paths(meta_vo, response.text)
    results = pyvo.dal.SIA2Service(f"{meta_vo.url}/sia").search(pos=(11, 20, 3))
    urls = {row["obs_publisher_did"]: row["access_url"] for row in results.to_table()}
    assert len(urls) == 3
    for did, path in meta_vo.fits_files.items():
        url = urls[did]
        assert url.startswith(f"{meta_vo.url}/files/")
        download = httpx.get(url)
        assert download.status_code == 200 and download.headers["content-type"] == "image/fits"
        assert download.content == path.read_bytes()
        with fits.open(io.BytesIO(download.content)) as hdus:
            assert hdus[0].header["OBSID"] == next(
                i["obs_id"] for i in meta_vo.images if i["obs_publisher_did"] == did
            )
    remote = next(i for i in meta_vo.images if i["obs_publisher_did"] not in meta_vo.fits_files)
    assert urls[remote["obs_publisher_did"]] == remote["access_url"]  # a remote file keeps its URL


def test_datalink_this_links_are_http(meta_vo: MetaVO) -> None:
    did = next(iter(meta_vo.fits_files))
    response = httpx.get(f"{meta_vo.url}/datalink", params={"ID": did})
    assert response.status_code == 200
    _no_server_paths(meta_vo, response.text)
    links = pyvo.dal.adhoc.DatalinkResults.from_result_url(f"{meta_vo.url}/datalink?ID={did}")
    this = next(link for link in links.to_table() if link["semantics"] == "#this")
    download = httpx.get(this["access_url"])
    assert download.status_code == 200 and download.content == meta_vo.fits_files[did].read_bytes()


def test_missing_files_and_ids_are_404_without_paths(meta_vo: MetaVO, tmp_path: Path) -> None:
    response = httpx.get(f"{meta_vo.url}/files/ivo://dms.example/image?nope")
    assert response.status_code == 404 and "no image with ID" in response.text
    for did in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "' OR '1'='1"):
        response = httpx.get(f"{meta_vo.url}/files/{did}")
        assert response.status_code == 404 and "root:" not in response.text, did
    remote = next(i for i in meta_vo.images if i["obs_publisher_did"] not in meta_vo.fits_files)
    response = httpx.get(f"{meta_vo.url}/files/{remote['obs_publisher_did']}")
    assert response.status_code == 404
    _no_server_paths(meta_vo, response.text)


def test_query_errors_do_not_show_the_data_directory(meta_vo: MetaVO, tmp_path: Path) -> None:
    """A catalog chunk gone from disk fails the query with a message that names no server path."""
    path = tmp_path / "victim.parquet"
    pq.write_table(meta_vo.gaia.slice(0, 500).select(["source_id", "ra", "dec"]), path)
    load_files(
        meta_vo.deployment,
        "victim",
        [path],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=1),
    )
    chunks = [c for c in meta_vo.deployment.data_dir.rglob("*.parquet") if "victim" in str(c)]
    assert chunks
    for chunk in chunks:
        chunk.unlink()
    response = httpx.post(
        f"{meta_vo.url}/tap/sync", data={"LANG": "ADQL", "QUERY": "SELECT SUM(ra) FROM cat.victim"}
    )
    assert response.status_code == 400 and 'value="ERROR"' in response.text, response.text
    _no_server_paths(meta_vo, response.text)
    # The same failure in an async job: its error summary and error document name no server path either.
    created = httpx.post(
        f"{meta_vo.url}/tap/async",
        data={"LANG": "ADQL", "QUERY": "SELECT SUM(ra) FROM cat.victim", "PHASE": "RUN"},
        follow_redirects=False,
    )
    job = created.headers["location"]
    for _ in range(300):
        if httpx.get(f"{job}/phase").text in ("ERROR", "COMPLETED"):
            break
        time.sleep(0.1)
    assert httpx.get(f"{job}/phase").text == "ERROR"
    for part in ("", "/error"):
        text = httpx.get(f"{job}{part}").text
        assert "the file is missing" in text, text
        _no_server_paths(meta_vo, text)


def test_tap_obscore_queries_show_no_server_paths(meta_vo: MetaVO) -> None:
    for query in (
        "SELECT obs_publisher_did, access_url FROM ivoa.ObsCore",
        "SELECT access_url FROM ivoa.ObsCore",
    ):
        response = httpx.post(f"{meta_vo.url}/tap/sync", data={"LANG": "ADQL", "QUERY": query})
        assert response.status_code == 200, response.text
        _no_server_paths(meta_vo, response.text)
    response = httpx.post(
        f"{meta_vo.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT obs_publisher_did, access_url FROM ivoa.ObsCore"},
    )
    assert f"{meta_vo.url}/files/" in response.text
