"""`dms load`, `dms tables` and `dms query`: the partitioned catalog from the command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from dms.cli import _friendly_errors, _open, data_dir_option
from dms.cli_input import query_source
from dms.errors import DMSError


@click.command()
@click.argument("table")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--create", "create", is_flag=True, help="Register TABLE from the first file's columns.")
@click.option(
    "--schema",
    help="Schema of TABLE (a regular ADQL identifier), e.g. --schema gaia_dr3 for gaia_dr3.gaia_source; "
    "default: cat (or the SCHEMA. prefix of TABLE).",
)
@click.option(
    "--role",
    type=click.Choice(["director", "child", "replicated", "match"]),
    default="director",
    show_default=True,
    help="With --create: how the table is distributed.",
)
@click.option("--ra", help="With --create: column of right ascension (degrees, ICRS).")
@click.option("--dec", help="With --create: column of declination (degrees, ICRS).")
@click.option("--id", "id_column", help="With --create: unique object id column of a director table.")
@click.option("--director", help="With --create --role child: the director table.")
@click.option("--director-key", help="With --create --role child: column holding the director's id.")
@click.option("--director2", help="With --create --role match: the second director table it matches.")
@click.option("--director-key2", help="With --create --role match: column holding the second director's id.")
@click.option(
    "--chunk-order",
    type=click.IntRange(0, 13),
    default=1,
    show_default=True,
    help="With --create: HEALPix order of the chunks (the coarsest, with adaptive splitting).",
)
@click.option(
    "--max-chunk-rows",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="With --create: split chunks holding more rows than this (0 = fixed order).",
)
@click.option("--fixed-order", is_flag=True, help="With --create: no adaptive splitting.")
@click.option(
    "--overlap",
    "overlap_arcsec",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="With --create: overlap margin of a director table, arcsec.",
)
@click.option(
    "--storage",
    type=click.Choice(["duckdb", "postgres"]),
    help="With --create: kind of shard holding the table (default: the first shard's kind).",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --create: shards holding each chunk; queries fail over to a replica.",
)
@click.option("--like", help="With --create: use the chunk layout of this director table (for crossmatches).")
@click.option("--description", help="With --create: what the table holds.")
@click.option(
    "--unit",
    "units",
    multiple=True,
    metavar="COLUMN=UNIT",
    help="With --create: a column's VOUnit (e.g. ra=deg), over the file's own; repeatable.",
)
@click.option(
    "--ucd",
    "ucds",
    multiple=True,
    metavar="COLUMN=UCD",
    help="With --create: a column's UCD (e.g. ra=pos.eq.ra), over the file's own; repeatable.",
)
@click.option(
    "--region",
    "region_columns",
    multiple=True,
    metavar="COLUMN",
    help="With --create: COLUMN holds STC-S regions (e.g. detector footprints); the load stores COLUMN_shape "
    "and COLUMN_moc beside it, so ADQL INTERSECTS/CONTAINS can test it; repeatable.",
)
@click.option(
    "--orphans",
    type=click.Choice(["place-by-position", "refuse", "skip"]),
    default="place-by-position",
    show_default=True,
    help="Child rows whose director row is missing or whose key is NULL: place them in the chunk of their "
    "own --ra/--dec (as Qserv does), refuse the whole load, or leave them out. The count is reported.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@data_dir_option
@click.pass_context
@_friendly_errors
def load(
    ctx: click.Context,
    table: str,
    files: tuple[Path, ...],
    create: bool,
    schema: str | None,
    role: str,
    ra: str | None,
    dec: str | None,
    id_column: str | None,
    director: str | None,
    director_key: str | None,
    director2: str | None,
    director_key2: str | None,
    chunk_order: int,
    max_chunk_rows: int,
    fixed_order: bool,
    overlap_arcsec: float,
    storage: str | None,
    replicas: int,
    like: str | None,
    description: str | None,
    units: tuple[str, ...],
    ucds: tuple[str, ...],
    region_columns: tuple[str, ...],
    orphans: str,
    quiet: bool,
) -> None:
    """Load Parquet, CSV/TSV, FITS or VOTable FILES into catalog TABLE.

    Loading the same files twice changes nothing; an interrupted load resumes when run again; queries see a
    load only when it is complete. A failed --create leaves no table behind; --create of an existing table
    with other options is refused (drop it with `dms catalog drop TABLE --yes` to start afresh).
    """
    from dms.loaders.catalog import TableOptions, load_files
    from dms.schema.catalog import new_table_name

    if schema is not None or create:  # a new table's schema must be a regular ADQL identifier
        table = new_table_name(table, schema)
    options = None
    if region_columns and not create:
        raise click.UsageError(
            "--region goes with --create: a table's region columns are set when it is made"
        )
    if create:
        options = TableOptions(
            role=role,
            ra=ra,
            dec=dec,
            id=id_column,
            director=director,
            director_key=director_key,
            director2=director2,
            director_key2=director_key2,
            chunk_order=chunk_order,
            max_chunk_rows=None if fixed_order else max_chunk_rows,
            overlap_arcsec=overlap_arcsec,
            storage=storage,
            like=like,
            replicas=replicas,
            description=description,
            units=_assignments("--unit", units),
            ucds=_assignments("--ucd", ucds),
            regions=list(region_columns),
        )
    deployment = _open(ctx)
    result = load_files(deployment, table, list(files), create=options, progress=not quiet, orphans=orphans)
    if result.skipped:
        click.echo(
            f"{result.table}: these files were already loaded (load {result.load_id}); nothing changed"
        )
        return
    rate = result.rows / result.seconds if result.seconds else 0.0
    click.echo(
        f"{result.table}: loaded {result.rows:,} rows into {result.chunks} chunks "
        f"(+{result.overlap_rows:,} overlap rows) in {result.seconds:.1f} s ({rate:,.0f} rows/s), "
        f"load {result.load_id}"
    )
    if result.orphans:
        done = "placed by their own position" if result.orphan_policy == "place-by-position" else "skipped"
        click.echo(f"{result.table}: {result.orphans:,} rows without a director row were {done} (--orphans)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_dir_option
@click.pass_context
@_friendly_errors
def tables(ctx: click.Context, as_json: bool) -> None:
    """List catalog tables with their row counts and partitioning."""
    import json

    import sqlalchemy as sa

    deployment = _open(ctx)
    with deployment.connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT t.name, t.role, t.storage_kind, t.row_count, t.chunk_order, t.overlap_arcsec, "
                    "t.director_table, t.like_table, (SELECT count(*) FROM dms.chunk c "
                    "WHERE c.table_name = t.name AND "
                    "c.row_count > 0) AS chunks, (SELECT count(*) FROM dms.catalog_column c "
                    "WHERE c.table_name = t.name) AS columns FROM dms.catalog_table t ORDER BY t.name"
                )
            )
            .mappings()
            .all()
        )
    if as_json:
        click.echo(json.dumps([dict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo(
            "no catalog tables; load one with `dms load --create NAME FILE --ra COL --dec COL --id COL`"
        )
        return
    click.echo(
        f"{'table':<28} {'role':<10} {'storage':<8} {'rows':>12} {'cols':>5} {'chunks':>6}  partitioning"
    )
    for r in rows:
        if r["role"] == "replicated":
            how = "replicated to every shard"
        elif r["role"] == "child":
            how = f"placed by {r['director_table']}"
        else:
            how = f'HEALPix order {r["chunk_order"]}+, overlap {r["overlap_arcsec"]:g}"'
            if r["like_table"]:
                how += f", chunks of {r['like_table']}"
        click.echo(
            f"{r['name']:<28} {r['role']:<10} {r['storage_kind']:<8} {r['row_count']:>12,} {r['columns']:>5} "
            f"{r['chunks']:>6}  {how}"
        )


@click.command()
@query_source("sql")
@click.option(
    "--lang",
    type=click.Choice(["sql", "adql", "qserv"]),
    default="sql",
    show_default=True,
    help="sql: PostgreSQL SQL; adql: ADQL 2.1; qserv: MySQL as Qserv accepts it, with MySQL's meaning "
    "(case-insensitive text, DIV, &&, <=>, chunkId, SHOW COLUMNS ...).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet", "votable", "table"]),
    default="table",
    show_default=True,
    help="Output format (parquet and votable need --output).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the result to this file.")
@click.option(
    "--max-rows",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    help="Result-size cap; a larger result is cut and reported as such.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.001),
    default=600.0,
    show_default=True,
    help="Seconds before the query is cancelled.",
)
@click.option(
    "--explain", is_flag=True, help="Show the plan (chunks, shards, per-shard SQL) instead of running."
)
@click.option(
    "--user",
    "as_user",
    help="Run as this user, through the services' checks: what the user may read (released data, their "
    "workspace and shares), TAP_SCHEMA and ObsCore beside the catalog.",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def query(
    ctx: click.Context,
    sql: str,
    lang: str,
    fmt: str,
    output: Path | None,
    max_rows: int,
    timeout: float,
    explain: bool,
    as_user: str | None,
) -> None:
    """Run a SQL, ADQL or Qserv (MySQL) query over the catalog.

    The query is the SQL argument, the file given with -f, or standard input with '-' (a query that
    begins with a `--` comment needs -f, '-' or `--` before it).
    """
    from dms.query.adql.frames import collect_notes, infos
    from dms.query.engine import QueryEngine
    from dms.query.output import write_result

    if as_user is not None:
        from dms.cli_workspace import query_as_user

        query_as_user(_open(ctx), as_user, sql, lang, fmt, output, max_rows, timeout)
        return
    engine = QueryEngine(_open(ctx))
    try:
        if explain:
            click.echo(engine.explain(sql, lang=lang))
            return
        with collect_notes() as notes:  # what the ADQL translation did (frames, RAND(seed))
            result = engine.execute(sql, lang=lang, max_rows=max_rows, timeout=timeout)
        for note in notes:
            click.echo(f"{'warning' if note.warning else 'note'}: {note.text}", err=True)
        write_result(result, fmt, output or sys.stdout, infos=infos(notes))
    except RecursionError as exc:  # the engine's nesting limits should have refused the query first
        from dms.query.limits import too_complex

        raise click.ClickException(str(too_complex(exc))) from None
    except (DMSError, click.ClickException, OSError):
        raise
    except Exception as exc:  # a bug, reported as one line (the traceback with -vv), never a Python dump
        logging.getLogger(__name__).debug("dms query failed", exc_info=True)
        raise click.ClickException(
            f"internal error ({type(exc).__name__}: {exc}); please report it with the query (-vv shows the "
            "traceback)"
        ) from None
    finally:
        engine.close()
    if result.overflow:
        click.echo(f"result cut at {max_rows:,} rows (--max-rows); more rows matched", err=True)


def _assignments(option: str, values: tuple[str, ...]) -> dict[str, str]:
    """COLUMN=VALUE options as a mapping, or a usage error naming the malformed one."""
    result = {}
    for value in values:
        column, sep, text = value.partition("=")
        if not sep or not column.strip() or not text.strip():
            raise click.BadParameter(f"{value!r} is not COLUMN=VALUE", param_hint=option)
        result[column.strip()] = text.strip()
    return result


@click.group()
def catalog() -> None:
    """The partitioned catalog's stored data."""


@catalog.command()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@data_dir_option
@click.pass_context
@_friendly_errors
def verify(ctx: click.Context, quiet: bool) -> None:
    """Check every chunk file on the DuckDB/Parquet shards against the checksum recorded at load.

    Prints each missing or damaged file and exits with status 1 if there is any (queries read such a chunk
    from an intact replica, or fail naming it).
    """
    import sqlalchemy as sa
    from tqdm import tqdm

    from dms.query.integrity import file_problem
    from dms.shards.parquet.backend import DuckDBShard

    deployment = _open(ctx)
    roots = {}
    for shard in deployment.shards():
        if isinstance(shard, DuckDBShard):
            roots[shard.name] = shard.root
    with deployment.connect() as conn:
        files = conn.execute(
            sa.text(
                "SELECT f.table_name, f.shard, f.path, f.checksum FROM dms.chunk_file f "
                "JOIN dms.catalog_load l USING (load_id) JOIN dms.catalog_table t ON t.name = f.table_name "
                "WHERE l.state = 'committed' AND t.storage_kind = 'duckdb' "
                "ORDER BY f.table_name, f.shard, f.path"
            )
        ).all()
    bad, unrecorded = [], 0
    for table, shard, path, checksum in tqdm(files, desc="verify", unit="file", disable=quiet, leave=False):
        if shard not in roots:
            bad.append(f"{table}: {path} on shard {shard}: the shard is not in this deployment")
            continue
        unrecorded += checksum is None
        problem = file_problem(str(roots[shard] / path), checksum, full=True)
        if problem is not None:
            bad.append(f"{table}: {path} on shard {shard}: {problem}")
    for line in bad:
        click.echo(line)
    note = ""
    if unrecorded:
        note = f" ({unrecorded} loaded before checksums were recorded: only checked to exist)"
    click.echo(f"{len(files)} chunk files checked{note}: {len(bad) or 'none'} missing or damaged")
    if bad:
        ctx.exit(1)


@catalog.command()
@click.argument("table")
@click.option("--yes", is_flag=True, help="Drop without asking for confirmation.")
@click.option(
    "--with-children", is_flag=True, help="Drop the child tables of a director table too (else refused)."
)
@data_dir_option
@click.pass_context
@_friendly_errors
def drop(ctx: click.Context, table: str, yes: bool, with_children: bool) -> None:
    """Drop catalog TABLE: its registry rows, chunk placement, director index, chunk files and shard tables
    on every shard and replica. Queries stop seeing it at once; it cannot be undone."""
    from dms.loaders.catalog_drop import dependents, drop_table
    from dms.schema.catalog import get_table, qualified_name

    deployment = _open(ctx)
    name = qualified_name(table)
    with deployment.connect() as conn:
        found = get_table(conn, name)
        children = [c.name for c in dependents(conn, found)]
    what = found.name + (f" and its child tables {', '.join(children)}" if children and with_children else "")
    if not yes:
        click.confirm(f"drop {what} ({found.row_count:,} rows) from every shard?", abort=True)
    result = drop_table(deployment, name, with_children=with_children)
    click.echo(f"dropped {', '.join(result.tables)} from shards {', '.join(result.shards) or 'none'}")
