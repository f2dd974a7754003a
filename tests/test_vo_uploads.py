"""TAP uploads read only what the client sent: no server files through a STREAM href, and no server-side
request forgery through an upload by URL (issue 11, item 2). Over real HTTP against a live server."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from vo_support import LiveVO, live_vo_fixture  # noqa: F401 (the live_vo fixture)

from dms.config import CONFIG_FILE

QUERY = "SELECT * FROM TAP_UPLOAD.t"
INLINE = (
    b'<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
    b'<TABLE><FIELD name="a" datatype="int"/><DATA><TABLEDATA><TR><TD>41</TD></TR><TR><TD>42</TD></TR>'
    b"</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
)


def _streamed(href: str, encoding: str = "BINARY") -> bytes:
    """A VOTable whose data is a STREAM elsewhere: one unsignedByte per row, so a file reads byte by byte."""
    return (
        '<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
        f'<TABLE><FIELD name="b" datatype="unsignedByte"/><DATA><{encoding}><STREAM href="{href}"/>'
        f"</{encoding}></DATA></TABLE></RESOURCE></VOTABLE>"
    ).encode()


def _post(url: str, document: bytes, query: str = QUERY) -> httpx.Response:
    return httpx.post(
        f"{url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": query, "UPLOAD": "t,param:f"},
        files={"f": ("t.xml", document)},
        timeout=60,
    )


def test_inline_uploads_still_work(live_vo: LiveVO) -> None:
    inline_binary = (
        '<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
        '<TABLE><FIELD name="b" datatype="unsignedByte"/><DATA><BINARY><STREAM encoding="base64">'
        f"{base64.b64encode(bytes([7, 9])).decode()}</STREAM></BINARY></DATA></TABLE></RESOURCE></VOTABLE>"
    ).encode()
    response = _post(live_vo.url, INLINE, "SELECT SUM(a) AS s FROM TAP_UPLOAD.t")
    assert response.status_code == 200 and "<TD>83</TD>" in response.text
    response = _post(live_vo.url, inline_binary, "SELECT SUM(b) AS s FROM TAP_UPLOAD.t")
    assert response.status_code == 200 and "<TD>16</TD>" in response.text


@pytest.mark.parametrize("encoding", ["BINARY", "BINARY2"])
def test_a_stream_href_to_a_server_file_is_refused(live_vo: LiveVO, encoding: str) -> None:
    config = live_vo.deployment.data_dir / CONFIG_FILE
    secret = config.read_bytes()
    for path in (Path("/etc/hostname"), config):
        if not path.is_file():
            continue
        response = _post(live_vo.url, _streamed(path.as_uri(), encoding))
        assert response.status_code == 400, response.text
        assert 'value="ERROR"' in response.text and "STREAM with an href" in response.text
        assert "<TD>" not in response.text
    # Nothing of the owner-only configuration comes back, in any form.
    response = _post(
        live_vo.url, _streamed(config.as_uri(), encoding), "SELECT COUNT(*) AS n FROM TAP_UPLOAD.t"
    )
    assert response.status_code == 400 and str(len(secret)) not in response.text.split("ERROR")[-1]


def test_fits_doctype_and_entities_are_refused(live_vo: LiveVO) -> None:
    fits = (
        b'<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
        b'<TABLE><FIELD name="b" datatype="int"/><DATA><FITS extnum="1"><STREAM>AAAA</STREAM></FITS>'
        b"</DATA></TABLE></RESOURCE></VOTABLE>"
    )
    entity = (
        b'<?xml version="1.0"?><!DOCTYPE VOTABLE [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        b'<VOTABLE version="1.3"><RESOURCE><TABLE><FIELD name="a" datatype="char" arraysize="*"/><DATA>'
        b"<TABLEDATA><TR><TD>&x;</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
    )
    for document, words in ((fits, "FITS data"), (entity, "DOCTYPE")):
        response = _post(live_vo.url, document)
        assert response.status_code == 400 and words in response.text, response.text


# ---- upload by URL ---------------------------------------------------------------------------------------


class _Files(BaseHTTPRequestHandler):
    """Serves /t.xml (the inline VOTable) and /hop?to=URL (a redirect); counts the requests it gets."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path.startswith("/hop?to="):
            self.send_response(302)
            self.send_header("Location", self.path[len("/hop?to=") :])
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-votable+xml")
        self.send_header("Content-Length", str(len(INLINE)))
        self.end_headers()
        self.wfile.write(INLINE)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(host: str) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_Files,), {"hits": hits})
    server = ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_files() -> Iterator[tuple[str, list[str]]]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other_loopback_files() -> Iterator[tuple[str, list[str]]]:
    yield from _serve("127.0.0.2")


def _by_url(url: str, upload_url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT SUM(a) AS s FROM TAP_UPLOAD.t", "UPLOAD": f"t,{upload_url}"},
        timeout=60,
    )


def test_a_loopback_url_is_refused_by_default(live_vo: LiveVO, loopback_files: tuple[str, list[str]]) -> None:
    base, hits = loopback_files
    for url in (f"{base}/t.xml", f"http://localhost:{base.rsplit(':', 1)[1]}/t.xml"):
        response = _by_url(live_vo.url, url)
        assert response.status_code == 400 and "loopback" in response.text, response.text
    # The service on the server's own network was never contacted.
    assert hits == []
    for internal in (
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/t.xml",
        "http://[::1]/t.xml",
    ):
        response = _by_url(live_vo.url, internal)
        assert response.status_code == 400 and "private, loopback" in response.text, internal


def test_the_allow_list_opens_a_host_but_not_a_redirect_to_another(
    live_vo: LiveVO, loopback_files: tuple[str, list[str]], other_loopback_files: tuple[str, list[str]]
) -> None:
    allowed, allowed_hits = other_loopback_files
    refused, refused_hits = loopback_files
    config = live_vo.deployment.config
    config.vo_upload_allow = ["127.0.0.2/32"]
    try:
        response = _by_url(live_vo.url, f"{allowed}/t.xml")
        assert response.status_code == 200 and "<TD>83</TD>" in response.text, response.text
        # A redirect within the allowed host is followed ...
        response = _by_url(live_vo.url, f"{allowed}/hop?to=/t.xml")
        assert response.status_code == 200 and "<TD>83</TD>" in response.text, response.text
        # ... one to a loopback address that is not allowed is refused before it is requested.
        response = _by_url(live_vo.url, f"{allowed}/hop?to={refused}/t.xml")
        assert response.status_code == 400 and "loopback" in response.text, response.text
        assert refused_hits == [] and allowed_hits.count("/t.xml") == 2
        # Endless redirects end.
        loop = f"{allowed}/hop?to={allowed}/hop?to={allowed}/hop?to={allowed}/hop?to={allowed}/t.xml"
        response = _by_url(live_vo.url, loop)
        assert response.status_code == 400 and "redirects more than" in response.text
    finally:
        config.vo_upload_allow = []


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7f000001/t.xml",
        "http://2130706433/t.xml",
        "http://[::ffff:127.0.0.1]/t.xml",
        "http://0.0.0.0/t.xml",
        "http://user@127.0.0.1/t.xml",
        "https://192.168.1.1/t.xml",
        "http:///t.xml",
        "http://no-such-host.invalid/t.xml",
    ],
)
def test_disguised_internal_urls_are_refused(live_vo: LiveVO, url: str) -> None:
    response = _by_url(live_vo.url, url)
    assert response.status_code == 400 and 'value="ERROR"' in response.text, response.text
    assert "Traceback" not in response.text
