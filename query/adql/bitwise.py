"""ADQL 2.1's bitwise operators (`&`, `|`, `^`, `~`) and hexadecimal literals (`0x1F`), section 2.4.

Both take integers only (SMALLINT, INTEGER, BIGINT). The literals become decimal integers, and every operand
of a bitwise operator that is itself an operation is bracketed, so that PostgreSQL (`&`, `|`, `#`, `~`) and
DuckDB (`&`, `|`, `xor()`, `~`) evaluate the tree the ADQL grammar built, whatever their own precedence.
An operand that is certainly not an integer (a real literal, a string, a geometry, a function
of real result, a column of a real or text type) is an error naming it; an operand of unknown type is left
to the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sqlglot import exp

from dms.query.adql.errors import AdqlSyntaxError

BITWISE_NODES = (exp.BitwiseAnd, exp.BitwiseOr, exp.BitwiseXor, exp.BitwiseNot)
SYMBOLS = {exp.BitwiseAnd: "&", exp.BitwiseOr: "|", exp.BitwiseXor: "^", exp.BitwiseNot: "~"}
MAX_BIGINT = 2**63 - 1
INTEGER_TYPES = frozenset({"smallint", "integer", "int", "int2", "int4", "int8", "bigint", "tinyint"})
# Functions whose result is never an integer (ADQL's math functions are double; DMS's region and
# photometry functions are double or arrays).
REAL_NODES: tuple[type[exp.Expr], ...] = (
    exp.Sqrt,
    exp.Exp,
    exp.Ln,
    exp.Log,
    exp.Pow,
    exp.Radians,
    exp.Degrees,
    exp.Pi,
    exp.Rand,
    exp.Acos,
    exp.Asin,
    exp.Atan,
    exp.Atan2,
    exp.Cos,
    exp.Cot,
    exp.Sin,
    exp.Tan,
    exp.Avg,
    exp.Array,
    exp.Lower,
    exp.Upper,
    exp.DPipe,
)
REAL_FUNCTIONS = frozenset(
    {
        "scisql_angsep",
        "scisql_nanojanskytoabmag",
        "scisql_nanojanskytoabmagsigma",
        "scisql_abmagtonanojansky",
        "scisql_fluxtoabmag",
        "adql_area",
        "adql_centroid",
        "adql_round",
        "adql_mod",
        "adql_in_unit",
    }
)


def _operands(node: exp.Expr) -> Iterator[exp.Expr]:
    if isinstance(node, exp.BitwiseNot):
        yield node.this
    else:
        yield node.this
        yield node.expression


def _bare(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def not_integer(node: exp.Expr) -> str | None:
    """Why `node` is certainly not an integer value (a phrase naming it), or None when it is or may be."""
    node = _bare(node)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return f"the string {node.sql('postgres')}"
        if any(c in node.this for c in ".eE"):
            return f"the real number {node.this}"
        return None
    if isinstance(node, exp.Cast):
        target = node.to.sql("postgres").lower()
        if target in INTEGER_TYPES:
            return None
        return f"a CAST to {node.to.sql('postgres')}"
    if isinstance(node, REAL_NODES):
        return f"{node.key.upper()}(...), which is not an integer"
    if isinstance(node, exp.Anonymous) and node.name.lower() in REAL_FUNCTIONS:
        return f"{node.name}(...), which is not an integer"
    if isinstance(node, exp.Neg | exp.Abs | exp.Floor | exp.Ceil | exp.Round | exp.Trunc):
        return not_integer(node.this) if isinstance(node, exp.Neg | exp.Abs) else _rounded(node)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
        # the engine divides integers as PostgreSQL does, on every backend
        return not_integer(node.this) or not_integer(node.expression)
    return None


def _rounded(node: exp.Expr) -> str:
    return f"{node.key.upper()}(...), which is real in ADQL: CAST it AS BIGINT"


def _hexadecimal(node: exp.HexString) -> exp.Expr:
    value = int(node.this, 16)
    if value > MAX_BIGINT:
        raise AdqlSyntaxError(
            f"the hexadecimal literal 0x{node.this} is larger than the largest BIGINT "
            f"(0x{MAX_BIGINT:X}); ADQL's hexadecimal literals are unsigned integers",
            token=f"0x{node.this}",
        )
    return exp.Literal.number(str(value))


def lower_bitwise(tree: exp.Expression) -> exp.Expression:
    """Hexadecimal literals as integers, bitwise operands bracketed, non-integer operands refused."""
    for hexadecimal in list(tree.find_all(exp.HexString)):
        hexadecimal.replace(_hexadecimal(hexadecimal))
    for node in list(tree.find_all(*BITWISE_NODES)):
        symbol = SYMBOLS[type(node)]
        for operand in list(_operands(node)):
            why = not_integer(operand)
            if why is not None:
                raise AdqlSyntaxError(
                    f"the bitwise operator {symbol} needs integers, got {why}", token=symbol
                )
            if isinstance(operand, exp.Binary | exp.Unary) and not isinstance(operand, exp.Paren):
                bracket = exp.Paren()
                operand.replace(bracket)
                bracket.set("this", operand)
    return tree


def check_column_types(tree: exp.Expr, type_of: Callable[[exp.Column], str | None]) -> None:
    """Refuse a bitwise operator on a column whose type (`type_of`, lower-case SQL) is not an integer type.

    Raises AdqlSyntaxError at the column's position in the query when the parser recorded it."""
    for node in tree.find_all(*BITWISE_NODES):
        for operand in _operands(node):
            for column in _columns_of(_bare(operand)):
                datatype = type_of(column)
                if datatype is None or datatype.lower() in INTEGER_TYPES:
                    continue
                meta = column.this.meta if isinstance(column.this, exp.Identifier) else {}
                line = meta.get("line")
                # sqlglot records the column of a token's last character
                first = meta["col"] - (meta["end"] - meta["start"]) if line is not None else None
                raise AdqlSyntaxError(
                    f"the bitwise operator {SYMBOLS[type(node)]} needs integers, got column "
                    f"{column.name} of type {datatype.upper()}",
                    line,
                    first,
                    token=column.name,
                )


def _columns_of(node: exp.Expr) -> Iterator[exp.Column]:
    """The columns whose type is the operand's type: the operand itself, or those under + - * and signs."""
    if isinstance(node, exp.Column):
        yield node
    elif isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
        yield from _columns_of(_bare(node.this))
        yield from _columns_of(_bare(node.expression))
    elif isinstance(node, exp.Neg | exp.Abs):
        yield from _columns_of(_bare(node.this))
