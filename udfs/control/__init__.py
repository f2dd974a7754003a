"""Functions of the control database only: EFD storage and transformation, QC evaluation (PostgreSQL).

Unlike ``udfs/postgres`` (installed in the control database and in every PostgreSQL shard, mirrored by
DuckDB macros), these read and write control-database tables, so they are installed by the control
revision that creates those tables (c0004). They live in the ``dms`` schema and are PL/pgSQL or SQL; the
SQL files document their semantics.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["control_drop_sql", "control_install_sql"]

_FUNCTION_NAME = re.compile(r"^CREATE OR REPLACE FUNCTION (dms\.\w+)\s*\(", re.MULTILINE)


def control_install_sql() -> str:
    """The script creating (or replacing) every control-database function, in file-name order."""
    directory = resources.files(__name__)
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def control_drop_sql() -> str:
    """The script dropping every function :func:`control_install_sql` creates, dependents first.

    Names are unique in the ``dms`` schema, so no argument lists are needed.
    """
    names = list(dict.fromkeys(_FUNCTION_NAME.findall(control_install_sql())))
    return "".join(f"DROP FUNCTION IF EXISTS {name};\n" for name in reversed(names))
