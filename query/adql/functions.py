"""ADQL's non-geometric functions: the allowed set, their PostgreSQL/DuckDB renames, IN_UNIT and ivo_*.

Every function a query calls must be an ADQL 2.1 function, an ``ivo_*`` function DMS implements, or one of
the DMS SQL functions (``scisql_*``, ``ivo_healpix_index``); anything else (``pg_sleep``, ``read_csv``, ...)
is a syntax error. That keeps translated queries portable between the backends and keeps users away from
server functions.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from dms.query.adql.errors import AdqlSyntaxError, AdqlUnsupportedError
from dms.query.adql.rewrite import rewrite
from dms.udfs import ADQL_FUNCTIONS, FUNCTIONS

UnitOf = Callable[[exp.Column], str | None]
#: A unit `unit_of` may give to name a query's tables without knowing its columns' units: IN_UNIT then keeps
#: its column as it is (the tree is for reading names, never for running).
ANY_UNIT = "*"
"""Looks up the unit (a VOUnit string) of a column reference, or None if it has none or is unknown."""

# sqlglot's typed nodes for the ADQL 2.1 functions and SQL-92 forms ADQL includes.
ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Abs,
    exp.Ceil,
    exp.Degrees,
    exp.Exp,
    exp.Floor,
    exp.Ln,
    exp.Pi,
    exp.Pow,
    exp.Radians,
    exp.Sqrt,
    exp.Rand,
    exp.Round,
    exp.Trunc,
    exp.Acos,
    exp.Asin,
    exp.Atan,
    exp.Atan2,
    exp.Cos,
    exp.Cot,
    exp.Sin,
    exp.Tan,
    exp.Lower,
    exp.Upper,
    exp.Coalesce,
    exp.Nullif,
    exp.Cast,
    exp.TryCast,
    exp.Case,
    exp.If,
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Length,
    exp.Substring,
    exp.Trim,
    exp.Array,
    exp.Bracket,
    exp.StrPosition,
    exp.CurrentTimestamp,
    exp.CurrentDate,
    exp.Exists,
    exp.Any,
    exp.All,
    exp.GroupConcat,
)

# Lower-case names of the DMS SQL functions a query may call directly.
UDF_NAMES = frozenset(
    name.lower()
    for name in (
        *FUNCTIONS,
        *ADQL_FUNCTIONS,
        "log10",
        "string_agg",
    )
)


def _in_unit(node: exp.Anonymous, unit_of: UnitOf | None) -> exp.Expression:
    """IN_UNIT(column, 'unit'): the column times the constant factor from its unit to the target unit."""
    from astropy import units

    value, target = [*node.expressions, None, None][:2]
    if (
        value is None
        or not (isinstance(target, exp.Literal) and target.is_string)
        or len(node.expressions) != 2
    ):
        raise AdqlSyntaxError("IN_UNIT takes a column and a literal unit string, e.g. IN_UNIT(ra, 'arcsec')")
    source = unit_of(value) if (unit_of is not None and isinstance(value, exp.Column)) else None
    if source == ANY_UNIT:
        return exp.paren(value.copy())
    if source is None:
        raise AdqlUnsupportedError(
            f"IN_UNIT: the unit of {value.sql()} is not known (IN_UNIT needs a column with a unit)"
        )
    try:
        factor = units.Unit(source, format="vounit", parse_strict="raise").to(
            units.Unit(target.this, format="vounit", parse_strict="raise")
        )
    except (ValueError, units.UnitConversionError) as exc:
        raise AdqlSyntaxError(
            f"IN_UNIT: cannot convert {value.sql()} from {source!r} to {target.this!r}: {exc}"
        ) from exc
    return exp.paren(
        exp.Mul(this=exp.paren(value.copy()), expression=exp.Literal.number(repr(float(factor))))
    )


def _seeded_rand(seed: exp.Expression) -> exp.Expression:
    """RAND(seed): one pseudo-random value in [0, 1) fixed by the seed, the same on both backends and on
    every run (as SQL Server's RAND(seed)); RAND() gives a new value per row."""
    import random

    from dms.query.adql import frames

    if not (isinstance(seed, exp.Literal) and seed.is_int):
        raise AdqlSyntaxError("RAND takes an unsigned integer seed, e.g. RAND(42)", token="RAND")
    value = random.Random(int(seed.this)).random()
    frames.note(
        f"RAND({seed.this}) is the value {value!r}, fixed by the seed for the whole query; use RAND() for a "
        "value per row",
        info_name="RAND",
    )
    # a double on both backends (a bare literal is NUMERIC on PostgreSQL)
    return exp.Cast(this=exp.Literal.number(repr(value)), to=exp.DataType.build("DOUBLE PRECISION"))


def _rename(node: exp.Expression, unit_of: UnitOf | None) -> exp.Expression:
    """One node: ADQL semantics spelled in functions that mean the same on PostgreSQL and DuckDB."""
    from dms.query.adql.geometry import as_int, fn

    if isinstance(node, exp.Round) and node.args.get("decimals") is not None:
        return fn("adql_round", node.this, node.args["decimals"])
    if isinstance(node, exp.Trunc) and node.args.get("decimals") is not None:
        return fn("adql_truncate", node.this, node.args["decimals"])
    if isinstance(node, exp.Mod):
        return fn("adql_mod", node.this, node.expression)
    if isinstance(node, exp.Log):
        # ADQL has LOG (natural, already an Ln node) and LOG10; sqlglot reads LOG10(x) as LOG(10, x).
        if node.this.sql() != "10" or node.expression is None:
            raise AdqlSyntaxError("LOG takes one argument; use LOG10 for the decimal logarithm")
        return fn("LOG10", node.expression)
    if isinstance(node, exp.Rand) and node.this is not None:
        return _seeded_rand(node.this)
    if not isinstance(node, exp.Anonymous):
        return node
    name = node.name.lower()
    args = list(node.expressions)
    if name == "in_unit":
        return _in_unit(node, unit_of)
    if name == "ivo_string_agg":
        return fn("STRING_AGG", *args)
    if name == "ivo_nocasematch" and len(args) == 2:
        return as_int(exp.ILike(this=args[0], expression=args[1]))
    return node


def lower_functions(tree: exp.Expression, unit_of: UnitOf | None = None) -> exp.Expression:
    """Rename ADQL functions to their portable DMS spelling (see the module docstring)."""
    return rewrite(tree, lambda n: _rename(n, unit_of))


def check_functions(tree: exp.Expression, allowed_extra: frozenset[str] = frozenset()) -> None:
    """Refuse any function call that is not part of ADQL 2.1 or the DMS SQL functions."""
    for node in tree.find_all(exp.Func):
        if isinstance(node, exp.Binary | exp.Unary | exp.Connector):
            continue  # operators that sqlglot also models as functions (AND, OR, ...)
        if isinstance(node, exp.Anonymous):
            if node.name.lower() not in UDF_NAMES | allowed_extra:
                raise AdqlSyntaxError(f"unknown function {node.name}", token=node.name)
        elif isinstance(node, exp.AggFunc | exp.Window) and isinstance(node, ALLOWED_NODES):
            continue
        elif not isinstance(node, ALLOWED_NODES):
            raise AdqlSyntaxError(f"unknown function {node.sql_name()}", token=node.sql_name())
