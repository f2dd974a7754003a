"""VOSI 1.1: capabilities (with TAPRegExt for TAP), availability and the table set (VODataService)."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from dms.services.vo import formats
from dms.services.vo.tap_schema import Column, Table

CAPABILITIES_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0" '
    'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">\n'
)

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


def vosi_capabilities(base: str, service: str, *, examples: bool = False) -> str:
    """The VOSI capabilities, availability (and DALI examples) entries of a service at base/service."""
    entries = [
        ("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/{service}/capabilities"),
        ("ivo://ivoa.net/std/VOSI#availability", f"{base}/{service}/availability"),
    ]
    if service == "tap":
        entries.append(("ivo://ivoa.net/std/VOSI#tables-1.1", f"{base}/tap/tables"))
    if examples:
        entries.append(("ivo://ivoa.net/std/DALI#examples", f"{base}/{service}/examples"))
    return "".join(
        f'<capability standardID="{sid}"><interface xsi:type="vs:ParamHTTP">'
        f'<accessURL use="full">{escape(url)}</accessURL></interface></capability>\n'
        for sid, url in entries
    )


def tap_capabilities(base: str, *, upload_limit: int, default_rows: int, hard_rows: int) -> str:
    features = "".join(
        f'<languageFeatures type="{kind}">'
        + "".join(
            f"<feature><form>{escape(form)}</form>"
            + (f"<description>{escape(text)}</description>" if text else "")
            + "</feature>"
            for form, text in items
        )
        + "</languageFeatures>"
        for kind, items in ADQL_FEATURES.items()
    )
    outputs = "".join(
        (f'<outputFormat ivo-id="{ivo_id}">' if ivo_id else "<outputFormat>")
        + f"<mime>{escape(fmt.mime)}</mime><alias>{fmt.aliases[0]}</alias></outputFormat>"
        for fmt, ivo_id in OUTPUT_IDS.items()
    )
    return (
        CAPABILITIES_HEAD + '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        '<interface xsi:type="vs:ParamHTTP" role="std" version="1.1"><accessURL '
        f'use="base">{escape(base)}/tap</accessURL></interface>'
        '<dataModel ivo-id="ivo://ivoa.net/std/ObsCore#core-1.1">ObsCore-1.1</dataModel>'
        '<language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.1">2.1</version>'
        "<description>ADQL 2.1, translated to PostgreSQL or DuckDB by DMS (ICRS only)</description>"
        f"{features}</language>"
        f"{outputs}"
        '<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-inline"/>'
        '<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-http"/>'
        '<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-https"/>'
        "<retentionPeriod><default>604800</default><hard>604800</hard></retentionPeriod>"
        "<executionDuration><default>600</default><hard>3600</hard></executionDuration>"
        f'<outputLimit><default unit="row">{default_rows}</default><hard '
        f'unit="row">{hard_rows}</hard></outputLimit>'
        f'<uploadLimit><hard unit="byte">{upload_limit}</hard></uploadLimit>'
        "</capability>\n" + vosi_capabilities(base, "tap", examples=True) + "</vosi:capabilities>\n"
    )


def service_capabilities(base: str, service: str, standard_id: str, access_url: str) -> str:
    """Capabilities of a simple DAL service (SCS, SIA, DataLink)."""
    return (
        CAPABILITIES_HEAD
        + f'<capability standardID="{standard_id}"><interface xsi:type="vs:ParamHTTP" role="std">'
        f'<accessURL use="base">{escape(access_url)}</accessURL></interface></capability>\n'
        + vosi_capabilities(base, service)
        + "</vosi:capabilities>\n"
    )


def availability(available: bool, note: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<avail:availability xmlns:avail="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        f"<avail:available>{'true' if available else 'false'}</avail:available>"
        f"<avail:note>{escape(note)}</avail:note></avail:availability>\n"
    )


def _column_xml(column: Column) -> str:
    optional = "".join(
        f"<{tag}>{escape(value)}</{tag}>"
        for tag, value in (
            ("description", column.description),
            ("unit", column.unit),
            ("ucd", column.ucd),
            ("utype", column.utype),
        )
        if value
    )
    arraysize = f' arraysize="{escape(column.arraysize)}"' if column.arraysize else ""
    xtype = f' extendedType="{escape(column.xtype)}"' if column.xtype else ""
    flags = "".join(
        f"<flag>{f}</flag>"
        for f, on in (("indexed", column.indexed), ("std", column.std), ("principal", column.principal))
        if on
    )
    return (
        f"<column><name>{escape(column.name)}</name>{optional}"
        "<dataType "
        f'xsi:type="vs:VOTableType"{arraysize}{xtype}>{escape(column.datatype)}</dataType>{flags}</column>'
    )


def _table_xml(
    table: Table, keys: Sequence[tuple[str, str, str, list[tuple[str, str]]]], detail: bool
) -> str:
    description = f"<description>{escape(table.description)}</description>" if table.description else ""
    columns = "".join(_column_xml(c) for c in table.columns) if detail else ""
    foreign = "".join(
        f"<foreignKey><targetTable>{escape(target)}</targetTable>"
        + "".join(
            f"<fkColumn><fromColumn>{escape(a)}</fromColumn><targetColumn>{escape(b)}</targetColumn></fkColumn>"
            for a, b in pairs
        )
        + "</foreignKey>"
        for _, source, target, pairs in keys
        if source == table.name and detail
    )
    head = f'<table type="{escape(table.table_type)}"><name>{escape(table.name)}</name>'
    return f"{head}{description}{columns}{foreign}</table>"


_TABLESET_NS = (
    'xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
    'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)


def tableset(
    tables: Sequence[Table], keys: Sequence[tuple[str, str, str, list[tuple[str, str]]]], detail: bool = True
) -> str:
    schemas: dict[str, list[Table]] = {}
    for table in tables:
        schemas.setdefault(table.schema, []).append(table)
    body = "".join(
        f"<schema><name>{escape(name)}</name>"
        + "".join(_table_xml(t, keys, detail) for t in members)
        + "</schema>"
        for name, members in schemas.items()
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<vosi:tableset {_TABLESET_NS}>{body}</vosi:tableset>\n'


def single_table(table: Table, keys: Sequence[tuple[str, str, str, list[tuple[str, str]]]]) -> str:
    xml = _table_xml(table, keys, True).replace("<table ", f"<vosi:table {_TABLESET_NS} ", 1)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + xml[: -len("</table>")] + "</vosi:table>\n"
