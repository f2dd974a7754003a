"""STC-S regions (IVOA STC-S 1.33, the subset ObsCore and ADQL use): POSITION, CIRCLE, BOX, POLYGON and
their UNION, INTERSECTION and NOT, each optionally preceded by frame, reference-position and flavor words.

    Polygon ICRS 10 20 11 20 11 21
    Union ICRS (Circle 10 20 1 Polygon 12 20 13 20 13 21)
    Not (Box FK5 10 20 2 1)

Words are case-insensitive; numbers are degrees. A malformed text raises :class:`StcsError` naming the
character position (1-based) of the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dms.query.adql.errors import AdqlSyntaxError, AdqlUnsupportedError

FRAMES = frozenset(
    {"ICRS", "FK5", "FK4", "J2000", "B1950", "ECLIPTIC", "GALACTIC", "GALACTIC_II", "SUPER_GALACTIC"}
    | {"GEO_C", "GEO_D", "UNKNOWNFRAME"}
)
REFERENCE_POSITIONS = frozenset(
    {"GEOCENTER", "BARYCENTER", "HELIOCENTER", "TOPOCENTER", "LSR", "LSRK", "LSRD", "GALACTIC_CENTER"}
    | {"LOCAL_GROUP_CENTER", "MOON", "EMBARYCENTER", "RELOCATABLE", "UNKNOWNREFPOS"}
)
FLAVORS = frozenset({"SPHERICAL2", "UNITSPHERE", "CARTESIAN1", "CARTESIAN2", "CARTESIAN3"})
SHAPES = {"POSITION": 2, "CIRCLE": 3, "BOX": 4, "POLYGON": None}
OPERATORS = frozenset({"UNION", "INTERSECTION", "NOT"})
UNSUPPORTED = frozenset({"ELLIPSE", "SECTOR", "CONVEX", "DIFFERENCE"})
_TOKEN = re.compile(r"\s*(?:(\()|(\))|([^\s()]+))")


class StcsError(AdqlSyntaxError):
    """An STC-S text that cannot be read; the message names the 1-based character of the problem."""


def _error(text: str, position: int, problem: str, word: str | None = None) -> StcsError:
    return StcsError(f"STC-S {text!r}, character {position}: {problem}", token=word)


@dataclass(frozen=True)
class Position:
    lon: float
    lat: float
    frame: str = ""


@dataclass(frozen=True)
class Circle:
    lon: float
    lat: float
    radius: float
    frame: str = ""


@dataclass(frozen=True)
class Box:
    """Centre and full width and height (degrees); its edges join the corners by great circles."""

    lon: float
    lat: float
    width: float
    height: float
    frame: str = ""

    def corners(self) -> tuple[tuple[float, float], ...]:
        w, h = self.width / 2, self.height / 2
        return (
            (self.lon - w, self.lat - h),
            (self.lon + w, self.lat - h),
            (self.lon + w, self.lat + h),
            (self.lon - w, self.lat + h),
        )


@dataclass(frozen=True)
class Polygon:
    vertices: tuple[tuple[float, float], ...]
    frame: str = ""


@dataclass(frozen=True)
class Union:
    members: tuple[Region, ...]


@dataclass(frozen=True)
class Intersection:
    members: tuple[Region, ...]


@dataclass(frozen=True)
class Not:
    member: Region


Shape = Position | Circle | Box | Polygon
Region = Shape | Union | Intersection | Not


@dataclass(frozen=True)
class _Token:
    text: str
    position: int  # 1-based


def _tokens(text: str) -> list[_Token]:
    tokens, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:  # only trailing blanks remain
            break
        start = match.start(match.lastindex or 0)
        tokens.append(_Token(match.group(match.lastindex or 0), start + 1))
        at = match.end()
    return tokens


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def error(self, problem: str, token: _Token | None = None) -> StcsError:
        token = token or self.peek()
        position = token.position if token else len(self.text.rstrip()) + 1
        return _error(self.text, position, problem, token.text if token else None)

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error("the text ends too early")
        self.at += 1
        return token

    def frame(self) -> str:
        """The optional frame, reference position and flavor words (in that order); the frame's name."""
        frame = ""
        token = self.peek()
        if token is not None and token.text.upper() == "FILLFACTOR":
            self.take()
            self.number()
        for words in (FRAMES, REFERENCE_POSITIONS, FLAVORS):
            token = self.peek()
            if token is not None and token.text.upper() in words:
                if words is FLAVORS and token.text.upper() not in ("SPHERICAL2", "UNITSPHERE"):
                    raise self.error(f"flavor {token.text} is not a sky position (use SPHERICAL2)", token)
                self.take()
                if words is FRAMES:
                    frame = token.text.upper()
        return frame

    def number(self) -> float:
        token = self.take()
        try:
            value = float(token.text)
        except ValueError:
            raise self.error(f"expected a number, got {token.text!r}", token) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise self.error(f"{token.text!r} is not a finite number", token)
        return value

    def numbers(self) -> list[float]:
        values = []
        while (token := self.peek()) is not None and token.text not in "()" and _is_number(token.text):
            values.append(self.number())
        return values

    def region(self, outer_frame: str = "") -> Region:
        token = self.take()
        word = token.text.upper()
        if word in OPERATORS:
            frame = self.frame() or outer_frame
            opening = self.take()
            if opening.text != "(":
                raise self.error(f"expected '(' after {token.text}, got {opening.text!r}", opening)
            members = []
            while (following := self.peek()) is not None and following.text != ")":
                members.append(self.region(frame))
            self.take()  # ')', or an error that the text ends too early
            if word == "NOT":
                if len(members) != 1:
                    raise self.error(f"NOT takes one region, got {len(members)}", token)
                return Not(members[0])
            if len(members) < 2:
                hint = ""
                if (following := self.peek()) is not None and following.text == "(":
                    hint = f" (the members go in one pair of brackets: {token.text} (Circle ... Polygon ...))"
                raise self.error(f"{word} takes at least two regions, got {len(members)}{hint}", token)
            return (Union if word == "UNION" else Intersection)(tuple(members))
        if word in UNSUPPORTED:
            supported = ", ".join([*SHAPES, *sorted(OPERATORS)])
            raise AdqlUnsupportedError(
                f"STC-S {token.text.upper()!r} is not supported; supported: {supported}", token=token.text
            )
        if word not in SHAPES:
            valid = ", ".join([*SHAPES, *sorted(OPERATORS)])
            raise self.error(f"{token.text!r} is not an STC-S region; valid: {valid}", token)
        frame = self.frame() or outer_frame
        start = self.peek()
        values = self.numbers()
        after = self.peek()
        if after is not None and after.text not in "()" and after.text.upper() not in {*SHAPES, *OPERATORS}:
            raise self.error(f"expected a number, got {after.text!r}", after)
        return _shape(self, word, frame, values, start or token)


def _shape(reader: _Reader, word: str, frame: str, values: list[float], start: _Token) -> Shape:
    arity = SHAPES[word]
    if arity is not None and len(values) != arity:
        raise reader.error(f"{word} takes {arity} numbers, got {len(values)}", start)
    if word == "POLYGON" and (len(values) < 6 or len(values) % 2):
        raise reader.error(
            f"POLYGON needs at least 3 vertices (pairs of numbers), got {len(values)} numbers", start
        )
    lats = values[1::2] if word == "POLYGON" else values[1:2]
    if any(not -90 <= lat <= 90 for lat in lats):
        raise reader.error(f"{word}: a latitude is outside [-90, 90]", start)
    if word == "POSITION":
        return Position(values[0], values[1], frame)
    if word == "CIRCLE":
        if not 0 <= values[2] <= 180:
            raise reader.error(f"CIRCLE radius {values[2]:g} is outside [0, 180] degrees", start)
        return Circle(values[0], values[1], values[2], frame)
    if word == "BOX":
        if not (0 <= values[2] <= 360 and 0 <= values[3] <= 180):
            raise reader.error("BOX width and height must be positive (degrees)", start)
        return Box(values[0], values[1], values[2], values[3], frame)
    pairs = tuple((values[i], values[i + 1]) for i in range(0, len(values), 2))
    return Polygon(pairs, frame)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def parse(text: str) -> Region:
    """The region an STC-S text describes, or StcsError with the character position of the problem."""
    reader = _Reader(text)
    if reader.peek() is None:
        raise _error(text, 1, "the region is empty")
    region = reader.region()
    extra = reader.peek()
    if extra is not None:
        raise reader.error(f"unexpected {extra.text!r} after the region", extra)
    return region
