"""DataLink 1.1 at /datalink: the links of an image (by its ObsCore publisher DID).

Each ID gets the image file itself (#this, served at /files/{ID} when the server holds it) and, as a
service link, the cone search of its footprint in SIA (#cutout is not offered: DMS serves whole files).
An unknown ID gets a NotFoundFault row.
"""

from __future__ import annotations

from urllib.parse import quote

import pyarrow as pa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dms.services.vo import vosi
from dms.services.vo.errors import ServiceError
from dms.services.vo.files import file_url, local_path
from dms.services.vo.http import XML, Context, guarded, read_params
from dms.services.vo.votable import result_votable

MIME = "application/x-votable+xml;content=datalink"
MAX_IDS = 1000
COLUMNS = (
    "ID",
    "access_url",
    "service_def",
    "error_message",
    "semantics",
    "description",
    "content_type",
    "content_length",
)


class DataLink:
    def __init__(self, context: Context) -> None:
        self.context = context

    def links(self, ids: list[str], base: str) -> bytes:
        if not ids:
            raise ServiceError("ID is missing: give one or more publisher DIDs")
        if len(ids) > MAX_IDS:
            raise ServiceError(f"{len(ids)} IDs is more than the limit of {MAX_IDS}")
        quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
        found = self.context.executor.execute(
            "SELECT obs_publisher_did, access_url, access_format, obs_id FROM ivoa.ObsCore WHERE "
            f"obs_publisher_did IN ({quoted})",
            lang="adql",
            max_rows=10 * MAX_IDS,
            timeout=30,
        ).table.to_pylist()
        by_id = {r["obs_publisher_did"]: r for r in found}
        rows: list[dict[str, object]] = []
        for did in ids:
            image = by_id.get(did)
            if image is None:
                rows.append({"ID": did, "error_message": f"NotFoundFault: no image with ID {did}"})
                continue
            rows.append(
                {
                    "ID": did,
                    "access_url": _public_url(image["access_url"], base, did),
                    "semantics": "#this",
                    "description": f"the image {image['obs_id']}",
                    "content_type": image["access_format"],
                }
            )
            rows.append(
                {
                    "ID": did,
                    "access_url": f"{base}/sia/query?ID={quote(did, safe='')}",
                    "semantics": "#detached-header",
                    "description": "the ObsCore record of this image (SIA 2.0)",
                    "content_type": "application/x-votable+xml",
                }
            )
        table = pa.table(
            {
                c: pa.array(
                    [r.get(c) for r in rows], type=pa.int64() if c == "content_length" else pa.string()
                )
                for c in COLUMNS
            }
        )
        return result_votable(table)

    async def query(self, request: Request) -> Response:
        params = await read_params(request)
        body = await run_in_threadpool(self.links, params.all("ID"), str(request.base_url).rstrip("/"))
        return Response(body, media_type=MIME)

    async def capabilities(self, request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        xml = vosi.service_capabilities(
            base, "datalink", "ivo://ivoa.net/std/DataLink#links-1.1", f"{base}/datalink"
        )
        return Response(xml, media_type=XML)

    async def availability(self, request: Request) -> Response:
        return Response(vosi.availability(True, "DataLink accepting requests"), media_type=XML)

    def routes(self) -> list[Route]:
        return [
            Route("/datalink", guarded(self.query), methods=["GET", "POST"]),
            Route("/datalink/capabilities", guarded(self.capabilities), methods=["GET"]),
            Route("/datalink/availability", guarded(self.availability), methods=["GET"]),
        ]


def _public_url(url: str | None, base: str, did: str) -> str | None:
    """A remote access URL as it is; a file of this server as its /files URL (never the server path)."""
    if url is None:
        return None
    return file_url(base, did) if local_path(url) is not None else url
