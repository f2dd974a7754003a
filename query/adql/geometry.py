"""Lowering ADQL geometry to the DMS SQL functions that exist on PostgreSQL and DuckDB.

The rules the query engine relies on for spatial chunk pruning (kept exactly as written here):

* ``CONTAINS(POINT(a, b), CIRCLE(c, d, r))`` -> ``scisql_s2PtInCircle(a, b, c, d, r)``;
* ``CONTAINS(POINT(a, b), POLYGON(...))`` -> ``scisql_s2PtInCPoly(a, b, lon1, lat1, ...)``;
* ``CONTAINS(POINT(a, b), BOX(c, d, w, h))`` -> ``scisql_s2PtInCPoly`` with the four corners
  ``(c -+ w/2, d -+ h/2)`` joined by great circles: ADQL defines BOX as "the equivalent polygon"
  (ADQL 2.0 section 2.4.4.2), and these are its vertices;
* ``INTERSECTS`` with a POINT argument is ``CONTAINS`` of that point;
* ``DISTANCE(POINT(a, b), POINT(c, d))`` and ``DISTANCE(a, b, c, d)`` -> ``scisql_angSep(a, b, c, d)``.

* a region column (STC-S text with its representation columns of :mod:`dms.query.regions`: ObsCore's
  ``s_region``, a catalog column loaded with ``dms load --region``) in CONTAINS(POINT, col) or
  INTERSECTS(col, shape) -> ``adql_intersects`` on ``col_shape``, after ``col_moc && ARRAY[cells]`` when the
  other shape is a constant (HEALPix pruning). Which columns are region columns is the caller's metadata
  (a :data:`RegionOf` resolver over the query's tables); without one, a column named ``s_region`` is. A text
  column without representation columns (ConsDB's ``exposure.s_region``) is refused in a geometry function;
* INTERSECTS of two circles, polygons or region values -> ``adql_intersects`` (exact, great-circle edges);
* REGION('STC-S') reads POSITION, CIRCLE, BOX, POLYGON and UNION, INTERSECTION, NOT: a point is in a union
  if it is in a member (in an intersection: in every member; in a NOT: not in its member), and a region
  intersects a union if it intersects a member.

Geometry values (a POINT, CIRCLE, BOX, POLYGON or REGION in the select list, or a column holding one) are
DALI arrays of doubles: ``[lon, lat]``, ``[lon, lat, radius]``, ``[lon1, lat1, lon2, lat2, ...]``; the
length tells the shape. AREA, CENTROID and generic CONTAINS on such values call ``adql_*`` functions from
``udfs/*/50_adql.sql``. Values are ICRS: a coordinate-system argument other than ICRS is handled by
:mod:`dms.query.adql.frames` (constant positions transformed, anything else taken as ICRS with a note).
"""

from __future__ import annotations

import contextvars
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

from dms.query import regions
from dms.query.adql import frames, stcs
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


@dataclass(frozen=True)
class RegionColumn:
    """A region column (STC-S text) known by its representation columns (dms.query.regions)."""

    column: exp.Column

    def companion(self, suffix: str) -> exp.Column:
        companion = self.column.copy()
        companion.set("this", exp.to_identifier(self.column.name + suffix))
        return companion


@dataclass(frozen=True)
class Compound:
    """An STC-S UNION, INTERSECTION or NOT of shapes."""

    operator: str
    members: tuple[Shape, ...]


Shape = Point | Circle | Polygon | Value | RegionColumn | Compound

REGION_COLUMNS = frozenset({"s_region"})
"""Without a resolver, the columns taken as STC-S regions with representation columns (ObsCore's s_region)."""

ColumnKind = Literal["region", "text"]
RegionOf = Callable[[exp.Column], ColumnKind | None]
"""What a column reference is, from its table's metadata: "region" (STC-S text with representation columns),
"text" (any other character column: no geometry) or None (not text, or not known)."""


def by_name(column: exp.Column) -> ColumnKind | None:
    """The resolver of a query whose tables are not known: ObsCore's column names."""
    return "region" if column.name.lower() in REGION_COLUMNS else None


# The resolver of the query being lowered, set by lower_geometry for its duration (per thread: the services
# lower queries in several threads at once).
_region_of: contextvars.ContextVar[RegionOf] = contextvars.ContextVar("region_of", default=by_name)


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
    if isinstance(node, exp.Column):
        kind = _region_of.get()(node)
        if kind == "region":
            return RegionColumn(node)
        if kind == "text":
            raise _text_column(node)
    if name not in CONSTRUCTORS:
        return Value(node)
    assert isinstance(node, exp.Anonymous)
    args = list(node.expressions)
    if name == "REGION":
        return _region(args)
    frame, args = _split_frame(args)
    built = _build(name, args)
    return _in_icrs(name, frame, built) if frame else built


def _text_column(column: exp.Column) -> AdqlUnsupportedError:
    name = column.sql(dialect="postgres")
    return AdqlUnsupportedError(
        f"column {name} is text with no spatial representation ({column.name}{regions.SHAPE_SUFFIX}, "
        f"{column.name}{regions.MOC_SUFFIX}), so no geometry function can test it; ObsCore's s_region "
        "(ivoa.ObsCore) and catalog columns loaded with `dms load --region` can be",
        token=column.name,
    )


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
    if len(vertices) < 3:
        raise AdqlSyntaxError(f"POLYGON needs at least 3 vertices, got {len(vertices)}")
    return Polygon(vertices)


def _region(args: list[exp.Expression]) -> Shape:
    """REGION('STC-S text'): a literal region (dms.query.adql.stcs), in ICRS."""
    if len(args) != 1 or not (isinstance(args[0], exp.Literal) and args[0].is_string):
        raise AdqlUnsupportedError(
            "REGION needs one literal STC-S string, e.g. REGION('CIRCLE ICRS 10 20 1')"
        )
    return _from_stcs(stcs.parse(args[0].this))


def _from_stcs(region: stcs.Region) -> Shape:
    if isinstance(region, stcs.Union | stcs.Intersection):
        operator = "UNION" if isinstance(region, stcs.Union) else "INTERSECTION"
        return Compound(operator, tuple(_from_stcs(m) for m in region.members))
    if isinstance(region, stcs.Not):
        return Compound("NOT", (_from_stcs(region.member),))
    frame = exp.Literal.string(region.frame)
    if isinstance(region, stcs.Position):
        return shape(fn("POINT", frame, _number(region.lon), _number(region.lat)))
    if isinstance(region, stcs.Circle):
        return shape(fn("CIRCLE", frame, *map(_number, (region.lon, region.lat, region.radius))))
    if isinstance(region, stcs.Box):
        return shape(fn("BOX", frame, *map(_number, (region.lon, region.lat, region.width, region.height))))
    return shape(fn("POLYGON", frame, *(_number(c) for v in region.vertices for c in v)))


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _number(word: str | float) -> exp.Expression:
    value = float(word)
    literal = exp.Literal.number(repr(abs(value)))
    return exp.Neg(this=literal) if value < 0 else literal


def array(s: Shape) -> exp.Expression:
    """A shape as its DALI double array value."""
    if isinstance(s, Value):
        return s.array
    if isinstance(s, RegionColumn):
        return s.companion(regions.SHAPE_SUFFIX)
    if isinstance(s, Compound):
        raise AdqlUnsupportedError(f"a REGION {s.operator} is not a value: use it in CONTAINS or INTERSECTS")
    if isinstance(s, Point):
        items = [s.lon, s.lat]
    elif isinstance(s, Circle):
        items = [s.lon, s.lat, s.radius]
    else:
        items = [c for v in s.vertices for c in (v.lon, v.lat)]
    return exp.Cast(this=exp.Array(expressions=items), to=exp.DataType.build("DOUBLE PRECISION[]"))


def contains(inner: Shape, outer: Shape) -> exp.Expression:
    """CONTAINS(inner, outer) as 1/0."""
    if isinstance(inner, Point) and isinstance(outer, Compound):
        return _combine(outer, [contains(inner, m) for m in outer.members])
    if isinstance(outer, Compound) or isinstance(inner, Compound):
        return _contains_compound(inner, outer)
    if isinstance(inner, Point) and isinstance(outer, RegionColumn):
        return intersects(inner, outer)
    if isinstance(inner, Point) and isinstance(outer, Circle):
        return fn("scisql_s2PtInCircle", inner.lon, inner.lat, outer.lon, outer.lat, outer.radius)
    if isinstance(inner, Point) and isinstance(outer, Polygon) and len(outer.vertices) > MAX_POLYGON_VERTICES:
        return fn("adql_intersects", array(inner), array(outer))  # beyond scisql_s2PtInCPoly's vertices
    if isinstance(inner, Point) and isinstance(outer, Polygon):
        coords = [c for v in outer.vertices for c in (v.lon, v.lat)]
        return fn("scisql_s2PtInCPoly", inner.lon, inner.lat, *coords)
    if isinstance(inner, Circle) and isinstance(outer, Circle):
        separation = fn("scisql_angSep", inner.lon, inner.lat, outer.lon, outer.lat)
        return as_int(
            exp.LTE(this=exp.Add(this=separation, expression=inner.radius), expression=outer.radius)
        )
    if isinstance(inner, Point | Value) and not isinstance(outer, Point | Compound):
        return fn("adql_contains", array(inner), array(outer))
    raise AdqlUnsupportedError(
        f"CONTAINS of a {_kind(inner)} in a {_kind(outer)} is not supported; "
        "supported: a POINT in a CIRCLE, BOX, POLYGON, REGION or region value, and a CIRCLE in a CIRCLE"
    )


def _contains_compound(inner: Shape, outer: Shape) -> exp.Expression:
    """CONTAINS with a compound region where that is exact by its members: a region lies in an INTERSECTION
    if it lies in every member, in a NOT (B) if it does not meet B (regions are closed), and a UNION lies in
    a region if every member does."""
    if isinstance(outer, Compound) and outer.operator == "INTERSECTION":
        return _all([contains(inner, m) for m in outer.members])
    if isinstance(outer, Compound) and outer.operator == "NOT":
        meets = exp.EQ(this=intersects(inner, outer.members[0]), expression=exp.Literal.number(1))
        return as_int(exp.Not(this=exp.paren(meets, copy=False)))
    if isinstance(inner, Compound) and inner.operator == "UNION":
        return _all([contains(m, outer) for m in inner.members])
    compound = outer if isinstance(outer, Compound) else inner
    assert isinstance(compound, Compound)
    why = {
        ("UNION", False): "a region can lie in a union without lying in any one of its members",
        ("INTERSECTION", True): "the intersection's own shape would be needed",
        ("NOT", True): "a NOT region is unbounded",
    }[(compound.operator, compound is inner)]
    raise AdqlUnsupportedError(
        f"CONTAINS of a {_kind(inner)} in a {_kind(outer)} is not supported: {why}; supported: a POINT in "
        "any REGION, any region in a REGION INTERSECTION or NOT, and a REGION UNION in a region"
    )


def _all(tests: list[exp.Expression]) -> exp.Expression:
    conditions = [exp.EQ(this=t, expression=exp.Literal.number(1)) for t in tests]
    return as_int(typing.cast(exp.Expression, exp.and_(*conditions)))


def _kind(s: Shape) -> str:
    if isinstance(s, Compound):
        return f"REGION {s.operator}"
    return "region column" if isinstance(s, RegionColumn) else type(s).__name__.upper()


def _combine(compound: Compound, tests: list[exp.Expression]) -> exp.Expression:
    """The 1/0 tests of a point against each member, combined as the compound's operator says."""
    conditions = [exp.EQ(this=t, expression=exp.Literal.number(1)) for t in tests]
    if compound.operator == "NOT":
        return as_int(exp.Not(this=exp.paren(conditions[0], copy=False)))
    combined = exp.or_(*conditions) if compound.operator == "UNION" else exp.and_(*conditions)
    return as_int(typing.cast(exp.Expression, combined))


def intersects(a: Shape, b: Shape) -> exp.Expression:
    """INTERSECTS(a, b) as 1/0: with a point it is CONTAINS; regions meet exactly (adql_intersects)."""
    if isinstance(a, Point) and not isinstance(b, RegionColumn):
        return contains(a, b)
    if isinstance(b, Point) and not isinstance(a, RegionColumn):
        return contains(b, a)
    if isinstance(a, Circle) and isinstance(b, Circle):
        separation = fn("scisql_angSep", a.lon, a.lat, b.lon, b.lat)
        return as_int(exp.LTE(this=separation, expression=exp.Add(this=a.radius, expression=b.radius)))
    for one, other in ((a, b), (b, a)):
        if isinstance(one, Compound) and one.operator == "UNION":
            return _combine(one, [intersects(m, other) for m in one.members])
    for one, other in ((a, b), (b, a)):
        if isinstance(one, Compound):
            # a region meets NOT (B) where it does not lie in B, and meets an INTERSECTION where some point
            # of it is in every member: neither follows from the members' tests with this region alone
            why = (
                "that asks whether the region reaches outside the NOT's member, and DMS tests containment "
                "of a region only for a CIRCLE in a CIRCLE"
                if one.operator == "NOT"
                else "that needs the intersection's own shape, not only its members'"
            )
            if one.operator == "NOT" and isinstance(other, Circle) and isinstance(one.members[0], Circle):
                inside = exp.EQ(this=contains(other, one.members[0]), expression=exp.Literal.number(1))
                return as_int(exp.Not(this=exp.paren(inside, copy=False)))
            raise AdqlUnsupportedError(
                f"INTERSECTS of a REGION {one.operator} with a {_kind(other)} is not supported: {why}; "
                "supported: POINTs with any REGION, any region with a REGION UNION, and CONTAINS(region, "
                "REGION('NOT ...')) for regions that avoid one"
            )
    exact = fn("adql_intersects", array(a), array(b))
    if isinstance(a, RegionColumn) and isinstance(b, RegionColumn):
        overlap = exp.ArrayOverlaps(
            this=a.companion(regions.MOC_SUFFIX), expression=b.companion(regions.MOC_SUFFIX)
        )
        both = exp.and_(overlap, exp.EQ(this=exact, expression=exp.Literal.number(1)))
        return as_int(typing.cast(exp.Expression, both))
    for one, other in ((a, b), (b, a)):
        if isinstance(one, RegionColumn):
            return _pruned(one, other, exact)
    return exact


def _pruned(column: RegionColumn, other: Shape, exact: exp.Expression) -> exp.Expression:
    """`exact` after the HEALPix coverage test of `column` against a constant `other`, where one exists."""
    constant = _constant_array(other)
    if constant is None:
        return exact
    cells = regions.coverage(constant)
    if len(cells) > regions.MAX_QUERY_CELLS:
        return exact
    overlap = exp.ArrayOverlaps(
        this=column.companion(regions.MOC_SUFFIX),
        expression=exp.Cast(
            this=exp.Array(expressions=[exp.Literal.number(c) for c in cells]),
            to=exp.DataType.build("BIGINT[]"),
        ),
    )
    both = exp.and_(overlap, exp.EQ(this=exact, expression=exp.Literal.number(1)))
    return as_int(typing.cast(exp.Expression, both))


def _constant_array(s: Shape) -> list[float] | None:
    """The DALI array of a shape whose coordinates are all numeric literals, else None."""
    if isinstance(s, Point):
        items = [s.lon, s.lat]
    elif isinstance(s, Circle):
        items = [s.lon, s.lat, s.radius]
    elif isinstance(s, Polygon):
        items = [c for v in s.vertices for c in (v.lon, v.lat)]
    else:
        return None
    values = []
    for item in items:
        folded = _fold(item)
        if isinstance(folded, exp.Neg) and isinstance(folded.this, exp.Literal):
            values.append(-float(folded.this.this))
        elif isinstance(folded, exp.Literal) and not folded.is_string:
            values.append(float(folded.this))
        else:
            return None
    if len(values) == 3 and not 0 <= values[2] <= 180:
        return None
    return values


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


def _unwrap_pruned(node: exp.Expression) -> exp.Expression:
    """``CAST((cells && ... AND exact = 1) AS INT) = 1`` -> the condition itself, so that the coverage test is
    a top-level condition an index (GIN on the cell list) can serve; both have the same three values."""
    if not isinstance(node, exp.EQ):
        return node
    for cast, one in ((node.this, node.expression), (node.expression, node.this)):
        if (
            isinstance(one, exp.Literal)
            and one.this == "1"
            and isinstance(cast, exp.Cast)
            and isinstance(cast.this, exp.Paren)
            and isinstance(cast.this.this, exp.And)
            and isinstance(cast.this.this.this, exp.ArrayOverlaps)
        ):
            return cast.this
    return node


def lower_geometry(tree: exp.Expression, region_of: RegionOf | None = None) -> exp.Expression:
    """Replace every ADQL geometry function in `tree` by DMS SQL (top-down: predicates see constructors);
    `region_of` says which columns are region columns (by default, those named s_region)."""
    token = _region_of.set(region_of or by_name)
    try:
        return rewrite(rewrite(tree, _lower_one), _unwrap_pruned)
    finally:
        _region_of.reset(token)
