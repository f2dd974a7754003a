"""`dms minibroker`: users' filters and watch lists, evaluation of a visit's alerts, and the HTTP service.

The commands act for one user (`--user`), as an operator with the deployment's credentials; users themselves
use the HTTP service with their token (`dms minibroker serve`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from dms.cli import _friendly_errors, _open, data_dir_option


def _conninfo(ctx: click.Context) -> str:
    url = _open(ctx).control_url().set(drivername="postgresql")
    return str(url.render_as_string(hide_password=False))


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


user_option = click.option("--user", "user", required=True, help="The user the command acts for.")


@click.group()
def minibroker() -> None:
    """The Alert Mini-Broker: users' Lasair-style filters over each visit's alerts."""


@minibroker.group("filter")
def filter_group() -> None:
    """Add, list, remove and try filters (a SQL WHERE over diaSource, diaObject, features)."""


@filter_group.command("add")
@click.argument("name")
@click.argument("where")
@click.option("--select", "select", default="", help="Optional SELECT list (expressions, comma-separated).")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def filter_add(ctx: click.Context, name: str, where: str, select: str, user: str) -> None:
    """Add filter NAME with condition WHERE (checked before it is stored)."""
    from dms.services.minibroker import store

    with _open(ctx).engine().begin() as conn:
        filter_id = store.add_filter(conn, user, name, where, select)
    click.echo(f"Added filter {filter_id} ({name}) for {user}")


@filter_group.command("list")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def filter_list(ctx: click.Context, user: str) -> None:
    """List the user's filters."""
    from dms.services.minibroker import store

    with _open(ctx).engine().begin() as conn:
        _echo_json([f.as_dict() for f in store.list_filters(conn, user)])


@filter_group.command("remove")
@click.argument("filter_id", type=int)
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def filter_remove(ctx: click.Context, filter_id: int, user: str) -> None:
    """Remove one of the user's filters (and its matches)."""
    from dms.services.minibroker import store

    with _open(ctx).engine().begin() as conn:
        store.remove_filter(conn, user, filter_id)
    click.echo(f"Removed filter {filter_id}")


@filter_group.command("test")
@click.argument("where")
@click.option("--select", "select", default="", help="Optional SELECT list.")
@click.option("--visit", type=int, required=True, help="The visit whose alerts the filter is tried on.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Time limit, seconds.")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def filter_test(ctx: click.Context, where: str, select: str, visit: int, timeout: float, user: str) -> None:
    """Try a filter on a visit's alerts without storing it; prints the matches."""
    import psycopg

    from dms.services.minibroker.evaluate import FilterSpec, run_filters

    with psycopg.connect(_conninfo(ctx)) as conn:
        (run,) = run_filters(conn, [FilterSpec(0, user, where, select)], visit, timeout)
    if run.error:
        raise click.ClickException(run.error)
    _echo_json([{"alert_id": a, "dia_object_id": o, **s} for a, o, s in run.rows])
    click.echo(f"{len(run.rows)} alerts in {run.seconds:.3f} s", err=True)


@minibroker.group("watchlist")
def watchlist_group() -> None:
    """Watch lists: positions with radii, used by filters as in_watchlist('NAME')."""


@watchlist_group.command("add")
@click.argument("name")
@click.argument("positions", nargs=-1, required=True)
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def watchlist_add(ctx: click.Context, name: str, positions: tuple[str, ...], user: str) -> None:
    """Add POSITIONS ("ra,dec,radius_arcsec[,label]", degrees) to watch list NAME."""
    from dms.services.minibroker import store
    from dms.services.minibroker.errors import MinibrokerError

    entries = []
    for text in positions:
        parts = text.split(",")
        try:
            ra, dec, radius = (float(p) for p in parts[:3])
        except ValueError:
            raise MinibrokerError(f"position {text!r}: write ra,dec,radius_arcsec[,label]") from None
        entries.append((ra, dec, radius, ",".join(parts[3:])))
    with _open(ctx).engine().begin() as conn:
        added = store.add_watch(conn, user, name, entries)
    click.echo(f"Added {added} positions to watch list {name} of {user}")


@watchlist_group.command("list")
@user_option
@data_dir_option
@click.pass_context
@_friendly_errors
def watchlist_list(ctx: click.Context, user: str) -> None:
    """List the user's watch lists and their sizes."""
    from dms.services.minibroker import store

    with _open(ctx).engine().begin() as conn:
        _echo_json(store.list_watchlists(conn, user))


@minibroker.command("evaluate")
@click.argument("visit", type=int)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Limit per filter, seconds.")
@data_dir_option
@click.pass_context
@_friendly_errors
def evaluate(ctx: click.Context, visit: int, timeout: float) -> None:
    """Update the features of VISIT's DiaObjects, then run every active filter on its alerts."""
    from dms.services.minibroker.evaluate import evaluate_visit
    from dms.services.minibroker.features import update_features

    conninfo = _conninfo(ctx)
    objects = update_features(conninfo, visit)
    runs = evaluate_visit(conninfo, visit, timeout_s=timeout)
    click.echo(f"features of {objects} DiaObjects updated; {len(runs)} filters run")
    for run in runs:
        outcome = run.error or f"{len(run.rows)} matches"
        click.echo(f"  filter {run.filter_id} ({run.owner}): {outcome} in {run.seconds:.3f} s")


@minibroker.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8040, show_default=True, help="Port to listen on.")
@data_dir_option
@click.pass_context
@_friendly_errors
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve the mini-broker's HTTP API (token with scope minibroker)."""
    import uvicorn

    from dms.services.minibroker.app import make_app

    deployment = _open(ctx)
    click.echo(f"Mini-broker at http://{host}:{port}/minibroker/filters (Ctrl-C stops it)")
    uvicorn.run(make_app(deployment.engine), host=host, port=port, log_level="warning")
