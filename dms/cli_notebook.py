"""`dms notebook`: JupyterLab with `dms.client` configured for a user (the optional extra `notebook`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from dms.cli import _friendly_errors, _open, data_dir_option
from dms.errors import ConfigError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Base URL of `dms serve`.")
@click.option(
    "--user",
    help="Issue a token for this user (12 hours, every service, released data) instead of DMS_TOKEN.",
)
@click.option("--notebook-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder to open.")
@click.option("--port", type=click.IntRange(1, 65535), default=8888, show_default=True)
@click.option("--print-env", is_flag=True, help="Print DMS_URL (and whether DMS_TOKEN is set), do not start.")
@data_dir_option
@click.pass_context
@_friendly_errors
def notebook(
    ctx: click.Context, url: str, user: str | None, notebook_dir: Path | None, port: int, print_env: bool
) -> None:
    """Start JupyterLab with DMS_URL and DMS_TOKEN set, so `dms.client.Client()` logs in as the user."""
    env = dict(os.environ, DMS_URL=url)
    if user is not None:
        from dms.services.auth import DEFAULT_SCOPES, issue_token

        with _open(ctx).connect() as conn:
            expires = datetime.now(UTC) + timedelta(hours=12)
            _, env["DMS_TOKEN"] = issue_token(conn, user, DEFAULT_SCOPES, expires)
            conn.commit()
    if not env.get("DMS_TOKEN"):
        click.echo("no DMS_TOKEN and no --user: the notebooks will query anonymously", err=True)
    folder = notebook_dir or (NOTEBOOKS if NOTEBOOKS.is_dir() else Path.cwd())
    if print_env:
        click.echo(f"DMS_URL={url}")
        click.echo(f"DMS_TOKEN is {'set' if env.get('DMS_TOKEN') else 'not set'}")
        click.echo(f"notebooks: {folder}")
        return
    if shutil.which("jupyter-lab") is None and not _has_module("jupyterlab"):
        raise ConfigError("JupyterLab is not installed: pip install 'dms[notebook]'")
    command = [sys.executable, "-m", "jupyterlab", f"--port={port}", f"--notebook-dir={folder}"]
    raise SystemExit(subprocess.call(command, env=env))


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
