"""`dms workspace`, `dms users group` and `dms release`: the Science Platform's workspaces, groups and
released data (issue 18). The commands act as the operator, for the user named by --user."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dms.cli import _friendly_errors, _open, data_dir_option

user_option = click.option("--user", "user", required=True, help="The user whose workspace this is.")


@click.group()
def workspace() -> None:
    """Personal workspaces: each user's own schema of tables, queried with ADQL beside the catalog."""


@workspace.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Table name [default: the file name without its extension].")
@click.option("--replace", is_flag=True, help="Replace a table of the same name.")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_upload(ctx: click.Context, path: Path, name: str | None, replace: bool, user: str) -> None:
    """Store a table file (Parquet, CSV/TSV, FITS binary table, VOTable) in USER's workspace."""
    from dms.services.workspace.store import Workspaces, read_table_file

    table = read_table_file(path)
    stored = Workspaces(_open(ctx)).store(
        user, name or path.name.split(".")[0], table, path.name, replace=replace
    )
    click.echo(f"stored {stored['qualified_name']}: {stored['rows']:,} rows, {stored['bytes']:,} bytes")


@workspace.command("save")
@click.argument("name")
@click.argument("query")
@click.option("--lang", type=click.Choice(["adql", "sql"]), default="adql", show_default=True)
@click.option("--replace", is_flag=True, help="Replace a table of the same name.")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_save(ctx: click.Context, name: str, query: str, lang: str, replace: bool, user: str) -> None:
    """Save the result of QUERY (run as USER: what USER may read) as table NAME of USER's workspace."""
    from dms.services.vo.executor import make_executor
    from dms.services.workspace.errors import QuotaExceeded
    from dms.services.workspace.store import Workspaces
    from dms.services.workspace.viewer import acting_as, viewer_of_user

    deployment = _open(ctx)
    workspaces = Workspaces(deployment)
    with deployment.engine().connect() as conn:
        viewer = viewer_of_user(conn, user, deployment.config)
        quota = workspaces.quota(conn, user)
    room = max(0, quota.max_rows - quota.used_rows)
    with acting_as(viewer):
        result = make_executor(deployment).execute(query, lang=lang, max_rows=room, timeout=600.0)
    if result.overflow:
        raise QuotaExceeded(f"the result has more than the {room:,} rows left in {user}'s workspace quota")
    stored = workspaces.store(user, name, result.table, query, replace=replace)
    click.echo(f"stored {stored['qualified_name']}: {stored['rows']:,} rows, {stored['bytes']:,} bytes")


@workspace.command("list")
@user_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/workspace/tables).")
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_list(ctx: click.Context, user: str, as_json: bool) -> None:
    """USER's tables, their shares and quota, and the tables shared with USER."""
    from dms.services.workspace.store import Workspaces

    deployment = _open(ctx)
    with deployment.engine().connect() as conn:
        listing = Workspaces(deployment).list_tables(conn, user)
    if as_json:
        json.dump(listing, sys.stdout, indent=2)
        click.echo()
        return
    quota = listing["quota"]
    click.echo(
        f"{listing['schema']}: {quota['used_rows']:,} of {quota['max_rows']:,} rows, "
        f"{quota['used_bytes']:,} of {quota['max_bytes']:,} bytes"
    )
    for table in listing["tables"]:
        shares = ", ".join(f"{s['kind']} {s['name']}" for s in table["shares"]) or "private"
        click.echo(f"  {table['qualified_name']}  {table['rows']:,} rows  {shares}")
    for table in listing["shared_with_me"]:
        click.echo(f"  {table['qualified_name']}  shared by {table['owner']}")


@workspace.command("drop")
@click.argument("name")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_drop(ctx: click.Context, name: str, user: str) -> None:
    """Drop table NAME of USER's workspace (and its shares)."""
    from dms.services.workspace.store import Workspaces

    Workspaces(_open(ctx)).drop(user, name)
    click.echo(f"dropped {name}")


def _share_target(to_user: str | None, to_group: str | None) -> dict[str, str | None]:
    if (to_user is None) == (to_group is None):
        raise click.UsageError("give exactly one of --with-user or --with-group")
    return {"user": to_user, "group": to_group}


@workspace.command("share")
@click.argument("name")
@click.option("--with-user", "to_user", help="Share with this user.")
@click.option("--with-group", "to_group", help="Share with this group.")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_share(
    ctx: click.Context, name: str, to_user: str | None, to_group: str | None, user: str
) -> None:
    """Share table NAME of USER's workspace read-only with a user or a group."""
    from dms.services.workspace.store import Workspaces

    Workspaces(_open(ctx)).share(user, name, **_share_target(to_user, to_group))
    click.echo(f"shared {name} with {to_user or 'group ' + str(to_group)}")


@workspace.command("unshare")
@click.argument("name")
@click.option("--with-user", "to_user", help="Stop sharing with this user.")
@click.option("--with-group", "to_group", help="Stop sharing with this group.")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_unshare(
    ctx: click.Context, name: str, to_user: str | None, to_group: str | None, user: str
) -> None:
    """Stop sharing table NAME of USER's workspace with a user or a group."""
    from dms.services.workspace.store import Workspaces

    Workspaces(_open(ctx)).unshare(user, name, **_share_target(to_user, to_group))
    click.echo(f"unshared {name}")


@workspace.command("quota")
@click.option(
    "--bytes", "max_bytes", type=click.IntRange(min=0), help="Quota in bytes [default: deployment's]."
)
@click.option("--rows", "max_rows", type=click.IntRange(min=0), help="Quota in rows [default: deployment's].")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def workspace_quota(ctx: click.Context, max_bytes: int | None, max_rows: int | None, user: str) -> None:
    """Set USER's workspace quota (omitted limits return to the deployment's defaults)."""
    from dms.services.workspace.store import Workspaces

    deployment = _open(ctx)
    workspaces = Workspaces(deployment)
    workspaces.set_quota(user, max_bytes, max_rows)
    with deployment.engine().connect() as conn:
        quota = workspaces.quota(conn, user)
    click.echo(f"{user}: at most {quota.max_rows:,} rows and {quota.max_bytes:,} bytes")


# ---- dms users group ---------------------------------------------------------------------------------------


@click.group("group")
def group() -> None:
    """Groups of users, to share workspace tables with."""


@group.command("create")
@click.argument("name")
@data_dir_option
@click.pass_context
@_friendly_errors
def group_create(ctx: click.Context, name: str) -> None:
    """Create group NAME."""
    from dms.services.workspace.groups import create_group

    with _open(ctx).connect() as conn:
        create_group(conn, name)
        conn.commit()
    click.echo(f"created group {name}")


@group.command("add")
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@data_dir_option
@click.pass_context
@_friendly_errors
def group_add(ctx: click.Context, name: str, members: tuple[str, ...]) -> None:
    """Add users MEMBERS to group NAME."""
    from dms.services.workspace.groups import add_member

    with _open(ctx).connect() as conn:
        for member in members:
            add_member(conn, name, member)
        conn.commit()
    click.echo(f"added {', '.join(members)} to {name}")


@group.command("remove")
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@data_dir_option
@click.pass_context
@_friendly_errors
def group_remove(ctx: click.Context, name: str, members: tuple[str, ...]) -> None:
    """Remove users MEMBERS from group NAME."""
    from dms.services.workspace.groups import remove_member

    with _open(ctx).connect() as conn:
        for member in members:
            remove_member(conn, name, member)
        conn.commit()
    click.echo(f"removed {', '.join(members)} from {name}")


@group.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def group_list(ctx: click.Context) -> None:
    """List the groups and their members."""
    from dms.services.workspace.groups import list_groups

    with _open(ctx).connect() as conn:
        for found in list_groups(conn):
            click.echo(f"{found['name']}: {', '.join(found['members']) or '(no members)'}")


# ---- dms release -------------------------------------------------------------------------------------------


@click.group()
def release() -> None:
    """Released data and the instance kind: the DAC shows released data only; QA and Commissioning
    instances also show unreleased data to tokens with the `unreleased` scope."""


@release.command("set")
@click.argument("target")
@click.argument("state", type=click.Choice(["released", "unreleased"]))
@data_dir_option
@click.pass_context
@_friendly_errors
def release_set(ctx: click.Context, target: str, state: str) -> None:
    """Mark schema or table TARGET (SCHEMA or SCHEMA.TABLE) released or unreleased."""
    from dms.services.workspace.release import set_release

    with _open(ctx).connect() as conn:
        set_release(conn, target, state == "released")
        conn.commit()
    click.echo(f"{target}: {state} (a running dms serve sees it within seconds)")


@release.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def release_list(ctx: click.Context) -> None:
    """The instance kind and the release state of every marked schema and table (the rest: released)."""
    from dms.services.workspace.release import list_release

    deployment = _open(ctx)
    click.echo(f"instance: {deployment.config.instance}")
    with deployment.connect() as conn:
        for row in list_release(conn):
            click.echo(f"  {row['target']}: {'released' if row['released'] else 'unreleased'}")


@release.command("instance")
@click.argument("kind", type=click.Choice(["dac", "qa", "commissioning"]))
@data_dir_option
@click.pass_context
@_friendly_errors
def release_instance(ctx: click.Context, kind: str) -> None:
    """Set which instance this deployment is (deployment.yaml instance; restart `dms serve`)."""
    from dms.config import CONFIG_FILE, save_config

    deployment = _open(ctx)
    deployment.config.instance = kind
    save_config(deployment.config, deployment.data_dir / CONFIG_FILE)
    click.echo(f"instance: {kind} (restart dms serve)")


def query_as_user(
    deployment: object,
    user: str,
    query: str,
    lang: str,
    fmt: str,
    output: Path | None,
    max_rows: int,
    timeout: float,
) -> None:
    """`dms query --user USER`: the query through the services' executor, for USER."""
    from dms.deployment import Deployment
    from dms.query.output import write_result
    from dms.services.auth import USER_NAME
    from dms.services.vo.executor import make_executor
    from dms.services.workspace.errors import NotFound
    from dms.services.workspace.viewer import acting_as, viewer_of_user

    assert isinstance(deployment, Deployment)
    if not USER_NAME.match(user):
        raise NotFound(f"no user {user!r}")
    import sqlalchemy as sa

    with deployment.engine().connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM dms.user_account WHERE name = :n"), {"n": user}).first():
            raise NotFound(f"no user {user!r} (see `dms users list`)")
        viewer = viewer_of_user(conn, user, deployment.config)
    with acting_as(viewer):
        result = make_executor(deployment).execute(query, lang=lang, max_rows=max_rows, timeout=timeout)
    write_result(result, fmt, output or sys.stdout)
    if result.overflow:
        click.echo(f"result cut at {max_rows:,} rows (--max-rows); more rows matched", err=True)
