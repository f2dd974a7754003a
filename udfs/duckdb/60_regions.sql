-- Region values and their exact intersection (DuckDB).
--
-- Mirrors udfs/postgres/60_regions.sql, whose header records the semantics. Unit vectors are lists
-- [x, y, z]; lambdas bind each intermediate once (macro arguments would be expanded at every use).

CREATE OR REPLACE MACRO _dms_vec(lon, lat) AS [_dms_sc_x(lon, lat), _dms_sc_y(lon, lat), _dms_sc_z(lat)];

CREATE OR REPLACE MACRO _dms_dot(a, b) AS a[1] * b[1] + a[2] * b[2] + a[3] * b[3];

CREATE OR REPLACE MACRO _dms_cross(a, b) AS
[a[2] * b[3] - a[3] * b[2], a[3] * b[1] - a[1] * b[3], a[1] * b[2] - a[2] * b[1]];

CREATE OR REPLACE MACRO _dms_vertices(g) AS
list_transform(range(1, len(g) // 2 + 1), lambda i: _dms_vec(g[2 * i - 1], g[2 * i]));

-- the angle (radians) between unit vectors
CREATE OR REPLACE MACRO _dms_vec_angle(a, b) AS
list_transform([_dms_cross(a, b)], lambda c: atan2(sqrt(_dms_dot(c, c)), _dms_dot(a, b)))[1];

CREATE OR REPLACE MACRO _dms_region_winds(g, lon, lat) AS
list_transform([[_dms_vertices(g), [_dms_vec(lon, lat)]]], lambda vp:
    abs(list_sum(list_transform(range(1, len(vp[1]) + 1), lambda i:
        list_transform([[vp[1][i], vp[1][i % len(vp[1]) + 1]]], lambda ab:
            atan2(_dms_dot(_dms_cross(ab[1], ab[2]), vp[2][1]),
                _dms_dot(ab[1], ab[2]) - _dms_dot(ab[1], vp[2][1]) * _dms_dot(ab[2], vp[2][1])))[1]))) > pi())[1];

CREATE OR REPLACE MACRO _dms_arc_distance(a, b, c) AS
list_transform([_dms_cross(a, b)], lambda m: list_transform([sqrt(_dms_dot(m, m))], lambda mn:
    CASE WHEN mn > 0 THEN list_transform([[m[1] / mn, m[2] / mn, m[3] / mn]], lambda n:
        list_transform([_dms_dot(c, n)], lambda d:
            list_transform([[c[1] - d * n[1], c[2] - d * n[2], c[3] - d * n[3]]], lambda q:
                CASE WHEN _dms_dot(_dms_cross(a, q), n) >= 0 AND _dms_dot(_dms_cross(q, b), n) >= 0
                        AND _dms_dot(q, q) > 0
                    THEN asin(least(1.0, abs(d)))
                    ELSE least(_dms_vec_angle(a, c), _dms_vec_angle(b, c)) END)[1])[1])[1]
    ELSE least(_dms_vec_angle(a, c), _dms_vec_angle(b, c)) END)[1])[1];

CREATE OR REPLACE MACRO _dms_arcs_cross(a, b, c, d) AS
list_transform([[_dms_cross(a, b), _dms_cross(c, d)]], lambda mn:
    CASE WHEN _dms_dot(mn[1], c) * _dms_dot(mn[1], d) > 0 OR _dms_dot(mn[2], a) * _dms_dot(mn[2], b) > 0
        THEN false
    ELSE list_transform([_dms_cross(mn[1], mn[2])], lambda x0:
        CASE WHEN _dms_dot(x0, x0) = 0 THEN false
        ELSE list_transform([CASE WHEN x0[1] * (a[1] + b[1]) + x0[2] * (a[2] + b[2]) + x0[3] * (a[3] + b[3]) < 0
                THEN [-x0[1], -x0[2], -x0[3]] ELSE x0 END], lambda x:
            _dms_dot(_dms_cross(a, x), mn[1]) >= 0 AND _dms_dot(_dms_cross(x, b), mn[1]) >= 0
            AND _dms_dot(_dms_cross(c, x), mn[2]) >= 0 AND _dms_dot(_dms_cross(x, d), mn[2]) >= 0)[1]
        END)[1]
    END)[1];

CREATE OR REPLACE MACRO _dms_region_edge_distance(g, lon, lat) AS
list_transform([[_dms_vertices(g), [_dms_vec(lon, lat)]]], lambda vp:
    degrees(list_min(list_transform(range(1, len(vp[1]) + 1), lambda i:
        _dms_arc_distance(vp[1][i], vp[1][i % len(vp[1]) + 1], vp[2][1])))))[1];

CREATE OR REPLACE MACRO _dms_polygons_intersect(a, b) AS
list_bool_or(list_transform(range(1, len(a) // 2 + 1), lambda i: _dms_region_winds(b, a[2 * i - 1], a[2 * i])))
OR list_bool_or(list_transform(range(1, len(b) // 2 + 1), lambda i: _dms_region_winds(a, b[2 * i - 1], b[2 * i])))
OR list_transform([[_dms_vertices(a), _dms_vertices(b)]], lambda vs:
    list_bool_or(list_transform(range(1, len(vs[1]) + 1), lambda i:
        list_bool_or(list_transform(range(1, len(vs[2]) + 1), lambda j:
            _dms_arcs_cross(vs[1][i], vs[1][i % len(vs[1]) + 1], vs[2][j], vs[2][j % len(vs[2]) + 1]))))))[1];

CREATE OR REPLACE MACRO _dms_region_kind(g) AS
CASE
    WHEN len(g) = 2 THEN 'point'
    WHEN len(g) = 3 AND g[3] >= 0 AND g[3] <= 180 THEN 'circle'
    WHEN len(g) >= 6 AND len(g) % 2 = 0 THEN 'polygon'
END;

CREATE OR REPLACE MACRO adql_intersects(a, b) AS
(CASE _dms_region_kind(a) || '-' || _dms_region_kind(b)
    WHEN 'point-point' THEN _dms_angsep(a[1], a[2], b[1], b[2]) = 0
    WHEN 'point-circle' THEN _dms_angsep(a[1], a[2], b[1], b[2]) <= b[3]
    WHEN 'circle-point' THEN _dms_angsep(a[1], a[2], b[1], b[2]) <= a[3]
    WHEN 'point-polygon' THEN _dms_region_winds(b, a[1], a[2])
    WHEN 'polygon-point' THEN _dms_region_winds(a, b[1], b[2])
    WHEN 'circle-circle' THEN _dms_angsep(a[1], a[2], b[1], b[2]) <= a[3] + b[3]
    WHEN 'circle-polygon' THEN _dms_region_winds(b, a[1], a[2]) OR _dms_region_edge_distance(b, a[1], a[2]) <= a[3]
    WHEN 'polygon-circle' THEN _dms_region_winds(a, b[1], b[2]) OR _dms_region_edge_distance(a, b[1], b[2]) <= b[3]
    WHEN 'polygon-polygon' THEN _dms_polygons_intersect(a, b)
END)::INTEGER;
