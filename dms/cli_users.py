"""`dms users`: the users of the HTTP services and their bearer tokens (issue 11)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click

from dms.cli import _friendly_errors, _open, data_dir_option
from dms.errors import ConfigError

DURATION = re.compile(r"^(\d+)([dhm])$")


def parse_expiry(value: str) -> datetime | None:
    """`never`, a duration (`90d`, `12h`, `30m`) or an ISO 8601 time, as an aware UTC time (None: never)."""
    if value.lower() == "never":
        return None
    match = DURATION.match(value)
    if match:
        number, unit = int(match.group(1)), match.group(2)
        delta = {"d": timedelta(days=number), "h": timedelta(hours=number), "m": timedelta(minutes=number)}
        return datetime.now(UTC) + delta[unit]
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--expires {value!r} is not a duration (90d, 12h, 30m), an ISO 8601 time or 'never'"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.group()
def users() -> None:
    """Users of the HTTP services (TAP, SCS, SIA, DataLink, gateway) and their bearer tokens."""


@users.command("add")
@click.argument("name")
@data_dir_option
@click.pass_context
@_friendly_errors
def users_add(ctx: click.Context, name: str) -> None:
    """Add user NAME (then give them a token with `dms users token NAME`)."""
    from dms.services.auth import add_user

    with _open(ctx).connect() as conn:
        add_user(conn, name)
        conn.commit()
    click.echo(f"Added user {name}; next: dms users token {name}")


@users.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def users_list(ctx: click.Context) -> None:
    """List users and their tokens (ids, scopes, expiry; never the tokens themselves)."""
    from dms.services.auth import list_users

    deployment = _open(ctx)
    with deployment.connect() as conn:
        found = list_users(conn)
    access = "allowed" if deployment.config.anonymous_access else "refused"
    click.echo(f"anonymous access: {access}")
    for user in found:
        click.echo(user["name"])
        for token in user["tokens"]:
            state = "revoked" if token["revoked_at"] else "valid"
            expires = token["expires_at"].isoformat(timespec="seconds") if token["expires_at"] else "never"
            click.echo(f"  {token['token_id']}  {state:7}  expires {expires}  scopes {token['scopes']}")


@users.command("token")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A service the token may be used for (repeatable): tap, scs, sia, datalink, gateway, minibroker, "
    "alerts, workspace; or unreleased (QA/Commissioning instances: also unreleased data) [default: every "
    "service, released data only].",
)
@click.option(
    "--expires",
    default="90d",
    show_default=True,
    help="When the token stops working: a duration (90d, 12h, 30m), an ISO 8601 time, or 'never'.",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def users_token(ctx: click.Context, name: str, scopes: tuple[str, ...], expires: str) -> None:
    """Issue a new token for NAME and print it once (only its hash is kept)."""
    from dms.services.auth import DEFAULT_SCOPES, issue_token

    expiry = parse_expiry(expires)
    with _open(ctx).connect() as conn:
        token_id, token = issue_token(conn, name, scopes or DEFAULT_SCOPES, expiry)
        conn.commit()
    click.echo(token)
    until = expiry.isoformat(timespec="seconds") if expiry else "never"
    click.echo(f"token id {token_id}, expires {until}; it is shown only now", err=True)


@users.command("revoke")
@click.argument("token_or_user")
@data_dir_option
@click.pass_context
@_friendly_errors
def users_revoke(ctx: click.Context, token_or_user: str) -> None:
    """Revoke a token (by its id) or every token of a user (by name)."""
    from dms.services.auth import revoke

    with _open(ctx).connect() as conn:
        count = revoke(conn, token_or_user)
        conn.commit()
    click.echo(f"revoked {count} token{'s' if count != 1 else ''}")


@users.command("anonymous")
@click.argument("setting", type=click.Choice(["allow", "deny"]))
@data_dir_option
@click.pass_context
@_friendly_errors
def users_anonymous(ctx: click.Context, setting: str) -> None:
    """Allow or deny requests without a token (deployment.yaml anonymous_access; restart `dms serve`)."""
    from dms.config import CONFIG_FILE, save_config

    deployment = _open(ctx)
    deployment.config.anonymous_access = setting == "allow"
    save_config(deployment.config, deployment.data_dir / CONFIG_FILE)
    click.echo(f"anonymous access {'allowed' if setting == 'allow' else 'denied'} (restart dms serve)")
