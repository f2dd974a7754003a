"""`dms task`: the registered tasks of prompt processing and the productions, and their configurations."""

from __future__ import annotations

import click

from dms.cli import _friendly_errors


@click.group()
def task() -> None:
    """Tasks (the units of prompt processing and the productions) and their configuration fields."""


@task.command("list")
@_friendly_errors
def task_list() -> None:
    """List the registered tasks, with the first line of each one's description."""
    from dms.tasks import TASKS, _import_task_modules

    _import_task_modules()
    if not TASKS:
        click.echo("No tasks are registered.")
    for name in sorted(TASKS):
        doc = (TASKS[name].__doc__ or "").strip().splitlines()
        click.echo(f"{name:32} {doc[0] if doc else ''}")


@task.command("show")
@click.argument("name")
@click.option(
    "--config", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field (repeatable)."
)
@_friendly_errors
def task_show(name: str, overrides: tuple[str, ...]) -> None:
    """Show task NAME's configuration: every field, its type, value and description, and the config hash."""
    from dms.tasks import lookup_task, make_config

    task_class = lookup_task(name)
    config = make_config(task_class.ConfigClass, overrides=overrides)
    click.echo(f"{name}: {(task_class.__doc__ or '').strip().splitlines()[0] if task_class.__doc__ else ''}")
    click.echo(f"resources: {task_class.resources.cpus:g} cpu, {task_class.resources.memory_mb} MiB")
    click.echo(f"config hash: {config.config_hash()}")
    values = config.model_dump()
    for field_name, kind, _default, description in task_class.ConfigClass.describe():
        value: object = values
        for part in field_name.split("."):
            value = value[part] if isinstance(value, dict) else value
        shown = "" if kind == "subtask" else f" = {value!r}"
        click.echo(f"  {field_name} ({kind}){shown}\n      {description}")
