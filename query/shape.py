"""The shape of a query: its text with every number and string literal taken out, and the literals.

Two queries of one shape differ only in their literals (a cone at other coordinates, a lookup of another
id), so the engine can answer the second from the first one's plan with the new values bound as parameters
(dms.query.fast_path). Finding the literals is one regular-expression pass over the text, not a parse:
it costs microseconds, where parsing and binding the query cost milliseconds.

The pass is deliberately conservative: a query with a comment, a dollar sign, a backslash or a prefixed
string (E'..', X'..', N'..') has no shape (it is planned as usual), so that every literal the pass reports
is one the SQL parser reads as a literal at the same place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

_TOKEN = re.compile(
    r"""'(?P<string>(?:[^']|'')*)'"""  # a string literal ('' is a quote)
    r"""|"(?:[^"]|"")*"|`[^`]*`"""  # quoted identifiers (MySQL strings in double quotes: kept as text)
    r"|(?<![\w.])(?P<number>\d+(?P<fraction>\.\d*)?)(?P<exponent>[eE][+-]?\d+)?(?![\w.])",
)
_UNSAFE = re.compile(r"--|/\*|\$|\\")
"""Text whose literals the pass might not see as the parser does: comments, dollar quoting and
parameters, backslash escapes."""


@dataclass(frozen=True)
class Literal:
    """One literal of a query: where it is in the text, its kind ("int", "decimal", "string") and its
    text (a string's content, unquoted)."""

    start: int
    end: int
    kind: str
    text: str

    @property
    def value(self) -> int | Decimal | str:
        """The value to bind for it: a Decimal for a number with a fraction, as SQL reads such a literal
        (exact numeric), never a float."""
        if self.kind == "int":
            return int(self.text)
        if self.kind == "decimal":
            return Decimal(self.text)
        return self.text


@dataclass(frozen=True)
class Shape:
    """A query's text with its literals replaced by their kind, and the literals in text order."""

    key: str
    literals: tuple[Literal, ...]


def shape_of(text: str) -> Shape | None:
    """The query's shape, or None when the text holds something the pass does not read safely."""
    if _UNSAFE.search(text):
        return None
    parts: list[str] = []
    literals: list[Literal] = []
    position = 0
    for match in _TOKEN.finditer(text):
        if match.group("string") is not None:
            if match.start() and (text[match.start() - 1].isalnum() or text[match.start() - 1] == "_"):
                return None  # a prefixed string: E'..', X'..', N'..', U&'..'
            kind, value = "string", match.group("string").replace("''", "'")
        elif match.group("number") is not None and match.group("exponent") is None:
            kind = "decimal" if match.group("fraction") is not None or "." in match.group(0) else "int"
            value = match.group("number")
        else:
            continue  # quoted identifiers and numbers with exponents stay in the key as written
        parts.append(text[position : match.start()])
        parts.append(f"\x00{kind}\x00")
        literals.append(Literal(match.start(), match.end(), kind, value))
        position = match.end()
    parts.append(text[position:])
    return Shape("".join(parts), tuple(literals))
