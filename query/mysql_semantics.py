"""MySQL's meaning of a bound Qserv-dialect query, in SQL that PostgreSQL and DuckDB shards evaluate alike.

Qserv's front end is MySQL, so a query written for Qserv means what it means in MySQL (MariaDB) under the
default collation (`utf8mb3_general_ci`): text compares, sorts and groups without regard to case; `/` is
exact division (scale of the dividend + 4 for exact operands); numbers are conditions (non-zero is true) and
conditions are numbers (0/1); `LIKE` applies to numbers through their text. Each rule below rewrites the bound
query (column types come from the registry) so the shards compute MySQL's answer; where no rewrite can
give MySQL's answer the query is refused with a message that says so, never answered differently.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import MappingSchema

from dms.query.errors import QueryRefused
from dms.query.validate import LOCAL_SCHEMA, UPLOAD_SCHEMA, Catalog
from dms.schema.catalog import SQL_TYPES

DIV_PRECISION_INCREMENT = 4  # MySQL's div_precision_increment default
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
BOOLEAN_NODES = (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Exists, exp.Escape)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv, exp.Neg, exp.BitwiseXor)
BIG = exp.DataType.build("double")


def mysql_semantics(query: exp.Query, catalog: Catalog) -> exp.Query:
    """The bound query rewritten to MySQL's meaning, or `QueryRefused` naming what cannot match MySQL."""
    schema = typed_schema(catalog)
    for select in list(query.find_all(exp.Select)):
        _refuse_case_blind_text(select, schema)
        _group_text_case_blind(select, schema)
        _order_text_case_blind(select, schema)
        _count_distinct_case_blind(select, schema)
    annotate_types(query, schema=schema, dialect="postgres")
    for node in list(query.find_all(*COMPARISONS, exp.In, exp.Between)):
        _compare_case_blind(node)
    for node in list(query.find_all(exp.Like)):
        _like_case_blind(node)
    for node in list(query.find_all(*ARITHMETIC)):
        _refuse_text_arithmetic(node)
    for node in list(query.find_all(exp.Div)):
        _exact_division(node)
    _numbers_as_conditions(query)
    _conditions_as_numbers(query)
    return query


def typed_schema(catalog: Catalog) -> MappingSchema:
    """The column types of everything a bound query names, under both spellings a bound column may have
    (lower case, or the catalog's own, quoted), with the real types of uploaded tables and intermediate
    results (the validation schema types them as text)."""
    mapping: dict[str, dict[str, dict[str, str]]] = {}
    for (schema, name), table in catalog.tables.items():
        columns = {c.name: SQL_TYPES[c.datatype] for c in table.columns}
        columns.update({"_chunk": "bigint", "_healpix_29": "bigint"})
        mapping.setdefault(schema, {})[name] = {**columns, **{k.lower(): v for k, v in columns.items()}}
    for (schema, name), control in catalog.control.items():
        mapping.setdefault(schema, {})[name] = {c.lower(): t for c, t in control.items()}
    for name, data in catalog.materialized.items():
        mapping.setdefault(LOCAL_SCHEMA, {})[name.lower()] = _arrow_columns(data)
    for name, data in catalog.uploads.items():
        mapping.setdefault(UPLOAD_SCHEMA, {})[name.lower()] = _arrow_columns(data)
    return MappingSchema(dict(mapping), dialect="postgres", normalize=False)  # type: ignore[arg-type, unused-ignore]


def _arrow_columns(data: pa.Table) -> dict[str, str]:
    types = {}
    for field in data.schema:
        kind = field.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            sql = "text"
        elif pa.types.is_integer(kind):
            sql = "bigint"
        elif pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            sql = "double precision"
        elif pa.types.is_boolean(kind):
            sql = "boolean"
        else:
            sql = "unknown"
        types[field.name] = types[field.name.lower()] = sql
    return types


# ---- types ------------------------------------------------------------------------------------------------


def _is_text(node: exp.Expression) -> bool:
    if isinstance(node, exp.Literal):
        return node.is_string
    if isinstance(node, exp.Paren):
        return _is_text(node.this)
    kind = node.type
    return kind is not None and kind.this in exp.DataType.TEXT_TYPES


def _is_integer(node: exp.Expression) -> bool:
    if isinstance(node, exp.Literal):
        return node.is_int
    if isinstance(node, exp.Paren | exp.Neg):
        return _is_integer(node.this)
    kind = node.type
    return kind is not None and kind.this in exp.DataType.INTEGER_TYPES


def _is_number(node: exp.Expression) -> bool:
    if isinstance(node, exp.Literal):
        return not node.is_string
    kind = node.type
    return kind is not None and kind.this in exp.DataType.NUMERIC_TYPES


def _is_boolean(node: exp.Expression) -> bool:
    if isinstance(node, exp.Paren):
        return _is_boolean(node.this)
    if isinstance(node, BOOLEAN_NODES):
        return True
    kind = node.type
    return kind is not None and kind.this == exp.DataType.Type.BOOLEAN


def _annotated(node: exp.Expression, schema: MappingSchema) -> exp.Expression:
    annotate_types(node, schema=schema, dialect="postgres")
    return node


def _lower(node: exp.Expression) -> exp.Expression:
    """Text as MySQL's default collation compares it: without regard to case, and without trailing spaces
    (a PAD SPACE collation: 'g' = 'G ')."""
    if isinstance(node, exp.Lower):
        return node
    return exp.Lower(this=exp.Trim(this=node, position="TRAILING"))


# ---- text: case-insensitive as MySQL's default collation ---------------------------------------------------


def _refuse_case_blind_text(select: exp.Select, schema: MappingSchema) -> None:
    """What has no MySQL-equal rewrite: DISTINCT rows with text (MySQL keeps one of 'g' and 'G', which
    one is not defined), MIN/MAX of text (MySQL's order ignores case)."""
    _annotated(select, schema)
    if select.args.get("distinct"):
        for projection in select.expressions:
            if _is_text(projection.unalias()) and not isinstance(projection.unalias(), exp.Lower | exp.Upper):
                raise QueryRefused(
                    f"SELECT DISTINCT over the text column {projection.alias_or_name!r}: MySQL (and Qserv) "
                    "compare text without regard to case and keep an arbitrary spelling of each value, which "
                    "DMS cannot reproduce; use GROUP BY, LOWER(...), or --lang sql for case-sensitive text"
                )
    for aggregate in select.find_all(exp.Min, exp.Max):
        if aggregate.parent_select is select and _is_text(aggregate.this):
            raise QueryRefused(
                f"{aggregate.sql('mysql')} of text: MySQL orders text without regard to case, so its "
                "MIN/MAX can differ from a case-sensitive one; use MIN(LOWER(...)) or --lang sql"
            )


def _group_text_case_blind(select: exp.Select, schema: MappingSchema) -> None:
    """GROUP BY text groups case-insensitively (LOWER(key)); the key shown for a group is one of its
    spellings, as MySQL shows one (MIN, a spelling that occurs in the group)."""
    group = select.args.get("group")
    if not group:
        return
    _annotated(select, schema)
    text_keys = [k for k in group.expressions if _is_text(k) and not isinstance(k, exp.Lower | exp.Upper)]
    if not text_keys:
        return
    for key in text_keys:
        spelled = key.copy()
        for part in (*select.expressions, select.args.get("having"), select.args.get("order")):
            if part is None:
                continue
            for node in list(part.find_all(type(key))):
                if node == spelled and node.find_ancestor(exp.AggFunc) is None:
                    node.replace(exp.Min(this=node.copy()))
        key.replace(_lower(key.copy()))


def _order_text_case_blind(select: exp.Select, schema: MappingSchema) -> None:
    """ORDER BY text orders case-insensitively: by LOWER(x) ('g' and 'G' are equal keys, ordered by the
    next key, in MySQL's undefined order of ties otherwise)."""
    order = select.args.get("order")
    if not order:
        return
    _annotated(select, schema)
    outputs = {p.alias_or_name.lower(): p.unalias() for p in select.expressions}
    items: list[exp.Expression] = []
    for item in order.expressions:
        key = item.this
        if isinstance(key, exp.Column) and not key.table and key.name.lower() in outputs:
            key = outputs[key.name.lower()]  # ORDER BY an output name
        if _is_text(key) and not isinstance(key, exp.Lower | exp.Upper | exp.Literal):
            item.set("this", _lower(key.copy()))
        items.append(item)
    order.set("expressions", items)


def _count_distinct_case_blind(select: exp.Select, schema: MappingSchema) -> None:
    """COUNT(DISTINCT text) counts 'g' and 'G' once."""
    _annotated(select, schema)
    for distinct in select.find_all(exp.Distinct):
        if isinstance(distinct.parent, exp.Count) and distinct.parent_select is select:
            distinct.set("expressions", [_lower(e) if _is_text(e) else e for e in distinct.expressions])


def _compare_case_blind(node: exp.Condition) -> None:
    """Comparisons, IN and BETWEEN of text ignore case; text compared with a number is refused (MySQL
    would convert the text to a number: 'abc' = 0 is true there)."""
    operands = [node.this]
    if isinstance(node, exp.In):
        operands += node.expressions
    elif isinstance(node, exp.Between):
        operands += [node.args["low"], node.args["high"]]
    else:
        operands.append(node.expression)
    texts = [_is_text(o) for o in operands]
    if not any(texts):
        return
    if any(_is_number(o) for o in operands):
        raise QueryRefused(
            f"{node.sql('mysql')} compares text with a number: MySQL converts the text to a number "
            "there; write CAST(... AS SIGNED) or compare text with text"
        )
    for operand in operands:
        if not isinstance(operand, exp.Null | exp.Lower | exp.Subquery):
            operand.replace(_lower(operand.copy()))


def _like_case_blind(node: exp.Like) -> None:
    """LIKE ignores case as MySQL's; LIKE on an integer matches its decimal text; on a floating-point
    number it is refused (MySQL's text of a double differs from PostgreSQL's and DuckDB's)."""
    subject = node.this
    if _is_integer(subject):
        subject.replace(exp.Cast(this=subject.copy(), to=exp.DataType.build("text")))
    elif _is_number(subject):
        raise QueryRefused(
            f"{node.sql('mysql')}: LIKE on a floating-point value depends on MySQL's text form of "
            "doubles, which DMS cannot reproduce; compare the number instead"
        )
    # every argument kept: NOT LIKE is LIKE with negate set
    insensitive = exp.ILike(
        **{k: v.copy() if isinstance(v, exp.Expression) else v for k, v in node.args.items()}
    )
    if isinstance(node.parent, exp.Escape):
        node.replace(insensitive)
    else:  # MySQL's escape character is backslash (PostgreSQL's default too; DuckDB has none by default)
        node.replace(exp.Escape(this=insensitive, expression=exp.Literal.string("\\")))


# ---- numbers --------------------------------------------------------------------------------------------


def _refuse_text_arithmetic(node: exp.Condition) -> None:
    """Arithmetic on text: MySQL converts the text to a number ('3abc' + 1 = 4), which no shard does."""
    for operand in node.args.values():
        if not isinstance(operand, exp.Expression) or not _is_text(operand):
            continue
        if isinstance(operand, exp.Literal) and _numeric_text(operand.this):
            continue
        raise QueryRefused(
            f"{node.sql('mysql')} does arithmetic on text: MySQL converts the text to a number there; "
            "write CAST(... AS DOUBLE) on a column of numbers in text"
        )


def _numeric_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _exact_division(node: exp.Div) -> None:
    """`/` is never integer division in MySQL. Exact operands (integers, decimal literals) give an exact
    result with the dividend's scale + 4 digits (7/3 = 2.3333), rounded half away from zero; any
    floating-point operand gives the double quotient. Division by zero is NULL."""
    left, right = node.this, node.expression
    quotient = exp.Div(
        this=exp.Cast(this=left.copy(), to=BIG),
        expression=exp.Nullif(this=right.copy(), expression=exp.Literal.number(0)),
    )
    exact = all(
        _is_integer(o) or (isinstance(o, exp.Literal) and _literal_scale(o) >= 0) for o in (left, right)
    )
    if not exact:
        node.replace(exp.paren(quotient))
        return
    scale = (_literal_scale(left) if isinstance(left, exp.Literal) else 0) + DIV_PRECISION_INCREMENT
    node.replace(exp.paren(_round_half_away(quotient, scale)))


def _literal_scale(literal: exp.Literal) -> int:
    """Digits after the point of an exact numeric literal; -1 for a floating-point one (1e3)."""
    text = literal.this
    if literal.is_string or "e" in text.lower():
        return -1
    return len(text.split(".", 1)[1]) if "." in text else 0


def _round_half_away(value: exp.Expression, scale: int) -> exp.Expression:
    """ROUND(value, scale) half away from zero, in double arithmetic both shard kinds have
    (PostgreSQL has no ROUND(double, int))."""
    factor = exp.Literal.number(10**scale)
    magnitude = exp.Floor(
        this=exp.Add(
            this=exp.Mul(this=exp.Abs(this=value.copy()), expression=factor),
            expression=exp.Literal.number(0.5),
        )
    )
    return exp.Div(this=exp.Mul(this=exp.func("SIGN", value), expression=magnitude), expression=factor.copy())


def _numbers_as_conditions(query: exp.Query) -> None:
    """A number where a condition is expected is true when non-zero (`WHERE flags`, `a AND 1`); text
    there is refused (MySQL would convert it to a number)."""

    def condition(node: exp.Expression) -> None:
        if _is_boolean(node) or isinstance(node, exp.Null | exp.Subquery):
            return
        if _is_text(node):
            raise QueryRefused(
                f"the text {node.sql('mysql')} is used as a condition: MySQL converts it to a number "
                "there; compare it instead"
            )
        node.replace(exp.NEQ(this=exp.paren(node.copy()), expression=exp.Literal.number(0)))

    for clause in list(query.find_all(exp.Where, exp.Having)):
        condition(clause.this)
    for join in list(query.find_all(exp.Join)):
        if join.args.get("on") is not None:
            condition(join.args["on"])
    for connector in list(query.find_all(exp.Connector)):
        if isinstance(connector, exp.And | exp.Or | exp.Xor):
            condition(connector.this)
            condition(connector.expression)
    for negation in list(query.find_all(exp.Not)):
        condition(negation.this)
    for branch in list(query.find_all(exp.If)):
        condition(branch.this)


def _conditions_as_numbers(query: exp.Query) -> None:
    """A condition where a value is expected is the number 0 or 1 (`SELECT a > b`, `SUM(flux > 0)`)."""
    for node in list(query.find_all(*BOOLEAN_NODES)):
        if isinstance(node, exp.Exists) and isinstance(node.parent, exp.Where | exp.Having):
            continue
        parent = node.parent
        value_context = isinstance(parent, (*ARITHMETIC, *COMPARISONS, exp.AggFunc, exp.Ordered)) or (
            isinstance(parent, exp.Alias)
            and parent.parent is not None
            and isinstance(parent.parent, exp.Select)
        )
        if isinstance(parent, exp.Select) and node in parent.expressions:
            value_context = True
        if value_context and not isinstance(node, exp.Boolean):
            # INT: PostgreSQL casts a boolean to integer only, not to bigint
            node.replace(exp.Cast(this=node.copy(), to=exp.DataType.build("int")))
