-- ADQL geometry values and the ivo_* / adql_* functions the ADQL front end lowers to (DuckDB).
--
-- Mirrors udfs/postgres/50_adql.sql, whose header records the semantics; DuckDB lists stand for
-- PostgreSQL arrays (both 1-based). adql_contains on a polygon repeats scisql_s2PtInCPoly's test
-- (udfs._polygon_macro) over a list of any length instead of one macro overload per vertex count.

CREATE OR REPLACE MACRO _dms_triangle_excess(ux, uy, uz, vx, vy, vz, wx, wy, wz) AS
2 * atan2(
    abs(ux * (vy * wz - vz * wy) + uy * (vz * wx - vx * wz) + uz * (vx * wy - vy * wx)),
    1 + ux * vx + uy * vy + uz * vz + vx * wx + vy * wy + vz * wz + wx * ux + wy * uy + wz * uz);

CREATE OR REPLACE MACRO _dms_triangle_area(lon1, lat1, lon2, lat2, lon3, lat3) AS
_dms_triangle_excess(
    _dms_sc_x(lon1, lat1), _dms_sc_y(lon1, lat1), _dms_sc_z(lat1),
    _dms_sc_x(lon2, lat2), _dms_sc_y(lon2, lat2), _dms_sc_z(lat2),
    _dms_sc_x(lon3, lat3), _dms_sc_y(lon3, lat3), _dms_sc_z(lat3));

CREATE OR REPLACE MACRO adql_area(g) AS
CASE
    WHEN len(g) = 2 THEN 0::DOUBLE
    WHEN len(g) = 3 AND g[3] >= 0 AND g[3] <= 180
        THEN 2 * pi() * (1 - cos(radians(g[3]))) * 3282.806350011744
    WHEN len(g) >= 6 AND len(g) % 2 = 0 THEN 3282.806350011744 * list_sum(list_transform(
        range(2, len(g) // 2),
        lambda i: _dms_triangle_area(g[1], g[2], g[2 * i - 1], g[2 * i], g[2 * i + 1], g[2 * i + 2])))
END;

CREATE OR REPLACE MACRO _dms_direction_lonlat(v) AS
[_dms_angred(degrees(atan2(v[2], v[1]))), degrees(atan2(v[3], sqrt(v[1] * v[1] + v[2] * v[2])))];

CREATE OR REPLACE MACRO _dms_sum_vectors(vs) AS
[list_sum(list_transform(vs, lambda v: v[1])), list_sum(list_transform(vs, lambda v: v[2])),
 list_sum(list_transform(vs, lambda v: v[3]))];

-- 1/2 theta n of the great-circle edge from unit vector a to b (theta its arc, n its unit normal), from
-- c = a x b and d = a . b; lambdas bind each intermediate once (macro arguments would be expanded).
CREATE OR REPLACE MACRO _dms_edge_moment(a, b) AS
list_transform([[a[2] * b[3] - a[3] * b[2], a[3] * b[1] - a[1] * b[3], a[1] * b[2] - a[2] * b[1]]],
    lambda c: list_transform([sqrt(c[1] * c[1] + c[2] * c[2] + c[3] * c[3])],
        lambda cn: CASE WHEN cn = 0 THEN [0.0, 0.0, 0.0]::DOUBLE[]
            ELSE list_transform(c, lambda x: 0.5 * atan2(cn, a[1] * b[1] + a[2] * b[2] + a[3] * b[3]) * x / cn)
        END)[1])[1];

-- The moment (integral of the position vector over the area) of a polygon given by its unit vectors vs,
-- oriented towards its vertices, as adql_centroid in PostgreSQL.
CREATE OR REPLACE MACRO _dms_polygon_moment(vs) AS
list_transform([_dms_sum_vectors(list_transform(range(1, len(vs) + 1),
        lambda i: _dms_edge_moment(vs[i], vs[i % len(vs) + 1])))],
    lambda m: list_transform([_dms_sum_vectors(vs)],
        lambda s: CASE WHEN m[1] * s[1] + m[2] * s[2] + m[3] * s[3] < 0 THEN [-m[1], -m[2], -m[3]] ELSE m END)[1])[1];

CREATE OR REPLACE MACRO adql_centroid(g) AS
CASE
    WHEN len(g) IN (2, 3) THEN [g[1], g[2]]::DOUBLE[]
    WHEN len(g) >= 6 AND len(g) % 2 = 0 THEN list_transform(
        [list_transform(range(1, len(g) // 2 + 1), lambda i: [_dms_sc_x(g[2 * i - 1], g[2 * i]),
            _dms_sc_y(g[2 * i - 1], g[2 * i]), _dms_sc_z(g[2 * i])])],
        lambda vs: _dms_direction_lonlat(_dms_polygon_moment(vs)))[1]
END;

-- scisql_s2PtInCPoly's test for a polygon given as a list [lon1, lat1, ..., lonN, latN].
CREATE OR REPLACE MACRO _dms_cpoly_list(lon, lat, g) AS
CASE
    WHEN _dms_valid_sc(lon, lat)
        AND list_bool_and(list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_valid_sc(g[2 * i - 1], g[2 * i])))
    THEN (CASE WHEN _dms_rcross_dot(
            list_sum(list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_sc_x(g[2 * i - 1], g[2 * i]))),
            list_sum(list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_sc_y(g[2 * i - 1], g[2 * i]))),
            list_sum(list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_sc_z(g[2 * i]))),
            _dms_sc_x(g[1], g[2]), _dms_sc_y(g[1], g[2]), _dms_sc_z(g[2]),
            _dms_sc_x(g[3], g[4]), _dms_sc_y(g[3], g[4]), _dms_sc_z(g[4])) < 0
        THEN list_bool_and(list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_cpoly_edge(
            lon, lat, g[2 * i - 1], g[2 * i], g[2 * (i % (len(g) // 2)) + 1], g[2 * (i % (len(g) // 2)) + 2]) <= 0))
        ELSE list_bool_and(list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_cpoly_edge(
            lon, lat, g[2 * i - 1], g[2 * i], g[2 * (i % (len(g) // 2)) + 1], g[2 * (i % (len(g) // 2)) + 2]) >= 0))
        END)::INTEGER
END;

CREATE OR REPLACE MACRO adql_contains(p, g) AS
CASE
    WHEN len(p) <> 2 THEN NULL
    WHEN len(g) = 3 THEN scisql_s2PtInCircle(p[1], p[2], g[1], g[2], g[3])
    WHEN len(g) >= 6 AND len(g) <= 40 AND len(g) % 2 = 0 THEN _dms_cpoly_list(p[1], p[2], g)
END;

CREATE OR REPLACE MACRO adql_round(x, n) AS round(x::DOUBLE, n);

CREATE OR REPLACE MACRO adql_truncate(x, n) AS trunc(x::DOUBLE, n);

CREATE OR REPLACE MACRO adql_mod(a, b) AS a - b * trunc(a / b);

CREATE OR REPLACE MACRO ivo_hasword(haystack, needle) AS
regexp_matches(haystack, '(?i)(^|[^[:alnum:]_])'
    || regexp_replace(needle, '([.^$*+?()\[\]{}|\\-])', '\\\1', 'g') || '($|[^[:alnum:]_])')::INTEGER;

CREATE OR REPLACE MACRO ivo_hashlist_has(hashlist, item) AS
list_contains(string_split(lower(hashlist), '#'), lower(item))::INTEGER;

CREATE OR REPLACE MACRO ivo_interval_overlaps(lo1, hi1, lo2, hi2) AS (hi1 >= lo2 AND hi2 >= lo1)::INTEGER;

CREATE OR REPLACE MACRO ivo_to_mjd(t) AS epoch(t::TIMESTAMP) / 86400 + 40587;

CREATE OR REPLACE MACRO ivo_to_jd(t) AS ivo_to_mjd(t) + 2400000.5;
