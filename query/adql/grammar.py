"""The strict ADQL 2.1 check: every query is parsed with the Recommendation's grammar before translation.

sqlglot reads ADQL leniently (it accepts `SELECT a` without FROM, `x IN (1, 2,)`, reserved words as
names...), so the text is first parsed with ``adql21.lark``, a lark LALR(1) port of the ADQL 2.1 BNF, and
then checked for what the BNF states in words. Anything that is not ADQL 2.1 is an AdqlSyntaxError naming
the line, the column, what was found and what the grammar expected there.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from dms.query.adql.errors import AdqlSyntaxError

# SQL-92 and ADQL 2.1 reserved words that the grammar never uses: they can name nothing unless quoted.


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


RESERVED_WORDS = _words(
    """
    ABSOLUTE ACTION ADD ALLOCATE ALTER ARE ASSERTION AT AUTHORIZATION BEGIN BIT BIT_LENGTH BOTH CASCADE
    CASCADED CHARACTER CHAR_LENGTH CHARACTER_LENGTH CHECK CLOSE COLLATE COLLATION COLUMN COMMIT CONNECT
    CONNECTION CONSTRAINT CONSTRAINTS CONTINUE CONVERT CORRESPONDING CREATE CURRENT CURRENT_DATE
    CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURSOR DATE DAY DEALLOCATE DECIMAL DECLARE DEFAULT
    DEFERRABLE DEFERRED DELETE DESCRIBE DESCRIPTOR DIAGNOSTICS DISCONNECT DOMAIN DROP ESCAPE EXCEPTION EXEC
    EXECUTE EXTERNAL EXTRACT FALSE FETCH FIRST FLOAT FOR FOREIGN FOUND GET GLOBAL GO GOTO GRANT HOUR
    IDENTITY IMMEDIATE INDICATOR INITIALLY INPUT INSENSITIVE INSERT INT INTERVAL INTO ISOLATION KEY
    LANGUAGE LAST LEADING LEVEL LOCAL MATCH MINUTE MODULE MONTH NAMES NATIONAL NCHAR NEXT NO NUMERIC
    OCTET_LENGTH OF ONLY OPEN OPTION OUTPUT OVERLAPS PAD PARTIAL POSITION PREPARE PRESERVE PRIMARY PRIOR
    PRIVILEGES PROCEDURE PUBLIC READ REFERENCES RELATIVE RESTRICT REVOKE ROLLBACK ROWS SCHEMA SCROLL
    SECOND SECTION SESSION SESSION_USER SET SIZE SPACE SQL SQLCODE SQLERROR SQLSTATE SUBSTRING
    SYSTEM_USER TABLE TEMPORARY TIME TIMEZONE_HOUR TIMEZONE_MINUTE TO TRAILING TRANSACTION TRANSLATE
    TRANSLATION TRIM TRUE UNIQUE UNKNOWN UPDATE USAGE USER VALUE VALUES VARYING VIEW WHENEVER WORK WRITE
    YEAR ZONE
    """
)
# How the terminals that are not a fixed word are named in messages.
DESCRIPTIONS = {
    "NUMBER": "a number",
    "STRING": "a string literal",
    "REGULAR_IDENTIFIER": "a name",
    "DELIMITED_IDENTIFIER": 'a "quoted name"',
    "COMP_OP": "a comparison operator",
    "HEXADECIMAL": "a hexadecimal literal",
    "MALFORMED_HEXADECIMAL": "a hexadecimal literal",
    "RESERVED_WORD": "a reserved word",
    "$END": "the end of the query",
}
MAX_EXPECTED_SHOWN = 12
MAX_BIGINT = 2**63 - 1
BITWISE_TOKENS = frozenset({"AMPERSAND", "VERTICAL_BAR", "CIRCUMFLEX"})
POINT_VALUES = ("point", "centroid", "column_reference", "user_defined_function")
CHARACTER_HINTS = {
    "_": "unexpected character '_' (a name must start with a letter: quote it as \"_name\")",
    ";": "unexpected ';': give exactly one query, without a statement terminator",
    "'": 'unexpected "\'": a string literal is not closed',
    '"': "unexpected '\"': a quoted name is not closed",
}
STATEMENT_HINTS = {
    "INTO": "SELECT ... INTO is not allowed: queries cannot create tables",
    "FOR": "locking clauses (FOR UPDATE/SHARE) are not allowed in a query",
}
# Reserved words that the grammar knows as functions with arguments.
FUNCTION_WORDS = _words(
    """ABS ACOS AREA ASIN ATAN ATAN2 AVG BOX CAST CEILING CENTROID CIRCLE COALESCE CONTAINS COORD1 COORD2
    COORDSYS COS COT COUNT DEGREES DISTANCE EXP FLOOR INTERSECTS IN_UNIT LOG LOG10 LOWER MAX MIN MOD
    NULLIF PI POINT POLYGON POWER RADIANS RAND REGION ROUND SIN SQRT SUM TAN TRUNCATE UPPER"""
)


def _reserved(token: Token) -> Token:
    if token.upper() in RESERVED_WORDS:
        return Token.new_borrow_pos("RESERVED_WORD", token, token)
    return token


@functools.cache
def parser() -> Lark:
    """The ADQL 2.1 parser (built once; LALR(1) with the basic lexer, so keywords are never names)."""
    text = resources.files("dms.query.adql").joinpath("adql21.lark").read_text()
    return Lark(
        text,
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=False,
        lexer_callbacks={"REGULAR_IDENTIFIER": _reserved},
    )


def check(text: str) -> Tree[Token]:
    """Parse `text` with the ADQL 2.1 grammar and check what the grammar states in words.

    Returns the parse tree; raises AdqlSyntaxError with line and column for anything else.
    """
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    _check_words(tree)
    return tree


MEMO_MAX_CHARS = 8192  # longer texts are checked every time (the memo holds texts, not trees)


@functools.lru_cache(maxsize=1024)
def _accepted(text: str) -> None:
    check(text)  # raises for a text the grammar refuses: refusals are not remembered


def check_once(text: str) -> None:
    """:func:`check` for a text the grammar may have accepted before: one request parses its query several
    times (visibility, routing, the engine, result metadata), and the lark parse is most of each."""
    if len(text) > MEMO_MAX_CHARS:
        check(text)
    else:
        _accepted(text)


def _syntax_error(text: str, exc: UnexpectedInput) -> AdqlSyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        position = exc.pos_in_stream or 0
        char = text[position] if position < len(text) else ""
        message = CHARACTER_HINTS.get(char, f"unexpected character {char!r}")
        return AdqlSyntaxError(message, exc.line, exc.column)
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    expected = _expected(exc.expected)
    if token.type == "$END":
        line, column = _end_of(text)
        return AdqlSyntaxError(f"the query ends too early; expected {expected}", line, column)
    message = f"unexpected {str(token)!r}; expected {expected}"
    previous = _previous_word(text, token.start_pos or 0)
    if not re.sub(r"--[^\n]*|\s", "", text[: token.start_pos or 0]):
        message = f"expected SELECT (or WITH ... SELECT), got {token.upper()}"
    elif token.upper() in STATEMENT_HINTS:
        message = STATEMENT_HINTS[token.upper()]
    elif token.type == "RESERVED_WORD" and "REGULAR_IDENTIFIER" in exc.expected:
        message += f' ({token} is a reserved word: quote it as "{token}" to use it as a name)'
    elif previous.upper() == "LIMIT":
        message = "ADQL has no LIMIT: write SELECT TOP n ..."
        line, column = _position(text, token.start_pos - len(previous) - _gap(text, token.start_pos))
        return AdqlSyntaxError(message, line, column)
    elif token.type in BITWISE_TOKENS:
        message += f" (the bitwise operator {token} takes integers, not a string, a geometry or a condition)"
    elif token.type == "TILDE":
        message += " (a bitwise NOT after a sign or an arithmetic operator goes in brackets: a + (~b))"
    elif token.type == "WITH":
        message += " (WITH may only begin the whole query, not a subquery or a set operand)"
    elif exc.expected == {"LPAR"} and previous.upper() in FUNCTION_WORDS:
        message = (
            f'{previous} is an ADQL function name (a reserved word): quote it as "{previous}" to use it '
            f"as a name; as a function it needs (...)"
        )
        line, column = _position(text, token.start_pos - len(previous) - _gap(text, token.start_pos))
        return AdqlSyntaxError(message, line, column)
    return AdqlSyntaxError(message, token.line, token.column)


def _gap(text: str, end: int) -> int:
    """Blank characters just before position `end`."""
    return len(text[:end]) - len(text[:end].rstrip())


def _previous_word(text: str, end: int) -> str:
    match = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*\Z", text[:end])
    return match.group(1) if match else ""


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _expected(names: set[str]) -> str:
    terminals = {t.name: t for t in parser().terminals}
    shown: list[str] = []
    for name in names:
        if name in DESCRIPTIONS:
            shown.append(DESCRIPTIONS[name])
        elif name in terminals and terminals[name].pattern.type == "str":
            word = str(terminals[name].pattern.value).upper()
            shown.append(word if word[0].isalpha() else f"'{word}'")
        else:
            shown.append(name)
    shown = list(dict.fromkeys(shown))  # HEXADECIMAL and MALFORMED_HEXADECIMAL read alike
    shown.sort(key=lambda s: (not s.startswith("a "), not s.startswith("'"), s))
    more = ", ..." if len(shown) > MAX_EXPECTED_SHOWN else ""
    words = shown[:MAX_EXPECTED_SHOWN]
    return (" or ".join(words) if len(words) <= 2 else "one of " + ", ".join(words)) + more


def _end_of(text: str) -> tuple[int, int]:
    """Line and column just after the last character that is not blank or a comment."""
    return _position(text, len(re.sub(r"(--[^\n]*|\s)+\Z", "", text)))


def _first_token(tree: Tree[Token] | Token) -> Token:
    if isinstance(tree, Token):
        return tree
    for child in tree.children:
        if isinstance(child, Tree | Token):
            return _first_token(child)
    raise AssertionError("an empty parse tree")  # pragma: no cover


def _fail(node: Tree[Token] | Token, message: str) -> AdqlSyntaxError:
    token = _first_token(node)
    return AdqlSyntaxError(message, token.line, token.column)


def _check_words(tree: Tree[Token]) -> None:
    """What the BNF says in its terminals: TOP, OFFSET, RAND, CHAR(n) take unsigned integers, and
    the geometry constructors their number of coordinates."""
    for node in tree.iter_subtrees():
        if node.data == "malformed_hexadecimal":
            raise _fail(
                node,
                f"malformed hexadecimal literal {node.children[0]}: 0x must be followed by the hex "
                "digits 0-9 and A-F only (e.g. 0x1F)",
            )
        if node.data == "hexadecimal" and int(str(node.children[0])[2:], 16) > MAX_BIGINT:
            raise _fail(
                node,
                f"the hexadecimal literal {node.children[0]} is larger than the largest BIGINT "
                f"(0x{MAX_BIGINT:X}); ADQL's hexadecimal literals are unsigned integers",
            )
        if node.data == "unsigned_integer":
            number = node.children[0]
            if not re.fullmatch(r"\d+", str(number)):
                raise _fail(node, f"expected an unsigned integer, got {number}")
        elif node.data in ("point", "circle", "box", "polygon"):
            _check_geometry(node)
        elif node.data == "coalesce_expression":
            arguments = [c for c in node.children if isinstance(c, Tree)]
            if all(a.data == "null" for a in arguments):
                raise _fail(node, "COALESCE needs at least one argument that is not NULL")


def _check_geometry(node: Tree[Token]) -> None:
    name = str(node.children[0]).upper()
    arguments = node.children[1]
    assert isinstance(arguments, Tree)
    coordinates = [
        c for c in arguments.children if not (isinstance(c, Token) and c.type in ("STRING", "NULL"))
    ]
    points = [c for c in coordinates if isinstance(c, Tree) and c.data in ("point", "centroid")]
    count = len(coordinates)
    if name == "POINT":
        if count != 2 or points:
            raise _fail(node, f"POINT takes 2 coordinates, got {count}")
    elif name == "CIRCLE":
        centred = count == 2 and _may_be_point(coordinates[0])  # CIRCLE(point, radius)
        if not (centred or (count == 3 and not points)):
            raise _fail(node, f"CIRCLE takes a centre (a point or 2 coordinates) and a radius, got {count}")
    elif name == "BOX":
        centred = count == 3 and _may_be_point(coordinates[0])  # BOX(point, width, height)
        if not (centred or (count == 4 and not points)):
            raise _fail(
                node, f"BOX takes a centre (a point or 2 coordinates), a width and a height, got {count}"
            )
    elif points:
        if any(not _may_be_point(c) for c in coordinates):
            raise _fail(node, "POLYGON takes either points or coordinates, not both")
        if count < 3:
            raise _fail(node, f"POLYGON needs at least 3 vertices, got {count}")
    elif count < 6 or count % 2:
        if count >= 3 and all(_may_be_point(c) for c in coordinates):
            return  # point-valued columns
        raise _fail(
            node, f"POLYGON needs at least 3 vertices (pairs of coordinates), got {count} coordinates"
        )


def _may_be_point(node: Tree[Token] | Token) -> bool:
    return isinstance(node, Tree) and node.data in POINT_VALUES


@functools.cache
def keywords() -> frozenset[str]:
    """Every word that cannot be a regular identifier: the grammar's keywords and the other reserved words."""
    words = {str(t.pattern.value).upper() for t in parser().terminals if t.pattern.type == "str"}
    return frozenset({w for w in words if w[:1].isalpha()} | RESERVED_WORDS)


def quote_identifier(name: str) -> str:
    """`name` as an ADQL identifier: bare when it is a lower-case regular identifier, else delimited."""
    if re.fullmatch(r"[a-z][a-z0-9_]*", name) and name.upper() not in keywords():
        return name
    return '"' + name.replace('"', '""') + '"'
