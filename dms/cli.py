"""The `dms` command line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from dms import __version__
from dms.errors import DMSError

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(func: F) -> F:
    """Report DMSError as a one-line message on stderr with exit status 1, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DMSError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


_DATA_DIR_KEY = "dms.data_dir"


def _remember_data_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_DATA_DIR_KEY] = value


def data_dir_option(func: F) -> F:
    """`--data-dir` after the command name too (`dms init --data-dir DIR`), as well as before it."""
    return click.option(
        "--data-dir",
        "command_data_dir",
        type=click.Path(file_okay=False),
        expose_value=False,
        callback=_remember_data_dir,
        help="Deployment directory (same as `dms --data-dir`).",
    )(func)


def _data_dir(ctx: click.Context) -> Path | None:
    value = ctx.meta.get(_DATA_DIR_KEY) or ctx.find_root().params.get("data_dir")
    return Path(value) if value else None


def _open(ctx: click.Context) -> Any:
    from dms.deployment import Deployment

    return Deployment.open(_data_dir(ctx))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--data-dir",
    envvar="DMS_DATA_DIR",
    type=click.Path(file_okay=False),
    help="Deployment directory [env: DMS_DATA_DIR; default: the per-user data directory].",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(__version__, prog_name="dms")
def main(data_dir: str | None, verbose: int) -> None:
    """DMS: catalogs, images, telemetry and quality control around one database.

    Start with `dms init` (or `dms demo`), then `dms db upgrade` and `dms status`.
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command()
@click.option(
    "--database-url",
    envvar="DMS_DATABASE_URL",
    help="Use this external PostgreSQL as the control database [env: DMS_DATABASE_URL]; "
    "default: an embedded PostgreSQL inside the data directory.",
)
@click.option("--exist-ok", is_flag=True, help="Succeed without changes if a deployment already exists.")
@click.option(
    "--anonymous/--no-anonymous",
    default=True,
    show_default=True,
    help="Whether the HTTP services answer requests without a token (later: dms users anonymous).",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def init(ctx: click.Context, database_url: str | None, exist_ok: bool, anonymous: bool) -> None:
    """Create a deployment (never overwrites an existing one)."""
    from dms.deployment import Deployment
    from dms.errors import DeploymentExistsError

    try:
        deployment = Deployment.create(_data_dir(ctx), database_url=database_url)
    except DeploymentExistsError as exc:
        if not exist_ok:
            raise
        click.echo(str(exc))
        return
    if not anonymous:
        from dms.config import CONFIG_FILE, save_config

        deployment.config.anonymous_access = False
        save_config(deployment.config, deployment.data_dir / CONFIG_FILE)
    click.echo(f"Created an {deployment.config.mode} deployment in {deployment.data_dir}")
    click.echo(f"  control database: {deployment.describe_control()}")
    for shard in deployment.shards():
        click.echo(f"  shard {shard.name}: {shard.kind} at {shard.location()}")
    click.echo("Next: dms db upgrade")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@data_dir_option
@click.pass_context
@_friendly_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show what is running, the schema versions and the shards."""
    from dms.status import collect

    report = collect(_open(ctx))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    click.echo(f"deployment:  {report.data_dir} ({report.mode})")
    click.echo(f"server:      {report.server}")
    for db in [report.control, *report.shards]:
        label = "control" if db is report.control else f"shard {db.name}"
        click.echo(f"{label}: {db.kind} at {db.location}")
        if not db.reachable:
            click.echo(f"  unreachable: {db.error}")
            continue
        state = "up to date" if db.up_to_date else "needs `dms db upgrade`"
        click.echo(
            f"  schema {db.schema_version or 'none'} (expected {db.expected_version}), "
            f"revision {db.revision or 'base'} (head {db.head}): {state}"
        )
        extensions = ", ".join(f"{k} {v}" for k, v in sorted(db.extensions.items()) if k != "plpgsql")
        click.echo(
            f"  {db.server_version}; {db.tables} tables"
            + (f"; extensions: {extensions}" if extensions else "")
        )
        if db.kind == "postgres" and db.schema_version and "vector" not in db.extensions:
            click.echo(
                "  pgvector: not installed on this server (vector columns and similarity search need it)"
            )


@main.command()
@data_dir_option
@click.pass_context
@_friendly_errors
def start(ctx: click.Context) -> None:
    """Start the embedded PostgreSQL server (commands start it on demand too)."""
    deployment = _open(ctx)
    if deployment.embedded is None:
        click.echo("external deployment: nothing to start")
        return
    deployment.check_connection()
    click.echo(f"running: {deployment.describe_control()}")


@main.command()
@data_dir_option
@click.pass_context
@_friendly_errors
def stop(ctx: click.Context) -> None:
    """Stop the embedded PostgreSQL server."""
    deployment = _open(ctx)
    click.echo("stopped" if deployment.stop() else "not running")


@main.group()
def db() -> None:
    """Schema migrations of the control database and every shard."""


def _print_moves(results: list[tuple[str, str | None, str | None]]) -> None:
    for label, before, after in results:
        change = "unchanged" if before == after else f"{before or 'base'} -> {after or 'base'}"
        click.echo(f"{label}: {change}")


@db.command()
@click.argument("revision", default="head")
@data_dir_option
@click.pass_context
@_friendly_errors
def upgrade(ctx: click.Context, revision: str) -> None:
    """Bring the control database and every shard to REVISION (default: head)."""
    from dms import migrate

    _print_moves(migrate.upgrade(_open(ctx), revision))


@db.command()
@click.argument("revision")
@data_dir_option
@click.pass_context
@_friendly_errors
def downgrade(ctx: click.Context, revision: str) -> None:
    """Take every database down to REVISION ('base' removes every DMS table and function)."""
    from dms import migrate

    _print_moves(migrate.downgrade(_open(ctx), revision))


@db.command()
@data_dir_option
@click.pass_context
@_friendly_errors
def current(ctx: click.Context) -> None:
    """Show the revision of each database."""
    from dms import migrate

    head = migrate.heads()
    for label, revision in migrate.current(_open(ctx)):
        branch = migrate.CONTROL if label == migrate.CONTROL else migrate.SHARD
        marker = " (head)" if revision == head[branch] else f" (head is {head[branch]})"
        click.echo(f"{label}: {revision or 'base'}{marker}")


@db.command()
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--branch", type=click.Choice(["control", "shard"]), default="control", show_default=True)
@click.option("--empty", is_flag=True, help="Write an empty revision instead of autogenerating operations.")
@data_dir_option
@click.pass_context
@_friendly_errors
def revision(ctx: click.Context, message: str, branch: str, empty: bool) -> None:
    """(Developers) write a new revision; by default its operations are autogenerated by comparing the
    deployment's control database, at head, with the Felis definitions in schema/."""
    from dms import migrate

    path = migrate.revision(_open(ctx), message, branch=branch, autogenerate=not empty)
    click.echo(f"wrote {path}: review it, then `dms db upgrade`")


@main.group()
def shard() -> None:
    """Register and list catalog shards."""


@shard.command("add")
@click.argument("name")
@click.option("--postgres", "url", metavar="URL", help="A PostgreSQL shard at this URL.")
@click.option(
    "--duckdb",
    "path",
    metavar="PATH",
    help="A DuckDB/Parquet shard in this file (relative: in the data dir).",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def shard_add(ctx: click.Context, name: str, url: str | None, path: str | None) -> None:
    """Register shard NAME; then run `dms db upgrade` to create its schema."""
    from dms.config import validate_shard
    from dms.errors import ConfigError

    if (url is None) == (path is None):
        raise ConfigError("give exactly one of --postgres URL or --duckdb PATH")
    config = validate_shard(name=name, kind="postgres" if url else "duckdb", url=url, path=path)
    backend = _open(ctx).add_shard(config)
    click.echo(f"registered shard {backend.name}: {backend.kind} at {backend.location()}")


@shard.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def shard_list(ctx: click.Context) -> None:
    """List the registered shards."""
    for backend in _open(ctx).shards():
        click.echo(f"{backend.name}\t{backend.kind}\t{backend.location()}")


@main.command()
@click.option(
    "--serve/--no-serve",
    default=None,
    help="End by serving the VO services on localhost:8000 [default: only when run in a terminal].",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def demo(ctx: click.Context, serve: bool | None) -> None:
    """Create (or reuse) a deployment, bring it to head and show what it holds."""
    from dms.demo import run_demo

    deployment = run_demo(_data_dir(ctx), echo=click.echo)
    if serve or (serve is None and sys.stdout.isatty()):
        from dms.services.vo.server import serve_demo

        serve_demo(deployment, echo=click.echo)


from dms.cli_vo import adql, serve  # noqa: E402  (VO services: issue 5)

main.add_command(adql)
main.add_command(serve)

from dms.cli_catalog import catalog, load, query, tables  # noqa: E402  (the commands use the helpers above)

main.add_command(load)
main.add_command(tables)
main.add_command(query)
main.add_command(catalog)

from dms.cli_backbone import COMMANDS as _BACKBONE_COMMANDS  # noqa: E402  (they import main's helpers)

for _command in _BACKBONE_COMMANDS:
    main.add_command(_command)

from dms.cli_efd import efd, gateway, qc  # noqa: E402  (the groups use the helpers above)

for _group in (efd, qc, gateway):
    main.add_command(_group)

import dms.cli_qc_release  # noqa: E402, F401  (adds `dms qc release`: Level 2 QC, issue 15)
from dms.cli_users import users  # noqa: E402  (uses the helpers above)

main.add_command(users)


if __name__ == "__main__":  # pragma: no cover
    main()

from dms.cli_minibroker import minibroker  # noqa: E402  (uses the helpers above)

main.add_command(minibroker)

from dms.cli_alerts import alerts  # noqa: E402  (the Alert Broker Feed: issue 14)

main.add_command(alerts)

from dms.cli_tasks import task as _task_group  # noqa: E402  (tasks of prompt processing and the productions)

main.add_command(_task_group)

from dms.cli_night import night as _night_group  # noqa: E402  (simulated nights: issue 13)

main.add_command(_night_group)

from dms.cli_prompt import offline as _offline_group  # noqa: E402  (prompt processing: issue 13)
from dms.cli_prompt import prompt as _prompt_group  # noqa: E402

main.add_command(_prompt_group)
main.add_command(_offline_group)
from dms.cli_workspace import group, release, workspace  # noqa: E402  (the Science Platform: issue 18)

users.add_command(group)
main.add_command(workspace)

from dms.cli_notebook import notebook  # noqa: E402  (notebook access: issue 18)

main.add_command(notebook)
main.add_command(release)

from dms.cli_batch import batch  # noqa: E402  (the Batch Processing service: issue 15)

main.add_command(batch)

from dms.cli_cpp import cpp  # noqa: E402  (the Calibration Products Production: issue 15)

main.add_command(cpp)
from dms.cli_drp import drp  # noqa: E402  (the Data Release Production: issue 15)

main.add_command(drp)
