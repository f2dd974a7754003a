"""ADQL -> PostgreSQL / DuckDB translation, against golden files, and the errors invalid ADQL gets."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlglot import exp

from dms import cli
from dms.query import adql
from dms.query.adql import AdqlError, grammar, parse, translate

HERE = Path(__file__).parent / "adql"
CASES: list[dict[str, str]] = yaml.safe_load((HERE / "translations.yaml").read_text())
ERRORS: list[dict[str, Any]] = yaml.safe_load((HERE / "errors.yaml").read_text())
UNITS = {"ra": "deg", "flux": "mJy"}


def unit_of(column: exp.Column) -> str | None:
    return UNITS.get(column.name)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("dialect", ["postgres", "duckdb"])
def test_translation_matches_golden_file(case: dict[str, str], dialect: str) -> None:
    assert translate(case["adql"], dialect, unit_of=unit_of) == case[dialect]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_translation_is_a_fixed_point(case: dict[str, str]) -> None:
    """The canonical SQL is itself accepted and unchanged: the engine may parse it again."""
    assert translate(case["postgres"], "postgres", unit_of=unit_of, strict=False) == case["postgres"]


@pytest.mark.parametrize("case", ERRORS, ids=[repr(c["adql"][:40]) for c in ERRORS])
def test_invalid_adql_is_rejected_with_position(case: dict[str, Any]) -> None:
    with pytest.raises(AdqlError) as info:
        parse(case["adql"], unit_of=unit_of)
    error = info.value
    assert type(error).__name__ == case["error"]
    assert case["message"] in error.message
    if "line" in case:
        assert (error.line, error.column) == (case["line"], case["column"])


def test_parse_returns_one_query_expression() -> None:
    tree = parse("SELECT TOP 3 a FROM t WHERE CONTAINS(POINT(a, b), CIRCLE(1, 2, 3)) = 1")
    assert isinstance(tree, exp.Select)
    assert tree.args["limit"].expression.this == "3"
    call = tree.find(exp.Anonymous)
    assert call is not None and call.name == "scisql_s2PtInCircle"


def test_identifiers_are_left_as_written() -> None:
    sql = translate('SELECT Ra, "Dec", "Mixed Case" FROM Cat.Obj')
    assert sql == 'SELECT Ra, "Dec", "Mixed Case" FROM Cat.Obj'


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(AdqlError, match="unknown dialect 'mysql'; valid: postgres, duckdb"):
        translate("SELECT 1", "mysql")


def test_cli_translate_prints_sql() -> None:
    result = CliRunner().invoke(
        cli.main, ["adql", "translate", "--dialect", "duckdb", "SELECT TOP 2 POINT(ra, dec) FROM t"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "SELECT CAST([ra, dec] AS DOUBLE[]) FROM t LIMIT 2"


def test_cli_translate_reports_position_and_fails() -> None:
    result = CliRunner().invoke(cli.main, ["adql", "translate", "SELECT a\nFROM t\nWHERE pg_sleep(1) = 1"])
    assert result.exit_code == 1
    assert "line 3, column 7: unknown function pg_sleep" in result.output


def test_public_api() -> None:
    assert set(adql.__all__) >= {"parse", "translate", "AdqlSyntaxError"}


VALID: list[str] = yaml.safe_load((HERE / "valid.yaml").read_text())


@pytest.mark.parametrize("query", VALID, ids=[q[:50] for q in VALID])
def test_valid_adql_is_accepted(query: str) -> None:
    grammar.check(query)
    assert isinstance(parse(query, unit_of=lambda c: "deg"), exp.Query)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_queries_pass_the_grammar(case: dict[str, str]) -> None:
    grammar.check(case["adql"])


def test_tap_examples_are_strict_adql() -> None:
    from dms.services.vo.tap import examples_document
    from dms.services.vo.tap_schema import Column, Table

    columns = (Column("ra", "double", ucd="pos.eq.ra"), Column("dec", "double", ucd="pos.eq.dec"))
    table = Table("cat", "cat.obj", "objects", "table", columns)
    queries = re.findall(r'<pre property="query">(.*?)</pre>', examples_document([table]), re.S)
    assert len(queries) == 3
    for query in queries:
        grammar.check(html.unescape(query))


def test_quote_identifier_quotes_reserved_and_irregular_names() -> None:
    assert grammar.quote_identifier("ra") == "ra"
    assert [grammar.quote_identifier(n) for n in ("size", "distance", "_healpix_29", "Ra", 'a"b')] == [
        '"size"',
        '"distance"',
        '"_healpix_29"',
        '"Ra"',
        '"a""b"',
    ]
    for name in ("size", "distance", "_healpix_29", "Ra", 'a"b', "ra"):
        grammar.check(f"SELECT {grammar.quote_identifier(name)} FROM t")


def test_cli_reads_the_query_from_a_file_and_standard_input(tmp_path: Path) -> None:
    text = "-- bright objects first\nSELECT TOP 2 ra\nFROM t ORDER BY mag"
    path = tmp_path / "q.adql"
    path.write_text(text)
    expected = translate(text)
    runner = CliRunner()
    for args, stdin in ((["-f", str(path)], None), (["-"], text), (["-f", "-"], text), (["--", text], None)):
        result = runner.invoke(cli.main, ["adql", "translate", *args], input=stdin)
        assert result.exit_code == 0, result.output
        assert result.output.strip() == expected
    assert "LIMIT 2" in expected


def test_cli_reports_a_grammar_error_with_its_position() -> None:
    query = "SELECT a\nFROM t WHERE x IN (1,)"
    result = CliRunner().invoke(cli.main, ["adql", "translate", "-"], input=query)
    assert result.exit_code == 1
    assert "ADQL line 2, column 22: unexpected ')'" in result.output
    assert "Traceback" not in result.output


def test_cli_needs_a_query() -> None:
    result = CliRunner().invoke(cli.main, ["adql", "translate"])
    assert result.exit_code == 2
    assert "give a query" in result.output
    both = CliRunner().invoke(cli.main, ["adql", "translate", "-f", "x.adql", "SELECT a FROM t"])
    assert both.exit_code == 2 and "not both" in both.output
