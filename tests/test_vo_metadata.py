"""Result columns carry the units and UCDs of their own table's column (never another table's column of the
same name; none for expressions and uploads); `dms load` takes units and UCDs from the file and from
--unit/--ucd into TAP_SCHEMA, so IN_UNIT works on catalog tables; a NULL boolean is valid VOTable
(issue 11, item 11)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io.votable import parse
from astropy.table import Table
from click.testing import CliRunner
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)

from dms.cli import main


def _fields(live: MetaVO, query: str) -> dict[str, tuple[str | None, str | None]]:
    """(unit, ucd) of each FIELD of the TAP result of `query`."""
    response = httpx.post(f"{live.url}/tap/sync", data={"LANG": "ADQL", "QUERY": query}, timeout=60)
    assert response.status_code == 200, response.text
    table = parse(io.BytesIO(response.content)).get_first_table()
    return {f.name: (str(f.unit) if f.unit is not None else None, f.ucd) for f in table.fields}


def _published(live: MetaVO, table: str) -> dict[str, tuple[str | None, str | None]]:
    with live.deployment.engine().connect() as conn:
        rows = conn.execute(
            sa.text("SELECT column_name, unit, ucd FROM tap_schema.columns WHERE table_name = :t"),
            {"t": table},
        ).all()
    return {name: (unit, ucd) for name, unit, ucd in rows}


def test_each_column_has_its_own_tables_metadata(meta_vo: MetaVO) -> None:
    assert _fields(meta_vo, "SELECT mag, name FROM survey.obj") == {
        "mag": ("mag", "phot.mag;em.opt.R"),
        "name": (None, "meta.id"),
    }
    assert _fields(meta_vo, "SELECT mag, name FROM cat.objects") == {
        "mag": ("mag", "phot.mag;em.opt.G"),
        "name": (None, None),
    }
    assert _fields(meta_vo, "SELECT TOP 3 * FROM cat.objects")["id"] == (None, "meta.id;meta.main")
    # Through a derived table and a CTE, under another name: still survey.obj's mag.
    assert _fields(meta_vo, "SELECT x.m FROM (SELECT mag AS m FROM survey.obj) AS x")["m"] == (
        "mag",
        "phot.mag;em.opt.R",
    )
    assert _fields(meta_vo, "WITH c AS (SELECT mag FROM cat.objects) SELECT c.mag FROM c")["mag"] == (
        "mag",
        "phot.mag;em.opt.G",
    )


def test_expressions_and_aggregates_borrow_nothing(meta_vo: MetaVO) -> None:
    fields = _fields(meta_vo, "SELECT mag + 1 AS mag, COUNT(*) AS ra FROM survey.obj GROUP BY mag")
    assert fields == {"mag": (None, None), "ra": (None, None)}


def test_uploaded_columns_borrow_nothing(meta_vo: MetaVO) -> None:
    upload = (
        b'<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
        b'<TABLE><FIELD name="ra" datatype="double"/><FIELD name="dec" datatype="double"/>'
        b'<FIELD name="mag" datatype="double"/><DATA><TABLEDATA><TR><TD>10</TD><TD>20</TD><TD>1</TD></TR>'
        b"</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
    )
    response = httpx.post(
        f"{meta_vo.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t", "UPLOAD": "t,param:f"},
        files={"f": ("t.xml", upload)},
    )
    assert response.status_code == 200, response.text
    fields = parse(io.BytesIO(response.content)).get_first_table().fields
    assert [(f.name, f.unit, f.ucd) for f in fields] == [
        ("ra", None, None),
        ("dec", None, None),
        ("mag", None, None),
    ]


def test_loaded_files_give_units_and_ucds(meta_vo: MetaVO) -> None:
    gaia = _published(meta_vo, "cat.gaia")
    assert gaia["ra"] == ("deg", "pos.eq.ra;meta.main")  # unit from Parquet field metadata
    assert gaia["phot_g_mean_mag"] == ("mag", "phot.mag;em.opt")  # ucd from TableOptions.ucds
    objects = _published(meta_vo, "cat.objects")
    assert objects["ra"][0] == "deg" and objects["mag"] == ("mag", "phot.mag;em.opt.G")  # FITS TUNIT/TUCD
    assert objects["id"] == (None, "meta.id;meta.main")


def test_in_unit_on_a_loaded_catalog_table(meta_vo: MetaVO) -> None:
    response = httpx.post(
        f"{meta_vo.url}/tap/sync",
        data={
            "LANG": "ADQL",
            "QUERY": "SELECT TOP 20 source_id, IN_UNIT(ra, 'arcsec') AS ra_as FROM cat.gaia "
            "ORDER BY source_id",
        },
    )
    assert response.status_code == 200, response.text
    got = Table.read(io.BytesIO(response.content), format="votable")
    truth = {int(s): float(r) for s, r in zip(meta_vo.gaia["source_id"], meta_vo.gaia["ra"], strict=True)}
    assert len(got) == 20
    for source_id, ra_as in zip(got["source_id"], got["ra_as"], strict=True):
        assert ra_as == pytest.approx(truth[int(source_id)] * 3600, rel=1e-12)
    # A column that has no unit is still refused clearly.
    response = httpx.post(
        f"{meta_vo.url}/tap/sync",
        data={"LANG": "ADQL", "QUERY": "SELECT IN_UNIT(mag_b, 'mag') FROM cat.gaia"},
    )
    assert response.status_code == 400 and "unit of mag_b is not known" in response.text


def test_dms_load_unit_and_ucd_options(meta_vo: MetaVO, tmp_path: Path) -> None:
    table = Table(
        {
            "sid": np.arange(1, 51),
            "ra": np.linspace(1, 50, 50),
            "dec": np.linspace(-10, 10, 50),
            "flux": np.ones(50),
        }
    )
    table["ra"].unit = "deg"
    table["flux"].meta["ucd"] = "phot.flux"
    path = tmp_path / "stars.vot"
    table.write(path, format="votable")
    base = [
        "--data-dir",
        str(meta_vo.deployment.data_dir),
        "load",
        "stars",
        str(path),
        "--create",
        "--ra",
        "ra",
    ]
    base += ["--dec", "dec", "--id", "sid", "-q"]
    bad = CliRunner().invoke(main, [*base, "--unit", "nope=deg"])
    assert bad.exit_code != 0 and "--unit names ['nope']" in bad.output
    bad = CliRunner().invoke(main, [*base, "--unit", "flux=furlongs"])
    assert bad.exit_code != 0 and "not a VOUnit" in bad.output
    bad = CliRunner().invoke(main, [*base, "--ucd", "flux"])
    assert bad.exit_code != 0 and "is not COLUMN=VALUE" in bad.output
    done = CliRunner().invoke(
        main, [*base, "--unit", "flux=mJy", "--unit", "dec=deg", "--ucd", "sid=meta.id"]
    )
    assert done.exit_code == 0, done.output
    published = _published(meta_vo, "cat.stars")
    assert published["ra"] == ("deg", "pos.eq.ra;meta.main")  # the file's unit
    assert published["dec"] == ("deg", "pos.eq.dec;meta.main")  # --unit
    assert published["flux"] == ("mJy", "phot.flux")  # --unit over nothing, the file's ucd
    assert published["sid"][1] == "meta.id"  # --ucd over the id column's default


def test_an_uploaded_null_boolean_is_valid_votable(meta_vo: MetaVO) -> None:
    upload = (
        b'<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE>'
        b'<TABLE><FIELD name="k" datatype="int"/><FIELD name="b" datatype="boolean"/><DATA><TABLEDATA>'
        b"<TR><TD>1</TD><TD>T</TD></TR><TR><TD>2</TD><TD/></TR><TR><TD>3</TD><TD>F</TD></TR>"
        b"</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
    )
    for fmt in ("votable", "votable/b2"):
        response = httpx.post(
            f"{meta_vo.url}/tap/sync",
            data={
                "LANG": "ADQL",
                "QUERY": "SELECT k, b FROM TAP_UPLOAD.t ORDER BY k",
                "UPLOAD": "t,param:f",
                "RESPONSEFORMAT": fmt,
            },
            files={"f": ("t.xml", upload)},
        )
        assert response.status_code == 200, response.text
        parse(io.BytesIO(response.content), verify="exception")  # no VOTable warning at all
        values = Table.read(io.BytesIO(response.content), format="votable")["b"]
        assert values.mask.tolist() == [False, True, False] and values[0] and not values[2]
        if shutil.which("stilts"):
            lint = subprocess.run(
                ["stilts", "votlint", "-"], input=response.content, capture_output=True, timeout=120
            )
            assert b"ERROR" not in lint.stdout + lint.stderr, lint.stdout.decode()
