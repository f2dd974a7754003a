"""Lowering ADQL geometry to the DMS SQL functions that exist on PostgreSQL and DuckDB.

The rules the query engine relies on for spatial chunk pruning (kept exactly as written here):

* ``CONTAINS(POINT(a, b), CIRCLE(c, d, r))`` -> ``scisql_s2PtInCircle(a, b, c, d, r)``;
* ``CONTAINS(POINT(a, b), POLYGON(...))`` -> ``scisql_s2PtInCPoly(a, b, lon1, lat1, ...)``;
* ``CONTAINS(POINT(a, b), BOX(c, d, w, h))`` -> ``scisql_s2PtInCPoly`` with the four corners
  ``(c -+ w/2, d -+ h/2)`` joined by great circles: ADQL defines BOX as "the equivalent polygon"
  (ADQL 2.0 section 2.4.4.2), and these are its vertices;
* ``INTERSECTS`` with a POINT argument is ``CONTAINS`` of that point;
* ``DISTANCE(POINT(a, b), POINT(c, d))`` and ``DISTANCE(a, b, c, d)`` -> ``scisql_angSep(a, b, c, d)``.

Geometry values (a POINT, CIRCLE, BOX, POLYGON or REGION in the select list, or a column holding one) are
DALI arrays of doubles: ``[lon, lat]``, ``[lon, lat, radius]``, ``[lon1, lat1, lon2, lat2, ...]``; the
length tells the shape. AREA, CENTROID and generic CONTAINS on such values call ``adql_*`` functions from
``udfs/*/50_adql.sql``. Values are ICRS: a coordinate-system argument other than ICRS is handled by
:mod:`dms.query.adql.frames` (constant positions transformed, anything else taken as ICRS with a note).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from dms.query.adql import frames
from dms.query.adql.errors import AdqlSyntaxError, AdqlUnsupportedError
from dms.query.adql.rewrite import rewrite
from dms.udfs import MAX_POLYGON_VERTICES

CONSTRUCTORS = frozenset({"POINT", "CIRCLE", "BOX", "POLYGON", "REGION"})
PREDICATES = frozenset({"CONTAINS", "INTERSECTS"})
GEOMETRY_FUNCTIONS = (
    CONSTRUCTORS | PREDICATES | {"DISTANCE", "AREA", "CENTROID", "COORD1", "COORD2", "COORDSYS"}
)
_ARITY = {"POINT": 2, "CIRCLE": 3, "BOX": 4}


@dataclass(frozen=True)
class Point:
    lon: exp.Expression
    lat: exp.Expression


@dataclass(frozen=True)
class Circle:
    lon: exp.Expression
    lat: exp.Expression
    radius: exp.Expression


@dataclass(frozen=True)
class Polygon:
    vertices: tuple[Point, ...]


@dataclass(frozen=True)
class Value:
    """A geometry known only as an SQL value (a DALI double array): a column, a function result."""

    array: exp.Expression


Shape = Point | Circle | Polygon | Value


def fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def as_int(condition: exp.Expression) -> exp.Expression:
    """A boolean as 1/0 (NULL stays NULL), the result type of ADQL's CONTAINS and INTERSECTS."""
    return exp.Cast(this=exp.paren(condition, copy=False), to=exp.DataType.build("INT"))


def name_of(node: exp.Expression) -> str | None:
    return node.name.upper() if isinstance(node, exp.Anonymous) else None


def _fold(node: exp.Expression) -> exp.Expression:
    """Constant-fold arithmetic on numeric literals, so BOX corners stay literals for chunk pruning."""

    def value(e: exp.Expression) -> float | None:
        if isinstance(e, exp.Literal) and not e.is_string:
            return float(e.this)
        if isinstance(e, exp.Neg):
            inner = value(e.this)
            return None if inner is None else -inner
        if isinstance(e, exp.Paren):
            return value(e.this)
        if isinstance(e, exp.Add | exp.Sub | exp.Mul | exp.Div):
            a, b = value(e.this), value(e.expression)
            if a is None or b is None or (isinstance(e, exp.Div) and b == 0):
                return None
            ops: dict[type, Callable[[float, float], float]] = {
                exp.Add: float.__add__,
                exp.Sub: float.__sub__,
                exp.Mul: float.__mul__,
                exp.Div: float.__truediv__,
            }
            return ops[type(e)](a, b)
        return None

    folded = value(node)
    if folded is None:
        return node
    return (
        exp.Literal.number(repr(folded)) if folded >= 0 else exp.Neg(this=exp.Literal.number(repr(-folded)))
    )


def _split_frame(args: list[exp.Expression]) -> tuple[str, list[exp.Expression]]:
    """ADQL 2.0's leading coordinate-system argument (any string, or NULL) and the other arguments."""
    if args and isinstance(args[0], exp.Literal) and args[0].is_string:
        return str(args[0].this), args[1:]
    if args and isinstance(args[0], exp.Null):
        return "", args[1:]
    return "", args


def shape(node: exp.Expression) -> Shape:
    """The shape a geometry expression denotes (a constructor, in ICRS), or a Value for anything else."""
    name = name_of(node)
    if name not in CONSTRUCTORS:
        return Value(node)
    assert isinstance(node, exp.Anonymous)
    args = list(node.expressions)
    if name == "REGION":
        return _region(args)
    frame, args = _split_frame(args)
    built = _build(name, args)
    return _in_icrs(name, frame, built) if frame else built


def _build(name: str, args: list[exp.Expression]) -> Shape:
    if name == "POLYGON":
        return _polygon(name, args)
    if name == "CIRCLE" and len(args) == 2 and name_of(args[0]) == "POINT":
        center = shape(args[0])
        assert isinstance(center, Point)
        return Circle(center.lon, center.lat, args[1])
    if name == "BOX" and len(args) == 3 and name_of(args[0]) == "POINT":
        center = shape(args[0])
        assert isinstance(center, Point)
        return _box(center.lon, center.lat, args[1], args[2])
    if len(args) != _ARITY[name]:
        raise AdqlSyntaxError(f"{name} takes {_ARITY[name]} coordinates, got {len(args)}")
    if name == "POINT":
        return Point(args[0], args[1])
    if name == "CIRCLE":
        return Circle(args[0], args[1], args[2])
    return _box(*args)


def _in_icrs(name: str, frame: str, built: Shape) -> Shape:
    """`built`, given in coordinate system `frame`, with its constant positions transformed to ICRS."""
    if isinstance(built, Point | Circle):
        pairs = [(_fold(built.lon), _fold(built.lat))]
    elif isinstance(built, Polygon):
        pairs = [(_fold(v.lon), _fold(v.lat)) for v in built.vertices]
    else:
        return built
    moved = frames.to_icrs(name, frame, pairs)
    if moved is None:
        return built
    if isinstance(built, Point):
        return Point(*moved[0])
    if isinstance(built, Circle):
        return Circle(moved[0][0], moved[0][1], built.radius)
    return Polygon(tuple(Point(lon, lat) for lon, lat in moved))


def _box(lon: exp.Expression, lat: exp.Expression, width: exp.Expression, height: exp.Expression) -> Polygon:
    def corner(dlon: int, dlat: int) -> Point:
        half_w = exp.Div(this=width.copy(), expression=exp.Literal.number(2))
        half_h = exp.Div(this=height.copy(), expression=exp.Literal.number(2))
        c_lon = (
            exp.Add(this=lon.copy(), expression=half_w)
            if dlon > 0
            else exp.Sub(this=lon.copy(), expression=half_w)
        )
        c_lat = (
            exp.Add(this=lat.copy(), expression=half_h)
            if dlat > 0
            else exp.Sub(this=lat.copy(), expression=half_h)
        )
        return Point(_fold(c_lon), _fold(c_lat))

    return Polygon((corner(-1, -1), corner(1, -1), corner(1, 1), corner(-1, 1)))


def _polygon(name: str, args: list[exp.Expression]) -> Polygon:
    if args and all(name_of(a) == "POINT" for a in args):
        points = [shape(a) for a in args]
        vertices = tuple(p for p in points if isinstance(p, Point))
    else:
        coords = args
        if len(coords) % 2:
            raise AdqlSyntaxError(f"POLYGON needs pairs of coordinates, got {len(coords)} numbers")
        vertices = tuple(Point(coords[i], coords[i + 1]) for i in range(0, len(coords), 2))
    if not 3 <= len(vertices) <= MAX_POLYGON_VERTICES:
        raise AdqlSyntaxError(f"POLYGON needs 3 to {MAX_POLYGON_VERTICES} vertices, got {len(vertices)}")
    return Polygon(vertices)


def _region(args: list[exp.Expression]) -> Shape:
    """REGION('STC-S text') for literal POSITION, CIRCLE, BOX and POLYGON regions in ICRS."""
    if len(args) != 1 or not (isinstance(args[0], exp.Literal) and args[0].is_string):
        raise AdqlUnsupportedError(
            "REGION needs one literal STC-S string, e.g. REGION('CIRCLE ICRS 10 20 1')"
        )
    words = args[0].this.split()
    kind = words[0].upper() if words else ""
    rest = words[1:]
    frame = []
    while rest and not _is_number(rest[0]):
        frame.append(rest.pop(0))
    if not all(_is_number(w) for w in rest):
        raise AdqlSyntaxError(f"REGION: cannot read STC-S {args[0].this!r}")
    kinds = {"POSITION": "POINT", "CIRCLE": "CIRCLE", "BOX": "BOX", "POLYGON": "POLYGON"}
    if kind not in kinds:
        raise AdqlUnsupportedError(
            f"REGION: STC-S {kind or 'text'!r} is not supported (POSITION, CIRCLE, BOX, POLYGON)"
        )
    numbers: list[exp.Expression] = [_number(w) for w in rest]
    return shape(fn(kinds[kind], exp.Literal.string(" ".join(frame)), *numbers))


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _number(word: str) -> exp.Expression:
    value = float(word)
    literal = exp.Literal.number(repr(abs(value)))
    return exp.Neg(this=literal) if value < 0 else literal


def array(s: Shape) -> exp.Expression:
    """A shape as its DALI double array value."""
    if isinstance(s, Value):
        return s.array
    if isinstance(s, Point):
        items = [s.lon, s.lat]
    elif isinstance(s, Circle):
        items = [s.lon, s.lat, s.radius]
    else:
        items = [c for v in s.vertices for c in (v.lon, v.lat)]
    return exp.Cast(this=exp.Array(expressions=items), to=exp.DataType.build("DOUBLE PRECISION[]"))


def contains(inner: Shape, outer: Shape) -> exp.Expression:
    """CONTAINS(inner, outer) as 1/0."""
    if isinstance(inner, Point) and isinstance(outer, Circle):
        return fn("scisql_s2PtInCircle", inner.lon, inner.lat, outer.lon, outer.lat, outer.radius)
    if isinstance(inner, Point) and isinstance(outer, Polygon):
        coords = [c for v in outer.vertices for c in (v.lon, v.lat)]
        return fn("scisql_s2PtInCPoly", inner.lon, inner.lat, *coords)
    if isinstance(inner, Circle) and isinstance(outer, Circle):
        separation = fn("scisql_angSep", inner.lon, inner.lat, outer.lon, outer.lat)
        return as_int(
            exp.LTE(this=exp.Add(this=separation, expression=inner.radius), expression=outer.radius)
        )
    if isinstance(inner, Point | Value) and not isinstance(outer, Point):
        return fn("adql_contains", array(inner), array(outer))
    raise AdqlUnsupportedError(
        f"CONTAINS of a {type(inner).__name__.upper()} in a {type(outer).__name__.upper()} is not supported; "
        "supported: a POINT in a CIRCLE, BOX, POLYGON or region value, and a CIRCLE in a CIRCLE"
    )


def intersects(a: Shape, b: Shape) -> exp.Expression:
    """INTERSECTS(a, b) as 1/0: with a point it is CONTAINS; two circles overlap within the radii sum."""
    if isinstance(a, Point):
        return contains(a, b)
    if isinstance(b, Point):
        return contains(b, a)
    if isinstance(a, Circle) and isinstance(b, Circle):
        separation = fn("scisql_angSep", a.lon, a.lat, b.lon, b.lat)
        return as_int(exp.LTE(this=separation, expression=exp.Add(this=a.radius, expression=b.radius)))
    raise AdqlUnsupportedError(
        f"INTERSECTS of a {type(a).__name__.upper()} and a {type(b).__name__.upper()} is not supported; "
        "supported: a POINT with any region, and two CIRCLEs"
    )


def coordinate(s: Shape, index: int) -> exp.Expression:
    if isinstance(s, Point):
        return s.lon if index == 1 else s.lat
    if isinstance(s, Value):
        # sqlglot stores subscripts 0-based and adds the dialect's offset (1 for both backends) when writing.
        return exp.Bracket(this=exp.paren(s.array), expressions=[exp.Literal.number(index - 1)])
    raise AdqlSyntaxError(f"COORD{index} needs a POINT, got a {type(s).__name__.upper()}")


def _distance(args: list[exp.Expression]) -> exp.Expression:
    if len(args) == 4:
        return fn("scisql_angSep", *args)
    if len(args) != 2:
        raise AdqlSyntaxError(f"DISTANCE takes two POINTs or four coordinates, got {len(args)} arguments")
    a, b = shape(args[0]), shape(args[1])
    return fn("scisql_angSep", coordinate(a, 1), coordinate(a, 2), coordinate(b, 1), coordinate(b, 2))


def _lower_one(node: exp.Expression) -> exp.Expression:
    name = name_of(node)
    if name not in GEOMETRY_FUNCTIONS:
        return node
    assert isinstance(node, exp.Anonymous)
    args = list(node.expressions)
    if name in PREDICATES or name in ("AREA", "CENTROID", "COORD1", "COORD2", "COORDSYS"):
        expected = 2 if name in PREDICATES else 1
        if len(args) != expected:
            raise AdqlSyntaxError(f"{name} takes {expected} argument{'s' * (expected > 1)}, got {len(args)}")
    if name == "CONTAINS":
        return contains(shape(args[0]), shape(args[1]))
    if name == "INTERSECTS":
        return intersects(shape(args[0]), shape(args[1]))
    if name == "DISTANCE":
        return _distance(args)
    if name in ("COORD1", "COORD2"):
        return coordinate(shape(args[0]), int(name[-1]))
    if name == "COORDSYS":
        return exp.Literal.string("ICRS")
    if name == "AREA":
        return fn("adql_area", array(shape(args[0])))
    if name == "CENTROID":
        return fn("adql_centroid", array(shape(args[0])))
    return array(shape(node))


def lower_geometry(tree: exp.Expression) -> exp.Expression:
    """Replace every ADQL geometry function in `tree` by DMS SQL (top-down: predicates see constructors)."""
    return rewrite(tree, _lower_one)
