-- Region values (geometry-valued columns such as ObsCore's s_region) and their exact intersection (PostgreSQL).
--
-- A region is stored as a DALI double array (udfs/postgres/50_adql.sql): [lon, lat] a point, [lon, lat, r] a
-- circle, [lon1, lat1, ..., lonN, latN] a polygon with great-circle edges; degrees, ICRS. Polygons may have
-- any number of vertices, need not be convex and may be given in either orientation: the inside is the
-- smaller of the two parts the edges bound (a polygon is less than a hemisphere).
--   _dms_region_winds(g, lon, lat): whether the point lies in polygon g: the angles its edges subtend at
--     the point, signed, sum to +-2 pi inside and to 0 outside (the winding number of the edges around it).
--   _dms_arc_distance(a, b, c): the angle (radians) from unit vector c to the great-circle arc a-b.
--   _dms_arcs_cross(a, b, c, d): whether great-circle arcs a-b and c-d cross.
--   adql_intersects(a, b): 1/0 whether regions a and b share a point: point-point equal, point in circle,
--     point in polygon (winding), circles within the sum of their radii, circle-polygon (the centre in the
--     polygon, or an edge within the radius), polygon-polygon (a vertex of one in the other, or two edges
--     crossing). NULL for NULL or malformed arrays.

CREATE OR REPLACE FUNCTION _dms_region_winds(g double precision[], lon double precision, lat double precision)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    n integer := cardinality(g) / 2;
    j integer;
    px double precision := _dms_sc_x(lon, lat);
    py double precision := _dms_sc_y(lon, lat);
    pz double precision := _dms_sc_z(lat);
    ax double precision; ay double precision; az double precision;
    bx double precision; b_y double precision; bz double precision;
    ap double precision; bp double precision;
    total double precision := 0;
BEGIN
    FOR i IN 1 .. n LOOP
        j := i % n + 1;
        ax := _dms_sc_x(g[2 * i - 1], g[2 * i]); ay := _dms_sc_y(g[2 * i - 1], g[2 * i]); az := _dms_sc_z(g[2 * i]);
        bx := _dms_sc_x(g[2 * j - 1], g[2 * j]); b_y := _dms_sc_y(g[2 * j - 1], g[2 * j]); bz := _dms_sc_z(g[2 * j]);
        ap := ax * px + ay * py + az * pz;
        bp := bx * px + b_y * py + bz * pz;
        total := total + atan2(
            (ay * bz - az * b_y) * px + (az * bx - ax * bz) * py + (ax * b_y - ay * bx) * pz,
            ax * bx + ay * b_y + az * bz - ap * bp);
    END LOOP;
    RETURN abs(total) > pi();
END;
$$;

CREATE OR REPLACE FUNCTION _dms_arc_distance(
    ax double precision, ay double precision, az double precision,
    bx double precision, b_y double precision, bz double precision,
    cx double precision, cy double precision, cz double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    nx double precision := ay * bz - az * b_y;
    ny double precision := az * bx - ax * bz;
    nz double precision := ax * b_y - ay * bx;
    nn double precision := sqrt(nx * nx + ny * ny + nz * nz);
    d double precision;
    qx double precision; qy double precision; qz double precision;
BEGIN
    IF nn > 0 THEN
        nx := nx / nn; ny := ny / nn; nz := nz / nn;
        d := cx * nx + cy * ny + cz * nz;
        qx := cx - d * nx; qy := cy - d * ny; qz := cz - d * nz;  -- c projected on the edge's plane
        -- q lies between a and b when a -> q and q -> b both turn the way a -> b does
        IF ((ay * qz - az * qy) * nx + (az * qx - ax * qz) * ny + (ax * qy - ay * qx) * nz) >= 0
            AND ((qy * bz - qz * b_y) * nx + (qz * bx - qx * bz) * ny + (qx * b_y - qy * bx) * nz) >= 0
            AND qx * qx + qy * qy + qz * qz > 0 THEN
            RETURN asin(least(1.0, abs(d)));
        END IF;
    END IF;
    RETURN least(
        atan2(sqrt((ay * cz - az * cy) ^ 2 + (az * cx - ax * cz) ^ 2 + (ax * cy - ay * cx) ^ 2),
            ax * cx + ay * cy + az * cz),
        atan2(sqrt((b_y * cz - bz * cy) ^ 2 + (bz * cx - bx * cz) ^ 2 + (bx * cy - b_y * cx) ^ 2),
            bx * cx + b_y * cy + bz * cz));
END;
$$;

CREATE OR REPLACE FUNCTION _dms_arcs_cross(
    ax double precision, ay double precision, az double precision,
    bx double precision, b_y double precision, bz double precision,
    cx double precision, cy double precision, cz double precision,
    dx double precision, d_y double precision, dz double precision)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    -- the normals of the two great circles
    mx double precision := ay * bz - az * b_y;
    my double precision := az * bx - ax * bz;
    mz double precision := ax * b_y - ay * bx;
    nx double precision := cy * dz - cz * d_y;
    ny double precision := cz * dx - cx * dz;
    nz double precision := cx * d_y - cy * dx;
    xx double precision; xy double precision; xz double precision;
BEGIN
    IF (mx * cx + my * cy + mz * cz) * (mx * dx + my * d_y + mz * dz) > 0
        OR (nx * ax + ny * ay + nz * az) * (nx * bx + ny * b_y + nz * bz) > 0 THEN
        RETURN false;  -- one arc lies on one side of the other's great circle
    END IF;
    -- the circles meet at +-x; the arcs cross if one of the two lies on both arcs
    xx := my * nz - mz * ny; xy := mz * nx - mx * nz; xz := mx * ny - my * nx;
    IF xx * xx + xy * xy + xz * xz = 0 THEN
        RETURN false;  -- the same great circle: overlapping arcs share vertices, which the callers test
    END IF;
    IF xx * (ax + bx) + xy * (ay + b_y) + xz * (az + bz) < 0 THEN
        xx := -xx; xy := -xy; xz := -xz;
    END IF;
    RETURN ((ay * xz - az * xy) * mx + (az * xx - ax * xz) * my + (ax * xy - ay * xx) * mz) >= 0
        AND ((xy * bz - xz * b_y) * mx + (xz * bx - xx * bz) * my + (xx * b_y - xy * bx) * mz) >= 0
        AND ((cy * xz - cz * xy) * nx + (cz * xx - cx * xz) * ny + (cx * xy - cy * xx) * nz) >= 0
        AND ((xy * dz - xz * d_y) * nx + (xz * dx - xx * dz) * ny + (xx * d_y - xy * dx) * nz) >= 0;
END;
$$;

CREATE OR REPLACE FUNCTION _dms_region_edge_distance(
    g double precision[], lon double precision, lat double precision)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    n integer := cardinality(g) / 2;
    j integer;
    px double precision := _dms_sc_x(lon, lat);
    py double precision := _dms_sc_y(lon, lat);
    pz double precision := _dms_sc_z(lat);
    best double precision := 'Infinity';
BEGIN
    FOR i IN 1 .. n LOOP
        j := i % n + 1;
        best := least(best, _dms_arc_distance(
            _dms_sc_x(g[2 * i - 1], g[2 * i]), _dms_sc_y(g[2 * i - 1], g[2 * i]), _dms_sc_z(g[2 * i]),
            _dms_sc_x(g[2 * j - 1], g[2 * j]), _dms_sc_y(g[2 * j - 1], g[2 * j]), _dms_sc_z(g[2 * j]),
            px, py, pz));
    END LOOP;
    RETURN degrees(best);
END;
$$;

CREATE OR REPLACE FUNCTION _dms_polygons_intersect(a double precision[], b double precision[])
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN EXISTS (SELECT 1 FROM generate_series(1, cardinality(a) / 2) AS i
        WHERE _dms_region_winds(b, a[2 * i - 1], a[2 * i]))
    OR EXISTS (SELECT 1 FROM generate_series(1, cardinality(b) / 2) AS i
        WHERE _dms_region_winds(a, b[2 * i - 1], b[2 * i]))
    OR EXISTS (SELECT 1 FROM generate_series(1, cardinality(a) / 2) AS i,
            generate_series(1, cardinality(b) / 2) AS j
        WHERE _dms_arcs_cross(
            _dms_sc_x(a[2 * i - 1], a[2 * i]), _dms_sc_y(a[2 * i - 1], a[2 * i]), _dms_sc_z(a[2 * i]),
            _dms_sc_x(a[2 * (i % (cardinality(a) / 2)) + 1], a[2 * (i % (cardinality(a) / 2)) + 2]),
            _dms_sc_y(a[2 * (i % (cardinality(a) / 2)) + 1], a[2 * (i % (cardinality(a) / 2)) + 2]),
            _dms_sc_z(a[2 * (i % (cardinality(a) / 2)) + 2]),
            _dms_sc_x(b[2 * j - 1], b[2 * j]), _dms_sc_y(b[2 * j - 1], b[2 * j]), _dms_sc_z(b[2 * j]),
            _dms_sc_x(b[2 * (j % (cardinality(b) / 2)) + 1], b[2 * (j % (cardinality(b) / 2)) + 2]),
            _dms_sc_y(b[2 * (j % (cardinality(b) / 2)) + 1], b[2 * (j % (cardinality(b) / 2)) + 2]),
            _dms_sc_z(b[2 * (j % (cardinality(b) / 2)) + 2])));

-- 'point', 'circle', 'polygon', or NULL for an array that is none of them
CREATE OR REPLACE FUNCTION _dms_region_kind(g double precision[])
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE
    WHEN cardinality(g) = 2 THEN 'point'
    WHEN cardinality(g) = 3 AND g[3] >= 0 AND g[3] <= 180 THEN 'circle'
    WHEN cardinality(g) >= 6 AND cardinality(g) % 2 = 0 THEN 'polygon'
END;

CREATE OR REPLACE FUNCTION adql_intersects(a double precision[], b double precision[])
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (CASE _dms_region_kind(a) || '-' || _dms_region_kind(b)
    WHEN 'point-point' THEN _dms_angsep(a[1], a[2], b[1], b[2]) = 0
    WHEN 'point-circle' THEN _dms_angsep(a[1], a[2], b[1], b[2]) <= b[3]
    WHEN 'circle-point' THEN _dms_angsep(a[1], a[2], b[1], b[2]) <= a[3]
    WHEN 'point-polygon' THEN _dms_region_winds(b, a[1], a[2])
    WHEN 'polygon-point' THEN _dms_region_winds(a, b[1], b[2])
    WHEN 'circle-circle' THEN _dms_angsep(a[1], a[2], b[1], b[2]) <= a[3] + b[3]
    WHEN 'circle-polygon' THEN _dms_region_winds(b, a[1], a[2]) OR _dms_region_edge_distance(b, a[1], a[2]) <= a[3]
    WHEN 'polygon-circle' THEN _dms_region_winds(a, b[1], b[2]) OR _dms_region_edge_distance(a, b[1], b[2]) <= b[3]
    WHEN 'polygon-polygon' THEN _dms_polygons_intersect(a, b)
END)::integer;
