"""`dms adql translate` and `dms serve`: the command line of the VO services (issue 5)."""

from __future__ import annotations

import click

from dms.cli import _friendly_errors, _open, data_dir_option
from dms.cli_input import query_source


@click.group()
def adql() -> None:
    """The ADQL 2.1 front end."""


@adql.command("translate")
@query_source("query")
@click.option(
    "--dialect",
    type=click.Choice(["postgres", "duckdb"]),
    default="postgres",
    show_default=True,
    help="SQL dialect to write.",
)
@_friendly_errors
def adql_translate(query: str, dialect: str) -> None:
    """Print QUERY (ADQL 2.1) as PostgreSQL or DuckDB SQL; an invalid query fails naming line and column.

    QUERY is the argument, the file given with -f, or standard input with '-'.
    """
    from dms.query.adql import translate
    from dms.query.adql.frames import collect_notes

    with collect_notes() as notes:
        click.echo(translate(query, dialect))
    for note in notes:
        click.echo(f"{'warning' if note.warning else 'note'}: {note.text}", err=True)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port to listen on.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes serving requests [default: one per core, at most 8].",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def serve(ctx: click.Context, host: str, port: int, workers: int | None) -> None:
    """Serve TAP, SCS, SIA and DataLink over HTTP (until interrupted).

    Several worker processes share the port; UWS jobs, users and sessions live in the database, so any
    worker answers for a job another one created.
    """
    from dms.services.vo.server import default_workers, serve_forever

    serve_forever(_open(ctx), host, port, echo=click.echo, workers=workers or default_workers())
