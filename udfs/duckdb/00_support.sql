-- Internal helpers shared by the scisql-compatible macros (DuckDB).
--
-- This file mirrors udfs/postgres/00_support.sql macro for function, operation for operation and
-- with the same constants, so that both backends return bit-identical results; the PostgreSQL file
-- explains the choices. Parameters are typed, so arguments are converted to DOUBLE before any
-- arithmetic, as PostgreSQL converts them to double precision (a DECIMAL argument computed in
-- DECIMAL would round differently). Names starting with _dms_ are internal and may change.
--
-- The macros can be created as TEMP macros or stored in a database file (udfs.register_duckdb).
-- Stored macros call each other by unqualified name, so they resolve while the database that holds
-- them is on the search path (the default database, or after USE).

-- True for a finite value, false for NaN and +/-Infinity, NULL for NULL.
CREATE OR REPLACE MACRO _dms_finite(x) AS
x > '-Infinity'::DOUBLE AND x < 'Infinity'::DOUBLE;

-- A valid spherical coordinate pair in degrees: finite longitude, latitude in [-90, 90].
-- (NaN compares greater than every number, so a NaN latitude fails the upper bound.)
CREATE OR REPLACE MACRO _dms_valid_sc(lon, lat) AS
_dms_finite(lon) AND lat >= -90 AND lat <= 90;

-- Unit vector of a (lon, lat) position in degrees, as scisql_sctov3 computes it.
CREATE OR REPLACE MACRO _dms_sc_x(lon, lat) AS
cos(lon * '0.017453292519943295'::DOUBLE) * cos(lat * '0.017453292519943295'::DOUBLE);

CREATE OR REPLACE MACRO _dms_sc_y(lon, lat) AS
sin(lon * '0.017453292519943295'::DOUBLE) * cos(lat * '0.017453292519943295'::DOUBLE);

CREATE OR REPLACE MACRO _dms_sc_z(lat) AS
sin(lat * '0.017453292519943295'::DOUBLE);

-- Angular separation in degrees from the sines and cosines of the latitudes and of the longitude
-- difference: Vincenty's formula atan2(|n|, d), accurate for tiny and for near-antipodal separations
-- alike (the haversine form scisql uses loses about half the digits near 180 degrees). The two
-- components of n are written out twice instead of passed to a helper: PostgreSQL only inlines a
-- function whose arguments used more than once are cheap (at most 10 operators), and a function
-- that is not inlined costs a call per row.
CREATE OR REPLACE MACRO _dms_angsep_sc(
    slat1, clat1,
    slat2, clat2,
    sdlon, cdlon) AS
least('180'::DOUBLE, '57.29577951308232'::DOUBLE * atan2(
    sqrt((clat2 * sdlon) * (clat2 * sdlon)
        + (clat1 * slat2 - slat1 * clat2 * cdlon) * (clat1 * slat2 - slat1 * clat2 * cdlon)),
    slat1 * slat2 + clat1 * clat2 * cdlon));

-- Angular separation in degrees of two positions given in degrees; no input validation.
CREATE OR REPLACE MACRO _dms_angsep(
    ra1, dec1, ra2, dec2) AS
_dms_angsep_sc(
    sin(dec1 * '0.017453292519943295'::DOUBLE), cos(dec1 * '0.017453292519943295'::DOUBLE),
    sin(dec2 * '0.017453292519943295'::DOUBLE), cos(dec2 * '0.017453292519943295'::DOUBLE),
    sin((ra2 - ra1) * '0.017453292519943295'::DOUBLE), cos((ra2 - ra1) * '0.017453292519943295'::DOUBLE));

-- Longitude range reduction to [0, 360), as scisql_angred: fmod(x, 360), plus 360 if negative,
-- and 0 where that rounds to 360. PostgreSQL has no fmod for double precision, so the remainder is
-- x - 360 * floor(x / 360), which is exact except when x / 360 rounds onto an integer; the
-- negative remainder that case leaves is fixed up like fmod's.
CREATE OR REPLACE MACRO _dms_angred_fix(r) AS
CASE
    WHEN r < 0 AND r + 360 < 360 THEN r + 360
    WHEN r < 0 OR r >= 360 THEN 0
    ELSE r
END;

CREATE OR REPLACE MACRO _dms_angred(x) AS
_dms_angred_fix(x - 360 * floor(x / 360));

-- hypot(a, b) as scisql_hypot computes it: |a| sqrt(1 + (b/a)^2) with |a| >= |b|. The arm for
-- tiny ratios returns what the formula would (1 + q*q rounds to 1 there) without computing q*q,
-- whose underflow PostgreSQL reports as an error.
CREATE OR REPLACE MACRO _dms_hypot_ordered(hi, lo) AS
CASE
    WHEN hi = 0 THEN '0'::DOUBLE
    WHEN lo / hi < '1e-10'::DOUBLE THEN hi
    ELSE hi * sqrt(1 + (lo / hi) * (lo / hi))
END;

CREATE OR REPLACE MACRO _dms_hypot(a, b) AS
CASE
    WHEN abs(a) >= abs(b) THEN _dms_hypot_ordered(abs(a), abs(b))
    ELSE _dms_hypot_ordered(abs(b), abs(a))
END;
