"""Where a command's query text comes from: the argument, `-f FILE`, or standard input (`-`).

A query that begins with an SQL comment (`-- ...`) would be read as an option if given as the argument;
`-f FILE`, `-` (standard input) or `--` before the query avoid that.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
STDIN = "-"


def query_source(name: str) -> Callable[[F], F]:
    """Add the optional query argument and `-f/--file` to a command; it receives the text as `name`."""

    def decorate(func: F) -> F:
        @click.argument(name, required=False, metavar=f"[{name.upper()} | -]")
        @click.option(
            "--file",
            "-f",
            "query_file",
            type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
            help="Read the query from this file ('-' for standard input).",
        )
        @functools.wraps(func)
        def wrapper(*args: Any, query_file: Path | None, **kwargs: Any) -> Any:
            kwargs[name] = read_query(kwargs.get(name), query_file)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def read_query(query: str | None, query_file: Path | None) -> str:
    """The query text from exactly one of the argument, the file, or standard input."""
    if query is not None and query_file is not None:
        raise click.UsageError("give the query either as an argument or with -f/--file, not both")
    if query_file is not None and str(query_file) != STDIN:
        try:
            return query_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {query_file}: {exc}", param_hint="-f/--file") from None
    if query == STDIN or (query_file is not None and str(query_file) == STDIN):
        return sys.stdin.read()
    if query is None:
        raise click.UsageError("give a query: as an argument, with -f FILE, or '-' to read standard input")
    return query
