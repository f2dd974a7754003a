"""The README tells the truth: its set-up lines, its Quick start commands, and --help on every command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dms.cli import main
from dms.embedded import PGDATA_DIR, EmbeddedServer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_block_after(heading: str) -> list[str]:
    """The commands of the first ```bash block after `heading`, comments stripped."""
    section = README.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block after {heading!r}"
    return [
        line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()
    ]


def test_readme_starts_with_the_two_commands() -> None:
    first_lines = README.splitlines()[:8]
    assert any("dms demo" in line for line in first_lines)
    assert any(line.startswith("bash tests/run") for line in first_lines)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tests/run" in ci


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "readme"
    yield path
    EmbeddedServer(path / PGDATA_DIR).stop()


def test_quick_start_commands_run_as_written(data_dir: Path) -> None:
    dms = shutil.which("dms", path=str(Path(sys.executable).parent))
    assert dms, "the dms console script is not installed next to this Python"
    env = {**os.environ, "DMS_DATA_DIR": str(data_dir)}
    env.pop("DMS_DATABASE_URL", None)
    outputs = {}
    for command in code_block_after("## Quick start"):
        args = command.split()
        assert args[0] == "dms"
        done = subprocess.run([dms, *args[1:]], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        outputs[command] = done.stdout
    assert "Created an embedded deployment" in outputs["dms init"]
    assert "control: base -> c0" in outputs["dms db upgrade"]
    assert outputs["dms status"].count("up to date") == 2
    assert "Reusing the deployment" in outputs["dms demo"] and "apdb" in outputs["dms demo"]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_commands(main)], ids=lambda p: " ".join(p) or "dms")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(result.output.splitlines()) > 3


def sql_examples() -> list[tuple[str, str]]:
    """(query, expected) from the README's ```sql block: `SELECT ...;   -- expected: comment`."""
    block = re.search(r"```sql\n(.*?)```", README, re.S)
    assert block
    examples = []
    for line in block.group(1).splitlines():
        query, _, comment = line.partition("--")
        examples.append((query.strip().rstrip(";"), comment.split(":", 1)[0].strip()))
    return examples


@pytest.mark.parametrize("backend", ["postgres", "duckdb"])
def test_sql_examples_give_the_values_written(backend: str, pg_conn: object) -> None:
    import duckdb
    import psycopg

    from dms.udfs import install_postgres, register_duckdb

    if backend == "postgres":
        assert isinstance(pg_conn, psycopg.Connection)
        install_postgres(pg_conn)
        run = lambda query: pg_conn.execute(query).fetchone()[0]  # noqa: E731
    else:
        duck = duckdb.connect()
        register_duckdb(duck)
        run = lambda query: duck.execute(query).fetchone()[0]  # noqa: E731
    examples = sql_examples()
    assert len(examples) >= 4
    for query, expected in examples:
        value = run(query)
        if expected == "NULL":
            assert value is None, query
        elif expected.endswith("..."):
            assert str(value).startswith(expected[:-3]), (query, value)
        else:
            assert value == pytest.approx(float(expected), rel=1e-12, abs=1e-12), (query, value)
