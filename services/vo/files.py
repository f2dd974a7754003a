"""The image files of ivoa.ObsCore over HTTP at /files/{publisher DID}.

ObsCore keeps where the Data Backbone holds each file (a ``file://`` URI of the server); clients get
``{base}/files/{DID}`` instead (SIA results, DataLink #this links), never the server path. The file is
streamed with its ObsCore ``access_format`` as MIME type, after :func:`authorize_file` agreed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from dms.services.vo.errors import ServiceError
from dms.services.vo.http import Context, guarded

DID_COLUMN = "obs_publisher_did"
URL_COLUMN = "access_url"


def authorize_file(request: Request, did: str) -> None:
    """Whether the client of `request` may read the file of image `did`; raise ServiceError(status=403)
    to refuse. Every image is public for now: the authorisation of the VO services replaces this body."""
    del request, did


def file_url(base: str, did: str) -> str:
    """The public URL of an image file."""
    return f"{base}/files/{quote(did, safe='')}"


def public_access_urls(table: pa.Table, base: str) -> pa.Table:
    """`table` with every server-local access_url (file:// or a bare path) replaced by its /files URL.

    Rows without a publisher DID, or all rows when there is no base URL (an async job's result), lose such
    a URL (None) rather than show where the server keeps files.
    """
    if URL_COLUMN not in table.column_names:
        return table
    urls = table[URL_COLUMN].to_pylist()
    dids = table[DID_COLUMN].to_pylist() if DID_COLUMN in table.column_names else [None] * len(urls)
    public = [
        (file_url(base, did) if did and base else None) if url is not None and _is_local(url) else url
        for url, did in zip(urls, dids, strict=True)
    ]
    index = table.column_names.index(URL_COLUMN)
    return table.set_column(index, table.schema.field(index), pa.array(public, type=pa.string()))


def _is_local(url: str) -> bool:
    return url.startswith(("file:", "/"))


def local_path(url: str) -> Path | None:
    """The server path of a file:// access URL (None for a remote URL)."""
    if url.startswith("/"):
        return Path(url)
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parts.path))


class ImageFiles:
    """GET /files/{DID}: the image file itself, streamed."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def _find(self, did: str) -> tuple[Path, str]:
        quoted = did.replace("'", "''")
        rows = self.context.executor.execute(
            f"SELECT access_url, access_format FROM ivoa.ObsCore WHERE obs_publisher_did = '{quoted}'",
            lang="adql",
            max_rows=2,
            timeout=30,
        ).table.to_pylist()
        if not rows:
            raise ServiceError(f"no image with ID {did}", status=404)
        url, mime = rows[0]["access_url"], rows[0]["access_format"]
        path = local_path(url) if url else None
        if path is None or not path.is_file():
            raise ServiceError(f"the file of image {did} is not available on this server", status=404)
        return path, mime or "application/octet-stream"

    async def download(self, request: Request) -> Response:
        did = request.path_params["did"]
        authorize_file(request, did)
        path, mime = await run_in_threadpool(self._find, did)
        name = path.name.replace('"', "")
        return FileResponse(
            path, media_type=mime, headers={"Content-Disposition": f'inline; filename="{name}"'}
        )

    def routes(self) -> list[Route]:
        return [Route("/files/{did:path}", guarded(self.download), methods=["GET", "HEAD"])]
