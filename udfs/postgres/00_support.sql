-- Internal helpers shared by the scisql-compatible functions (PostgreSQL).
--
-- Every function here is a single-expression LANGUAGE sql function with an SQL-standard body
-- (RETURN ...), IMMUTABLE and PARALLEL SAFE and deliberately not STRICT, so that the planner can
-- inline it into the calling query; NULL inputs propagate through the expressions instead.
-- Names starting with _dms_ are internal and may change without notice.
--
-- Numeric constants are written as '...'::float8 strings: the string is parsed by strtod (correctly
-- rounded), which gives exactly the double a C compiler gives for the same literal, and keeps the
-- arithmetic in IEEE double precision. udfs/duckdb/00_support.sql mirrors this file operation by
-- operation, so that both backends return bit-identical results.

-- Raises an error from inside an expression; used by CASE arms that reject invalid input. It is
-- IMMUTABLE so that callers stay inlinable; callers pass a message built from the offending row's
-- values, so the planner never folds (and raises) it for a CASE arm that valid input cannot reach.
CREATE OR REPLACE FUNCTION _dms_raise(message text, sqlstate text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = message, ERRCODE = sqlstate;
END
$$;

-- True for a finite value, false for NaN and +/-Infinity, NULL for NULL.
CREATE OR REPLACE FUNCTION _dms_finite(x double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN x > '-Infinity'::float8 AND x < 'Infinity'::float8;

-- A valid spherical coordinate pair in degrees: finite longitude, latitude in [-90, 90].
-- (NaN compares greater than every number, so a NaN latitude fails the upper bound.)
CREATE OR REPLACE FUNCTION _dms_valid_sc(lon double precision, lat double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN _dms_finite(lon) AND lat >= -90 AND lat <= 90;

-- Unit vector of a (lon, lat) position in degrees, as scisql_sctov3 computes it.
CREATE OR REPLACE FUNCTION _dms_sc_x(lon double precision, lat double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cos(lon * '0.017453292519943295'::float8) * cos(lat * '0.017453292519943295'::float8);

CREATE OR REPLACE FUNCTION _dms_sc_y(lon double precision, lat double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sin(lon * '0.017453292519943295'::float8) * cos(lat * '0.017453292519943295'::float8);

CREATE OR REPLACE FUNCTION _dms_sc_z(lat double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sin(lat * '0.017453292519943295'::float8);

-- Angular separation in degrees from the sines and cosines of the latitudes and of the longitude
-- difference: Vincenty's formula atan2(|n|, d), accurate for tiny and for near-antipodal separations
-- alike (the haversine form scisql uses loses about half the digits near 180 degrees). The two
-- components of n are written out twice instead of passed to a helper: PostgreSQL only inlines a
-- function whose arguments used more than once are cheap (at most 10 operators), and a function
-- that is not inlined costs a call per row.
CREATE OR REPLACE FUNCTION _dms_angsep_sc(
    slat1 double precision, clat1 double precision,
    slat2 double precision, clat2 double precision,
    sdlon double precision, cdlon double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN least('180'::float8, '57.29577951308232'::float8 * atan2(
    sqrt((clat2 * sdlon) * (clat2 * sdlon)
        + (clat1 * slat2 - slat1 * clat2 * cdlon) * (clat1 * slat2 - slat1 * clat2 * cdlon)),
    slat1 * slat2 + clat1 * clat2 * cdlon));

-- Angular separation in degrees of two positions given in degrees; no input validation.
CREATE OR REPLACE FUNCTION _dms_angsep(
    ra1 double precision, dec1 double precision, ra2 double precision, dec2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN _dms_angsep_sc(
    sin(dec1 * '0.017453292519943295'::float8), cos(dec1 * '0.017453292519943295'::float8),
    sin(dec2 * '0.017453292519943295'::float8), cos(dec2 * '0.017453292519943295'::float8),
    sin((ra2 - ra1) * '0.017453292519943295'::float8), cos((ra2 - ra1) * '0.017453292519943295'::float8));

-- Longitude range reduction to [0, 360), as scisql_angred: fmod(x, 360), plus 360 if negative,
-- and 0 where that rounds to 360. PostgreSQL has no fmod for double precision, so the remainder is
-- x - 360 * floor(x / 360), which is exact except when x / 360 rounds onto an integer; the
-- negative remainder that case leaves is fixed up like fmod's.
CREATE OR REPLACE FUNCTION _dms_angred_fix(r double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN r < 0 AND r + 360 < 360 THEN r + 360
    WHEN r < 0 OR r >= 360 THEN 0
    ELSE r
END;

CREATE OR REPLACE FUNCTION _dms_angred(x double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN _dms_angred_fix(x - 360 * floor(x / 360));

-- hypot(a, b) as scisql_hypot computes it: |a| sqrt(1 + (b/a)^2) with |a| >= |b|. The arm for
-- tiny ratios returns what the formula would (1 + q*q rounds to 1 there) without computing q*q,
-- whose underflow PostgreSQL reports as an error.
CREATE OR REPLACE FUNCTION _dms_hypot_ordered(hi double precision, lo double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN hi = 0 THEN '0'::float8
    WHEN lo / hi < '1e-10'::float8 THEN hi
    ELSE hi * sqrt(1 + (lo / hi) * (lo / hi))
END;

CREATE OR REPLACE FUNCTION _dms_hypot(a double precision, b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN abs(a) >= abs(b) THEN _dms_hypot_ordered(abs(a), abs(b))
    ELSE _dms_hypot_ordered(abs(b), abs(a))
END;
