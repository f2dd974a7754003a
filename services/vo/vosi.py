"""VOSI 1.1: capabilities (with TAPRegExt for TAP), availability and the table set (VODataService),
built from the vo-models models (PyPI `vo-models`, which Rubin's services use) and written by pydantic-xml.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import AnyUrl, field_validator
from pydantic_xml import BaseXmlModel
from vo_models.tapregext import models as tr
from vo_models.vodataservice import models as vs
from vo_models.voresource.models import AccessURL, Capability
from vo_models.vosi.availability.models import Availability
from vo_models.vosi.capabilities.models import VOSICapabilities
from vo_models.vosi.tables.models import VOSITable, VOSITableSet

from dms.services.vo import formats
from dms.services.vo.tap_schema import Column, Table

Keys = Sequence[tuple[str, str, str, list[tuple[str, str]]]]
"""TAP_SCHEMA keys: (key id, from table, target table, [(from column, target column)])."""

GEOMETRY = (
    "POINT",
    "CIRCLE",
    "BOX",
    "POLYGON",
    "REGION",
    "CONTAINS",
    "INTERSECTS",
    "DISTANCE",
    "AREA",
    "CENTROID",
    "COORD1",
    "COORD2",
    "COORDSYS",
)
ADQL_FEATURES: dict[str, list[tuple[str, str | None]]] = {
    "ivo://ivoa.net/std/TAPRegExt#features-adqlgeo": [(g, None) for g in GEOMETRY],
    "ivo://ivoa.net/std/TAPRegExt#features-adql-string": [("LOWER", None), ("ILIKE", None)],
    "ivo://ivoa.net/std/TAPRegExt#features-adql-offset": [("OFFSET", None)],
    "ivo://ivoa.net/std/TAPRegExt#features-adql-type": [("CAST", None)],
    "ivo://ivoa.net/std/TAPRegExt#features-adql-unit": [("IN_UNIT", None)],
    "ivo://ivoa.net/std/TAPRegExt#features-adql-common-table": [("WITH", None)],
    "ivo://ivoa.net/std/TAPRegExt#features-adql-sets": [
        ("UNION", None),
        ("EXCEPT", None),
        ("INTERSECT", None),
    ],
    "ivo://ivoa.net/std/TAPRegExt#features-udf": [
        (
            "ivo_hasword(haystack TEXT, needle TEXT) -> INTEGER",
            "1 if needle is a word of haystack, ignoring case",
        ),
        (
            "ivo_nocasematch(value TEXT, pattern TEXT) -> INTEGER",
            "1 if value matches the LIKE pattern, ignoring case",
        ),
        (
            "ivo_hashlist_has(hashlist TEXT, item TEXT) -> INTEGER",
            "1 if item is in the #-separated list, ignoring case",
        ),
        ("ivo_string_agg(expr TEXT, delim TEXT) -> TEXT", "aggregate: the values joined by delim"),
        (
            "ivo_interval_overlaps(l1 DOUBLE, h1 DOUBLE, l2 DOUBLE, h2 DOUBLE) -> INTEGER",
            "1 if [l1, h1] and [l2, h2] overlap",
        ),
        (
            "ivo_healpix_index(order INTEGER, ra DOUBLE, dec DOUBLE) -> BIGINT",
            "nested HEALPix index of a position (degrees)",
        ),
        ("ivo_to_mjd(t TIMESTAMP) -> DOUBLE", "modified Julian date of a timestamp"),
        ("ivo_to_jd(t TIMESTAMP) -> DOUBLE", "Julian date of a timestamp"),
        (
            "scisql_angSep(ra1 DOUBLE, dec1 DOUBLE, ra2 DOUBLE, dec2 DOUBLE) -> DOUBLE",
            "angular separation in degrees",
        ),
        ("scisql_nanojanskyToAbMag(flux DOUBLE) -> DOUBLE", "AB magnitude of a flux in nJy"),
    ],
}
OUTPUT_IDS = {
    formats.VOTABLE: "ivo://ivoa.net/std/TAPRegExt#output-votable-td",
    formats.VOTABLE_B2: "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2",
    formats.CSV: None,
    formats.TSV: None,
    formats.JSON: None,
    formats.PARQUET: None,
    formats.FITS: None,  # TAPRegExt defines no standard key for FITS output (taplint: E-CAP-XOFK-1)
}


def _param_http(
    url: str, use: Literal["full", "base"], *, role: str | None = None, version: str | None = None
) -> vs.ParamHTTP:
    return vs.ParamHTTP(role=role, version=version, access_url=[AccessURL(value=AnyUrl(url), use=use)])


def _vosi_entries(base: str, service: str, *, examples: bool = False) -> list[Capability]:
    """The VOSI capabilities, availability (and DALI examples) entries of a service at base/service."""
    entries = [
        ("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/{service}/capabilities"),
        ("ivo://ivoa.net/std/VOSI#availability", f"{base}/{service}/availability"),
    ]
    if service == "tap":
        entries.append(("ivo://ivoa.net/std/VOSI#tables-1.1", f"{base}/tap/tables"))
    if examples:
        entries.append(("ivo://ivoa.net/std/DALI#examples", f"{base}/{service}/examples"))
    return [Capability(standard_id=AnyUrl(sid), interface=[_param_http(url, "full")]) for sid, url in entries]


def tap_capabilities(base: str, *, upload_limit: int, default_rows: int, hard_rows: int) -> str:
    language = tr.Language(
        name="ADQL",
        version=[
            tr.Version(value="2.0", ivo_id="ivo://ivoa.net/std/ADQL#v2.0"),
            tr.Version(value="2.1", ivo_id="ivo://ivoa.net/std/ADQL#v2.1"),
        ],
        description="ADQL 2.1, translated to PostgreSQL or DuckDB by DMS (ICRS only)",
        language_features=[
            tr.LanguageFeatureList(
                type=kind, feature=[tr.LanguageFeature(form=form, description=text) for form, text in items]
            )
            for kind, items in ADQL_FEATURES.items()
        ],
    )
    table_access = tr.TableAccess(
        interface=[_param_http(f"{base}/tap", "base", role="std", version="1.1")],
        data_model=[tr.DataModelType(value="ObsCore-1.1", ivo_id="ivo://ivoa.net/std/ObsCore#core-1.1")],
        language=[language],
        output_format=[
            tr.OutputFormat(mime=fmt.mime, alias=[fmt.aliases[0]], ivo_id=ivo_id)
            for fmt, ivo_id in OUTPUT_IDS.items()
        ],
        upload_method=[
            tr.UploadMethod(ivo_id=f"ivo://ivoa.net/std/TAPRegExt#upload-{kind}")
            for kind in ("inline", "http", "https")
        ],
        retention_period=tr.TimeLimits(default=604800, hard=604800),
        execution_duration=tr.TimeLimits(default=600, hard=3600),
        output_limit=tr.DataLimits(
            default=tr.DataLimit(value=default_rows, unit="row"),
            hard=tr.DataLimit(value=hard_rows, unit="row"),
        ),
        upload_limit=tr.DataLimits(hard=tr.DataLimit(value=upload_limit, unit="byte")),
    )
    capabilities = [table_access, *_vosi_entries(base, "tap", examples=True)]
    return _document(VOSICapabilities(capability=capabilities))


def service_capabilities(base: str, service: str, standard_id: str, access_url: str) -> str:
    """Capabilities of a simple DAL service (SCS, SIA, DataLink)."""
    own = Capability(standard_id=AnyUrl(standard_id), interface=[_param_http(access_url, "base", role="std")])
    return _document(VOSICapabilities(capability=[own, *_vosi_entries(base, service)]))


def availability(available: bool, note: str) -> str:
    return _document(Availability(available=available, note=[note]))


class _TableColumn(vs.TableParam, tag="column"):
    """A column as TAP_SCHEMA names and describes it.

    vo-models' TableParam puts ADQL reserved words in quotes and XML-escapes descriptions itself; /tables
    must name a column exactly as TAP_SCHEMA.columns does (taplint compares the two), and pydantic-xml
    escapes text already (escaping twice would show "&amp;" to clients)."""

    @field_validator("column_name")
    def validate_colname(cls, value: str) -> str:
        return value

    @field_validator("description")
    def validate_description(cls, value: str | None) -> str | None:
        return value


def _column(column: Column) -> _TableColumn:
    return _TableColumn(
        column_name=column.name,
        description=column.description or None,
        unit=column.unit or None,
        ucd=column.ucd or None,
        utype=column.utype or None,
        xtype=column.xtype or None,
        datatype=vs.DataType(value=column.datatype, arraysize=column.arraysize or None),
        flag=[
            f
            for f, on in (("indexed", column.indexed), ("std", column.std), ("principal", column.principal))
            if on
        ],
    )


def _table_fields(table: Table, keys: Keys, detail: bool) -> dict[str, Any]:
    foreign = [
        vs.ForeignKey(
            target_table=target, fk_column=[vs.FKColumn(from_column=a, target_column=b) for a, b in pairs]
        )
        for _, source, target, pairs in keys
        if source == table.name and detail
    ]
    return {
        "table_type": table.table_type,
        "table_name": table.name,
        "description": table.description or None,
        "column": [_column(c) for c in table.columns] if detail else [],
        "foreign_key": foreign,
    }


def _table(model: type[vs.Table], table: Table, keys: Keys, detail: bool) -> vs.Table:
    fields = _table_fields(table, keys, detail)
    described = model(**fields)
    # vo-models' Table XML-escapes its text on the way in and pydantic-xml escapes it again on the way out:
    # keep the text as it is, so a client reads "a & b", not "a &amp; b"
    for name, value in fields.items():
        if isinstance(value, str):
            setattr(described, name, value)
    return described


def tableset(tables: Sequence[Table], keys: Keys, detail: bool = True) -> str:
    schemas: dict[str, list[Table]] = {}
    for table in tables:
        schemas.setdefault(table.schema, []).append(table)
    return _document(
        VOSITableSet(
            tableset_schema=[
                vs.TableSchema(schema_name=name, table=[_table(vs.Table, t, keys, detail) for t in members])
                for name, members in schemas.items()
            ]
        )
    )


def single_table(table: Table, keys: Keys) -> str:
    return _document(_table(VOSITable, table, keys, True))


def _document(model: BaseXmlModel) -> str:
    body = model.to_xml(skip_empty=True, encoding="unicode")
    assert isinstance(body, str)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
