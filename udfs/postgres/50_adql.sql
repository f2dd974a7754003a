-- ADQL geometry values and the ivo_* / adql_* functions the ADQL front end lowers to (PostgreSQL).
--
-- Geometry values are DALI double arrays: [lon, lat] a point, [lon, lat, radius] a circle,
-- [lon1, lat1, ..., lonN, latN] (N >= 3) a polygon whose edges are great circles; degrees, ICRS.
--   adql_area(g): area in square degrees; a point 0, a circle 2 pi (1 - cos r), a polygon the sum of
--     the spherical excesses of its fan triangles (v1, vi, vi+1) (Van Oosterom & Strackee 1983:
--     tan(E/2) = |a . (b x c)| / (1 + a.b + b.c + c.a)), exact for convex polygons.
--   adql_centroid(g): [lon, lat]; a point itself, a circle its center, a polygon its centroid on the
--     sphere, exactly: the direction of the integral of the position vector over the polygon's area,
--     which is 1/2 sum(theta_i n_i) over its great-circle edges (theta_i the edge's arc, n_i its unit
--     normal), oriented towards the polygon's vertices (polygons smaller than a hemisphere).
--   adql_contains(p, g): 1/0 whether point p lies in circle or polygon g, exactly as
--     scisql_s2PtInCircle / scisql_s2PtInCPoly decide.
--   adql_round(x, n), adql_truncate(x, n): x rounded (half away from zero) or truncated to n decimals.
--   adql_mod(a, b): a - b * trunc(a / b), the sign of a (as C fmod and PostgreSQL's integer mod).
--   ivo_hasword(haystack, needle): 1 if needle occurs in haystack as a whole word, ignoring case.
--   ivo_hashlist_has(list, item): 1 if item is one of the '#'-separated words of list, ignoring case.
--   ivo_interval_overlaps(l1, h1, l2, h2): 1 if the closed intervals [l1, h1] and [l2, h2] overlap.
--   ivo_to_mjd(t), ivo_to_jd(t): the modified / plain Julian date of a timestamp (UTC, no leap seconds).
-- NULL arguments give NULL; a geometry array of another length gives NULL.

CREATE OR REPLACE FUNCTION _dms_triangle_excess(
    ux double precision, uy double precision, uz double precision,
    vx double precision, vy double precision, vz double precision,
    wx double precision, wy double precision, wz double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 2 * atan2(
    abs(ux * (vy * wz - vz * wy) + uy * (vz * wx - vx * wz) + uz * (vx * wy - vy * wx)),
    1 + ux * vx + uy * vy + uz * vz + vx * wx + vy * wy + vz * wz + wx * ux + wy * uy + wz * uz);

CREATE OR REPLACE FUNCTION _dms_triangle_area(
    lon1 double precision, lat1 double precision, lon2 double precision, lat2 double precision,
    lon3 double precision, lat3 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN _dms_triangle_excess(
    _dms_sc_x(lon1, lat1), _dms_sc_y(lon1, lat1), _dms_sc_z(lat1),
    _dms_sc_x(lon2, lat2), _dms_sc_y(lon2, lat2), _dms_sc_z(lat2),
    _dms_sc_x(lon3, lat3), _dms_sc_y(lon3, lat3), _dms_sc_z(lat3));

CREATE OR REPLACE FUNCTION adql_area(g double precision[])
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN cardinality(g) = 2 THEN 0
    WHEN cardinality(g) = 3 AND g[3] >= 0 AND g[3] <= 180
        THEN 2 * pi() * (1 - cos(radians(g[3]))) * 3282.806350011744
    WHEN cardinality(g) >= 6 AND cardinality(g) % 2 = 0 THEN 3282.806350011744 * (
        SELECT sum(_dms_triangle_area(g[1], g[2], g[2 * i - 1], g[2 * i], g[2 * i + 1], g[2 * i + 2]))
        FROM generate_series(2, cardinality(g) / 2 - 1) AS i)
END;

CREATE OR REPLACE FUNCTION adql_centroid(g double precision[])
RETURNS double precision[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    n integer;
    j integer;
    a1 double precision; a2 double precision; a3 double precision;
    b1 double precision; b2 double precision; b3 double precision;
    cx double precision; cy double precision; cz double precision;
    cn double precision;
    theta double precision;
    mx double precision := 0;
    my double precision := 0;
    mz double precision := 0;
    vx double precision := 0;
    vy double precision := 0;
    vz double precision := 0;
BEGIN
    IF g IS NULL OR cardinality(g) < 2 THEN
        RETURN NULL;
    ELSIF cardinality(g) IN (2, 3) THEN
        RETURN ARRAY[g[1], g[2]];
    ELSIF cardinality(g) < 6 OR cardinality(g) % 2 = 1 THEN
        RETURN NULL;
    END IF;
    n := cardinality(g) / 2;
    FOR i IN 1 .. n LOOP
        j := i % n + 1;
        a1 := _dms_sc_x(g[2 * i - 1], g[2 * i]); a2 := _dms_sc_y(g[2 * i - 1], g[2 * i]); a3 := _dms_sc_z(g[2 * i]);
        b1 := _dms_sc_x(g[2 * j - 1], g[2 * j]); b2 := _dms_sc_y(g[2 * j - 1], g[2 * j]); b3 := _dms_sc_z(g[2 * j]);
        cx := a2 * b3 - a3 * b2; cy := a3 * b1 - a1 * b3; cz := a1 * b2 - a2 * b1;
        cn := sqrt(cx * cx + cy * cy + cz * cz);
        IF cn > 0 THEN
            theta := atan2(cn, a1 * b1 + a2 * b2 + a3 * b3);
            mx := mx + 0.5 * theta * cx / cn;
            my := my + 0.5 * theta * cy / cn;
            mz := mz + 0.5 * theta * cz / cn;
        END IF;
        vx := vx + a1; vy := vy + a2; vz := vz + a3;
    END LOOP;
    IF mx * vx + my * vy + mz * vz < 0 THEN  -- clockwise vertices: the moment points away
        mx := -mx; my := -my; mz := -mz;
    END IF;
    RETURN ARRAY[_dms_angred(degrees(atan2(my, mx))), degrees(atan2(mz, sqrt(mx * mx + my * my)))];
END;
$$;

CREATE OR REPLACE FUNCTION adql_contains(p double precision[], g double precision[])
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN cardinality(p) <> 2 THEN NULL
    WHEN cardinality(g) = 3 THEN scisql_s2PtInCircle(p[1], p[2], g[1], g[2], g[3])
    WHEN cardinality(g) >= 6 AND cardinality(g) <= 40 AND cardinality(g) % 2 = 0
        THEN scisql_s2PtInCPoly(p[1], p[2], VARIADIC g)
END;

CREATE OR REPLACE FUNCTION adql_round(x double precision, n integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN round(x::numeric, n)::double precision;

CREATE OR REPLACE FUNCTION adql_truncate(x double precision, n integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN trunc(x::numeric, n)::double precision;

CREATE OR REPLACE FUNCTION adql_mod(a bigint, b bigint)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN mod(a, b);

CREATE OR REPLACE FUNCTION adql_mod(a integer, b integer)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN mod(a, b);

CREATE OR REPLACE FUNCTION adql_mod(a double precision, b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN a - b * trunc(a / b);

CREATE OR REPLACE FUNCTION ivo_hasword(haystack text, needle text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (haystack ~* ('(^|[^[:alnum:]_])'
    || regexp_replace(needle, '([.^$*+?()\[\]{}|\\-])', '\\\1', 'g') || '($|[^[:alnum:]_])'))::integer;

CREATE OR REPLACE FUNCTION ivo_hashlist_has(hashlist text, item text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (lower(item) = ANY (string_to_array(lower(hashlist), '#')))::integer;

CREATE OR REPLACE FUNCTION ivo_interval_overlaps(
    lo1 double precision, hi1 double precision, lo2 double precision, hi2 double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (hi1 >= lo2 AND hi2 >= lo1)::integer;

CREATE OR REPLACE FUNCTION ivo_to_mjd(t timestamp)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN extract(epoch FROM t)::double precision / 86400 + 40587;

CREATE OR REPLACE FUNCTION ivo_to_jd(t timestamp)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ivo_to_mjd(t) + 2400000.5;
