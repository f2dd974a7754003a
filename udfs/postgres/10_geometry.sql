-- scisql-compatible spherical geometry (PostgreSQL).
--
-- What scisql does (smonkewitz/scisql, the Qserv UDF library: src/udfs/angSep.c, s2PtInCircle.c,
-- s2PtInBox.c, s2PtInEllipse.c, s2PtInCPoly.c, src/geometry.h, src/geometry.c). All angles are in
-- degrees except the ellipse axes (arcsec).
--   angSep(lon1, lat1, lon2, lat2): NULL if any argument is NULL, NaN or +/-Inf, or a latitude is
--     outside [-90, 90]. Formula: haversine chord (scisql_sc_dist2), 2 asin(sqrt(d2/4)), capped at 180.
--   s2PtInCircle(lon, lat, centerLon, centerLat, radius): 1 if angSep <= radius, else 0. NULL
--     argument -> 0; NaN/Inf, latitude outside [-90, 90], radius < 0 or > 180 -> NULL.
--   s2PtInBox(lon, lat, lonMin, latMin, lonMax, latMax): NULL argument -> 0; NaN/Inf or a latitude
--     outside [-90, 90] -> NULL; lonMax < lonMin with either outside [0, 360] -> NULL;
--     latMin > latMax (empty box) or lat outside [latMin, latMax] -> 0; lonMax - lonMin >= 360 -> 1;
--     otherwise the three longitudes are reduced to [0, 360) and lonMin > lonMax means the box
--     wraps through 0 (e.g. 350..10 holds [350, 360) and [0, 10]). Box edges are inclusive.
--   s2PtInEllipse(lon, lat, centerLon, centerLat, semiMajorAxisAngle, semiMinorAxisAngle,
--     positionAngle): axes in arcsec, position angle in degrees east of north. NULL argument -> 0;
--     NaN/Inf, latitude outside [-90, 90], minor < 0, minor > major, major > 36000 arcsec -> NULL.
--     Test: the point's unit vector in the (north, east) basis at the center, rotated by the
--     position angle to (x along the major axis, y), inside iff x^2/M^2 + y^2/m^2 <= 1 (M, m in
--     radians), i.e. an ellipse in the orthographic projection at the center.
--   s2PtInCPoly(lon, lat, v1Lon, v1Lat, ..., vNLon, vNLat): 3 to 20 vertices (SCISQL_MAX_VERTS=20),
--     clockwise or counter-clockwise, assumed convex and hemispherical; edges are great circles.
--     NULL argument -> 0; NaN/Inf or a latitude outside [-90, 90] -> NULL; another arity -> error.
--     Test: edge normals e_i = 2 (v_i x v_i+1) (computed as (v_i+1 + v_i) x (v_i+1 - v_i)), negated
--     if (sum of vertices) . e_1 < 0; inside iff p . e_i >= 0 for every edge (edges inclusive).
--
-- What DMS does differently, on purpose (identically on PostgreSQL and DuckDB):
--   * a NULL argument gives NULL, not 0 (ordinary SQL propagation; WHERE f(...) = 1 selects the
--     same rows either way);
--   * angSep uses Vincenty's formula (accurate to an ulp or so at every separation; scisql's
--     haversine loses about 1e-8 rad near 180 degrees), and s2PtInCircle is exactly
--     angSep(point, center) <= radius;
--   * s2PtInEllipse also requires the point to lie in the hemisphere centered on the ellipse:
--     scisql's projection test maps points near the antipode of the center inside as well;
--   * a degenerate ellipse with a zero minor axis contains nothing (as scisql's 1/0 arithmetic ends up
--     doing), without dividing by zero;
--   * s2PtInCPoly: PostgreSQL takes the vertices as VARIADIC double precision[] (so an array can be
--     passed as scisql_s2PtInCPoly(ra, dec, VARIADIC coords)); a wrong count raises SQLSTATE 22023.
--     DuckDB has one macro overload per vertex count (3 to 20); another count is a binder error.
--
-- Beyond the supported domain: inputs for which a double product or quotient underflows to zero or
-- overflows (nonzero angles below about 1e-150 degrees, magnitudes near 1e300) make PostgreSQL raise
-- "value out of range", where DuckDB continues with IEEE arithmetic.

CREATE OR REPLACE FUNCTION scisql_angSep(
    ra1 double precision, dec1 double precision, ra2 double precision, dec2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_valid_sc(ra1, dec1) AND _dms_valid_sc(ra2, dec2) THEN _dms_angsep(ra1, dec1, ra2, dec2)
END;

CREATE OR REPLACE FUNCTION scisql_s2PtInCircle(
    point_ra double precision, point_dec double precision,
    center_ra double precision, center_dec double precision, radius double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_valid_sc(point_ra, point_dec) AND _dms_valid_sc(center_ra, center_dec)
        AND radius >= 0 AND radius <= 180
        THEN (_dms_angsep(point_ra, point_dec, center_ra, center_dec) <= radius)::integer
END;

-- Whether longitude lon lies in [lo, hi] after all three are reduced to [0, 360); a reduced lo
-- greater than the reduced hi is a range wrapping through 0.
CREATE OR REPLACE FUNCTION _dms_lon_in_range(lon double precision, lo double precision, hi double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_angred(lo) <= _dms_angred(hi)
        THEN (_dms_angred(lon) >= _dms_angred(lo) AND _dms_angred(lon) <= _dms_angred(hi))::integer
    ELSE (_dms_angred(lon) >= _dms_angred(lo) OR _dms_angred(lon) <= _dms_angred(hi))::integer
END;

CREATE OR REPLACE FUNCTION scisql_s2PtInBox(
    point_ra double precision, point_dec double precision,
    ra_min double precision, dec_min double precision,
    ra_max double precision, dec_max double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_valid_sc(point_ra, point_dec)
        AND _dms_valid_sc(ra_min, dec_min) AND _dms_valid_sc(ra_max, dec_max)
        AND NOT (ra_max < ra_min AND (ra_max < 0 OR ra_min > 360))
    THEN CASE
        WHEN dec_min > dec_max OR point_dec < dec_min OR point_dec > dec_max THEN 0
        WHEN ra_max - ra_min >= 360 THEN 1
        ELSE _dms_lon_in_range(point_ra, ra_min, ra_max)
    END
END;

-- The point's unit vector v in the (north, east, center) basis at the ellipse center: components
-- along north (xne) and east (yne), and zc = v . center, the cosine of the distance to the center.
CREATE OR REPLACE FUNCTION _dms_ellipse_xne(
    vx double precision, vy double precision, vz double precision,
    sin_lon double precision, cos_lon double precision, sin_lat double precision, cos_lat double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cos_lat * vz - sin_lat * (sin_lon * vy + cos_lon * vx);

CREATE OR REPLACE FUNCTION _dms_ellipse_yne(
    vx double precision, vy double precision, sin_lon double precision, cos_lon double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cos_lon * vy - sin_lon * vx;

CREATE OR REPLACE FUNCTION _dms_ellipse_zc(
    vx double precision, vy double precision, vz double precision,
    sin_lon double precision, cos_lon double precision, sin_lat double precision, cos_lat double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sin_lat * vz + cos_lat * (cos_lon * vx + sin_lon * vy);

-- Offsets of the point along the major (x) and minor (y) axes: (xne, yne) rotated by the position
-- angle (east of north).
CREATE OR REPLACE FUNCTION _dms_ellipse_x(
    vx double precision, vy double precision, vz double precision,
    sin_lon double precision, cos_lon double precision, sin_lat double precision, cos_lat double precision,
    sin_pa double precision, cos_pa double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sin_pa * _dms_ellipse_yne(vx, vy, sin_lon, cos_lon)
    + cos_pa * _dms_ellipse_xne(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat);

CREATE OR REPLACE FUNCTION _dms_ellipse_y(
    vx double precision, vy double precision, vz double precision,
    sin_lon double precision, cos_lon double precision, sin_lat double precision, cos_lat double precision,
    sin_pa double precision, cos_pa double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cos_pa * _dms_ellipse_yne(vx, vy, sin_lon, cos_lon)
    - sin_pa * _dms_ellipse_xne(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat);

-- scisql's test x^2 / M^2 + y^2 / m^2 <= 1 (M, m: semi-axes in radians), restricted to the
-- hemisphere around the center. Every helper is called with this function's parameters, which
-- keeps all of them inlinable.
CREATE OR REPLACE FUNCTION _dms_ellipse_contains(
    vx double precision, vy double precision, vz double precision,
    sin_lon double precision, cos_lon double precision, sin_lat double precision, cos_lat double precision,
    sin_pa double precision, cos_pa double precision, major double precision, minor double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    _dms_ellipse_zc(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat) > 0
    AND _dms_ellipse_x(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat, sin_pa, cos_pa)
        * _dms_ellipse_x(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat, sin_pa, cos_pa)
        * (1 / (major * major))
    + _dms_ellipse_y(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat, sin_pa, cos_pa)
        * _dms_ellipse_y(vx, vy, vz, sin_lon, cos_lon, sin_lat, cos_lat, sin_pa, cos_pa)
        * (1 / (minor * minor))
    <= 1
)::integer;

CREATE OR REPLACE FUNCTION scisql_s2PtInEllipse(
    point_ra double precision, point_dec double precision,
    center_ra double precision, center_dec double precision,
    semi_major_arcsec double precision, semi_minor_arcsec double precision,
    position_angle double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_valid_sc(point_ra, point_dec) AND _dms_valid_sc(center_ra, center_dec)
        AND _dms_finite(position_angle)
        AND semi_minor_arcsec >= 0 AND semi_minor_arcsec <= semi_major_arcsec
        AND semi_major_arcsec <= 36000
    THEN CASE
        WHEN semi_minor_arcsec = 0 THEN 0
        ELSE _dms_ellipse_contains(
            _dms_sc_x(point_ra, point_dec), _dms_sc_y(point_ra, point_dec), _dms_sc_z(point_dec),
            sin(center_ra * '0.017453292519943295'::float8), cos(center_ra * '0.017453292519943295'::float8),
            sin(center_dec * '0.017453292519943295'::float8), cos(center_dec * '0.017453292519943295'::float8),
            sin(position_angle * '0.017453292519943295'::float8),
            cos(position_angle * '0.017453292519943295'::float8),
            semi_major_arcsec * '0.017453292519943295'::float8 / 3600,
            semi_minor_arcsec * '0.017453292519943295'::float8 / 3600)
    END
END;

-- p . (2 a x b), with the cross product computed as scisql_v3_rcross does: (b + a) x (b - a).
CREATE OR REPLACE FUNCTION _dms_rcross_dot(
    px double precision, py double precision, pz double precision,
    x1 double precision, y1 double precision, z1 double precision,
    x2 double precision, y2 double precision, z2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN px * ((y2 + y1) * (z2 - z1) - (z2 + z1) * (y2 - y1))
    + py * ((z2 + z1) * (x2 - x1) - (x2 + x1) * (z2 - z1))
    + pz * ((x2 + x1) * (y2 - y1) - (y2 + y1) * (x2 - x1));

-- scisql_s2PtInCPoly takes a variable number of vertices, so on PostgreSQL it is VARIADIC and
-- iterates over them in PL/pgSQL (about 1-2 microseconds per row for a quadrilateral). The edge
-- test is the same expression as the one in DuckDB's macros, term for term.
CREATE OR REPLACE FUNCTION scisql_s2PtInCPoly(
    point_ra double precision, point_dec double precision, VARIADIC verts double precision[])
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    n constant integer := cardinality(verts) / 2;
    vx double precision[];
    vy double precision[];
    vz double precision[];
    sx double precision := 0;  -- sum of the vertices, added in order
    sy double precision := 0;
    sz double precision := 0;
    flipped boolean;
    d double precision;
BEGIN
    IF cardinality(verts) < 6 OR cardinality(verts) > 40 OR mod(cardinality(verts), 2) <> 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE =
            'scisql_s2PtInCPoly expects 3 to 20 vertices, i.e. 6 to 40 coordinates (lon, lat pairs) '
            || 'after the point; got ' || cardinality(verts)::text || ' coordinates';
    END IF;
    IF _dms_valid_sc(point_ra, point_dec) IS NOT TRUE OR n IS NULL THEN
        RETURN NULL;
    END IF;
    FOR i IN 1..n LOOP
        IF _dms_valid_sc(verts[2 * i - 1], verts[2 * i]) IS NOT TRUE THEN
            RETURN NULL;
        END IF;
        vx[i] := _dms_sc_x(verts[2 * i - 1], verts[2 * i]);
        vy[i] := _dms_sc_y(verts[2 * i - 1], verts[2 * i]);
        vz[i] := _dms_sc_z(verts[2 * i]);
        sx := sx + vx[i];
        sy := sy + vy[i];
        sz := sz + vz[i];
    END LOOP;
    -- Clockwise vertices give (sum of vertices) . e_1 < 0: then every edge test flips.
    flipped := _dms_rcross_dot(sx, sy, sz, vx[1], vy[1], vz[1], vx[2], vy[2], vz[2]) < 0;
    FOR i IN 1..n LOOP
        d := _dms_rcross_dot(
            _dms_sc_x(point_ra, point_dec), _dms_sc_y(point_ra, point_dec), _dms_sc_z(point_dec),
            vx[i], vy[i], vz[i], vx[mod(i, n) + 1], vy[mod(i, n) + 1], vz[mod(i, n) + 1]);
        IF (flipped AND d > 0) OR (NOT flipped AND d < 0) THEN
            RETURN 0;
        END IF;
    END LOOP;
    RETURN 1;
END
$$;
