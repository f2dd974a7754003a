"""The Python client of a DMS deployment's services, for notebooks and scripts (issue 18, notebook access).

Built on pyvo: ``Client(url, token)`` logs in with a bearer token (``DMS_URL`` and ``DMS_TOKEN`` by default,
as `dms notebook` sets them) and returns astropy tables (or pandas frames) for ADQL queries, cone searches
(SCS), image searches (SIA 2.0) and APDB light curves, and manages the user's workspace through the JSON
API (/api/workspace): upload a table, save a query result, share, drop::

    from dms.client import Client
    dms = Client()                      # DMS_URL, DMS_TOKEN
    stars = dms.query("SELECT TOP 10 * FROM cat.gaia")
    dms.upload(stars, "mine")           # then: SELECT * FROM user_<me>.mine
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pyvo
import requests
from astropy.table import Table

from dms.errors import DMSError

ENV_URL = "DMS_URL"
ENV_TOKEN = "DMS_TOKEN"
TIMEOUT = 300.0
LIGHT_CURVE = (
    'SELECT "diaSourceId", "midpointMjdTai", band, "psfFlux", "psfFluxErr", ra, dec, visit, detector '
    'FROM apdb."DiaSource" WHERE "diaObjectId" = {id} ORDER BY "midpointMjdTai", "diaSourceId"'
)


class ClientError(DMSError):
    """A request the services refused, with their message and HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """A session with one deployment's services for one user (or anonymous, without a token)."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        url = url or os.environ.get(ENV_URL)
        if not url:
            raise ClientError(f"no service URL: pass Client(url) or set {ENV_URL} (dms notebook sets it)")
        self.url = url.rstrip("/")
        self.session = requests.Session()
        token = token if token is not None else os.environ.get(ENV_TOKEN)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.tap = pyvo.dal.TAPService(f"{self.url}/tap", session=self.session)

    def __repr__(self) -> str:  # never shows the token
        return f"Client({self.url!r})"

    # ---- queries ----------------------------------------------------------------------------------------

    def query(self, adql: str, *, maxrec: int | None = None, uploads: dict[str, Any] | None = None) -> Table:
        """Run an ADQL query (TAP sync) and return its rows as an astropy Table."""
        try:
            return self.tap.run_sync(adql, maxrec=maxrec, uploads=uploads).to_table()
        except pyvo.dal.DALServiceError as exc:
            raise ClientError(str(exc), getattr(exc, "code", None)) from None
        except pyvo.dal.DALQueryError as exc:
            raise ClientError(str(exc)) from None

    def to_pandas(self, adql: str, **options: Any) -> Any:
        """The rows of an ADQL query as a pandas DataFrame."""
        return self.query(adql, **options).to_pandas()

    def cone(self, ra: float, dec: float, radius: float, table: str = "cat.gaia") -> Table:
        """Rows of a published table within `radius` degrees of (ra, dec), by the cone search service."""
        service = pyvo.dal.SCSService(f"{self.url}/scs/{table}", session=self.session)
        try:
            return service.search((ra, dec), radius).to_table()
        except (pyvo.dal.DALServiceError, pyvo.dal.DALQueryError) as exc:
            raise ClientError(str(exc)) from None

    def images(self, ra: float, dec: float, radius: float = 0.0) -> Table:
        """Images (ObsCore rows) covering (ra, dec), or within `radius` degrees of it, by SIA 2.0."""
        response = self._get(
            "/sia/query", params={"POS": f"CIRCLE {ra} {dec} {radius or 1e-9}", "RESPONSEFORMAT": "votable"}
        )
        return Table.read(io.BytesIO(response.content), format="votable")

    def light_curve(self, dia_object_id: int) -> Table:
        """The DiaSource history of an APDB object (time-ordered psfFlux per band), where the APDB is
        published to the caller (QA and Commissioning instances)."""
        return self.query(LIGHT_CURVE.format(id=int(dia_object_id)))

    @staticmethod
    def plot_light_curve(curve: Table, ax: Any = None) -> Any:
        """Plot a light curve (matplotlib, if installed): psfFlux against time, one series per band."""
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]

        ax = ax or plt.figure().gca()
        for band in sorted(set(curve["band"])):
            rows = curve[curve["band"] == band]
            ax.errorbar(rows["midpointMjdTai"], rows["psfFlux"], rows["psfFluxErr"], fmt="o", label=band)
        ax.set_xlabel("MJD (TAI)")
        ax.set_ylabel("psfFlux (nJy)")
        ax.legend()
        return ax

    # ---- the workspace ----------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return dict(self._get("/api/whoami").json())

    def workspace(self) -> dict[str, Any]:
        """The user's tables, quota and the tables shared with them."""
        return dict(self._get("/api/workspace/tables").json())

    def upload(self, table: Table | str | Path, name: str, *, replace: bool = False) -> dict[str, Any]:
        """Store an astropy Table, or a file (CSV, Parquet, VOTable, FITS), as workspace table `name`."""
        if isinstance(table, Table):
            buffer = io.BytesIO()
            table.write(buffer, format="votable")
            filename, content = f"{name}.vot", buffer.getvalue()
        else:
            path = Path(table)
            filename, content = path.name, path.read_bytes()
        response = self._request(
            "POST",
            "/api/workspace/tables",
            data={"name": name, "replace": str(replace).lower()},
            files={"file": (filename, content)},
        )
        return dict(response.json())

    def save(self, name: str, adql: str, *, replace: bool = False) -> dict[str, Any]:
        """Save the result of an ADQL query as workspace table `name`."""
        body = {"name": name, "query": adql, "replace": replace}
        return dict(self._request("POST", "/api/workspace/results", json=body).json())

    def share(self, name: str, *, user: str | None = None, group: str | None = None) -> None:
        self._request("POST", f"/api/workspace/tables/{name}/shares", json={"user": user, "group": group})

    def unshare(self, name: str, *, user: str | None = None, group: str | None = None) -> None:
        kind, grantee = ("user", user) if user else ("group", group)
        self._request("DELETE", f"/api/workspace/tables/{name}/shares/{kind}/{grantee}")

    def drop(self, name: str) -> None:
        self._request("DELETE", f"/api/workspace/tables/{name}")

    # ---- HTTP -------------------------------------------------------------------------------------------

    def _get(self, path: str, **options: Any) -> requests.Response:
        return self._request("GET", path, **options)

    def _request(self, method: str, path: str, **options: Any) -> requests.Response:
        if isinstance(options.get("json"), dict):
            options["json"] = {k: v for k, v in options["json"].items() if v is not None}
        response = self.session.request(method, f"{self.url}{path}", timeout=TIMEOUT, **options)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ClientError(f"{method} {path}: {response.status_code} {message}", response.status_code)
        return response
