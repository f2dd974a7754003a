-- IVOA ivo_healpix_index(order, ra, dec) (PostgreSQL): the nested HEALPix index of a position,
-- bit for bit equal to healpy.ang2pix(2**order, ra, dec, nest=True, lonlat=True).
--
-- This transcribes what healpy does, operation by operation, in IEEE double precision:
--   healpy (pixelfunc.lonlat2thetaphi): theta = pi/2 - radians(dec), phi = radians(ra), where
--     numpy's radians(x) is x * (pi/180);
--   healpix_cxx T_Healpix_Base<int64>::ang2pix(pointing): if theta < 0.01 or theta > 3.14159-0.01,
--     loc2pix(cos(theta), phi, sin(theta), true), else loc2pix(cos(theta), phi, 0, false);
--   loc2pix (NEST scheme) with tt = fmodulo(phi * inv_halfpi, 4), za = |z|:
--     equatorial (za <= 2/3): temp1 = nside (0.5 + tt), temp2 = nside (0.75 z),
--       jp = int(temp1 - temp2), jm = int(temp1 + temp2), ifp = jp >> order, ifm = jm >> order,
--       face = ifp == ifm ? ifp | 4 : (ifp < ifm ? ifp : ifm + 8),
--       ix = jm & (nside - 1), iy = nside - (jp & (nside - 1)) - 1;
--     polar: ntt = min(3, int(tt)), tp = tt - ntt,
--       tmp = (za < 0.99 or not have_sth) ? nside sqrt(3 (1 - za)) : nside sth / sqrt((1 + za) / 3),
--       jp = min(int(tp tmp), nside - 1), jm = min(int((1 - tp) tmp), nside - 1),
--       z >= 0 ? xyf2nest(nside - jm - 1, nside - jp - 1, ntt) : xyf2nest(jp, jm, ntt + 8);
--   xyf2nest(ix, iy, face) = (face << 2 order) + spread_bits(ix) + (spread_bits(iy) << 1), where
--     spread_bits interleaves zero bits using the 256-entry table utab, one byte at a time.
-- Notes on the transcription: C++ int() truncates and every truncated value here is >= 0, so it is
-- floor() (a float8 -> bigint cast rounds, so floor() comes first); fmodulo(v, 4) is v for
-- 0 <= v < 4, otherwise fmod(v, 4) (+ 4 for negative v, with 4 mapped to 0), and fmod(v, 4) equals
-- v - 4 floor(v / 4) exactly for doubles; constants are parsed from the same decimal strings the
-- C++ source uses.
--
-- Semantics (identical on DuckDB): NULL if any argument is NULL or ra or dec is NaN or +/-Inf;
-- an error (SQLSTATE 22023) if order is not in 0..29; an error (SQLSTATE 22003) if dec is outside
-- [-90, 90]. Any finite ra is accepted (healpy reduces it modulo 360 degrees).

CREATE OR REPLACE FUNCTION _dms_hpx_utab()
RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY[
    0, 1, 4, 5, 16, 17, 20, 21, 64, 65, 68, 69,
    80, 81, 84, 85, 256, 257, 260, 261, 272, 273, 276, 277,
    320, 321, 324, 325, 336, 337, 340, 341, 1024, 1025, 1028, 1029,
    1040, 1041, 1044, 1045, 1088, 1089, 1092, 1093, 1104, 1105, 1108, 1109,
    1280, 1281, 1284, 1285, 1296, 1297, 1300, 1301, 1344, 1345, 1348, 1349,
    1360, 1361, 1364, 1365, 4096, 4097, 4100, 4101, 4112, 4113, 4116, 4117,
    4160, 4161, 4164, 4165, 4176, 4177, 4180, 4181, 4352, 4353, 4356, 4357,
    4368, 4369, 4372, 4373, 4416, 4417, 4420, 4421, 4432, 4433, 4436, 4437,
    5120, 5121, 5124, 5125, 5136, 5137, 5140, 5141, 5184, 5185, 5188, 5189,
    5200, 5201, 5204, 5205, 5376, 5377, 5380, 5381, 5392, 5393, 5396, 5397,
    5440, 5441, 5444, 5445, 5456, 5457, 5460, 5461, 16384, 16385, 16388, 16389,
    16400, 16401, 16404, 16405, 16448, 16449, 16452, 16453, 16464, 16465, 16468, 16469,
    16640, 16641, 16644, 16645, 16656, 16657, 16660, 16661, 16704, 16705, 16708, 16709,
    16720, 16721, 16724, 16725, 17408, 17409, 17412, 17413, 17424, 17425, 17428, 17429,
    17472, 17473, 17476, 17477, 17488, 17489, 17492, 17493, 17664, 17665, 17668, 17669,
    17680, 17681, 17684, 17685, 17728, 17729, 17732, 17733, 17744, 17745, 17748, 17749,
    20480, 20481, 20484, 20485, 20496, 20497, 20500, 20501, 20544, 20545, 20548, 20549,
    20560, 20561, 20564, 20565, 20736, 20737, 20740, 20741, 20752, 20753, 20756, 20757,
    20800, 20801, 20804, 20805, 20816, 20817, 20820, 20821, 21504, 21505, 21508, 21509,
    21520, 21521, 21524, 21525, 21568, 21569, 21572, 21573, 21584, 21585, 21588, 21589,
    21760, 21761, 21764, 21765, 21776, 21777, 21780, 21781, 21824, 21825, 21828, 21829,
    21840, 21841, 21844, 21845
]::bigint[];

-- Interleaves a zero bit above each bit of v (0 <= v < 2^29), as healpix_cxx spread_bits<int64>.
CREATE OR REPLACE FUNCTION _dms_hpx_spread_bits(v bigint)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (_dms_hpx_utab())[(v & 255) + 1]
    | ((_dms_hpx_utab())[((v >> 8) & 255) + 1] << 16)
    | ((_dms_hpx_utab())[((v >> 16) & 255) + 1] << 32)
    | ((_dms_hpx_utab())[((v >> 24) & 255) + 1] << 48);

CREATE OR REPLACE FUNCTION _dms_hpx_xyf2nest(hpx_order integer, ix bigint, iy bigint, face bigint)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (face << (2 * hpx_order)) + _dms_hpx_spread_bits(ix) + (_dms_hpx_spread_bits(iy) << 1);

CREATE OR REPLACE FUNCTION _dms_hpx_fmodulo4(v double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN v >= 0 AND v < 4 THEN v
    WHEN v >= 0 THEN v - 4 * floor(v / 4)
    WHEN v - 4 * floor(v / 4) = 4 THEN '0'::float8
    ELSE v - 4 * floor(v / 4)
END;

-- loc2pix and the pointing-dependent choices of ang2pix, for a colatitude theta and a longitude phi
-- in radians. PL/pgSQL because the algorithm reuses its intermediate values many times: as inlinable
-- SQL it would expand into several hundred duplicated operators per row, and as nested
-- non-inlined SQL functions PostgreSQL would re-plan the inner functions on every call. This
-- function costs about 1 microsecond per row; the SQL helpers it calls are inlined into it.
CREATE OR REPLACE FUNCTION _dms_hpx_ang2pix(hpx_order integer, theta double precision, phi double precision)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    nside constant bigint := 1::bigint << hpx_order;
    z constant double precision := cos(theta);
    za constant double precision := abs(z);
    tt constant double precision := _dms_hpx_fmodulo4(phi * '0.6366197723675813430755350534900574'::float8);
    temp1 double precision;
    temp2 double precision;
    tp double precision;
    tmp double precision;
    ntt bigint;
    jp bigint;
    jm bigint;
    ifp bigint;
    ifm bigint;
BEGIN
    IF za <= '2'::float8 / '3'::float8 THEN  -- equatorial region
        temp1 := nside::float8 * ('0.5'::float8 + tt);
        temp2 := nside::float8 * (z * '0.75'::float8);
        jp := floor(temp1 - temp2)::bigint;  -- index of the ascending edge line
        jm := floor(temp1 + temp2)::bigint;  -- index of the descending edge line
        ifp := jp >> hpx_order;
        ifm := jm >> hpx_order;
        RETURN _dms_hpx_xyf2nest(
            hpx_order, jm & (nside - 1), nside - (jp & (nside - 1)) - 1,
            CASE WHEN ifp = ifm THEN ifp | 4 WHEN ifp < ifm THEN ifp ELSE ifm + 8 END);
    END IF;
    -- polar caps
    ntt := least(3, floor(tt))::bigint;
    tp := tt - ntt::float8;
    IF za < '0.99'::float8 OR NOT (theta < '0.01'::float8 OR theta > '3.14159'::float8 - '0.01'::float8) THEN
        tmp := nside::float8 * sqrt('3'::float8 * ('1'::float8 - za));
    ELSE  -- healpix_cxx's have_sth branch: sin(theta) is more accurate than 1 - |z| near the poles
        tmp := nside::float8 * sin(theta) / sqrt(('1'::float8 + za) / '3'::float8);
    END IF;
    jp := least(floor(tp * tmp), (nside - 1)::float8)::bigint;
    jm := least(floor(('1'::float8 - tp) * tmp), (nside - 1)::float8)::bigint;
    IF z >= 0 THEN
        RETURN _dms_hpx_xyf2nest(hpx_order, nside - jm - 1, nside - jp - 1, ntt);
    END IF;
    RETURN _dms_hpx_xyf2nest(hpx_order, jp, jm, ntt + 8);
END
$$;

CREATE OR REPLACE FUNCTION ivo_healpix_index(
    hpx_order integer, point_ra double precision, point_dec double precision)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN (hpx_order IS NOT NULL AND _dms_finite(point_ra) AND _dms_finite(point_dec)) IS NOT TRUE THEN NULL
    WHEN hpx_order < 0 OR hpx_order > 29 THEN _dms_raise(
        'ivo_healpix_index: order must be an integer from 0 to 29, got ' || hpx_order::text, '22023')
    WHEN point_dec < -90 OR point_dec > 90 THEN _dms_raise(
        'ivo_healpix_index: dec must be within [-90, 90] degrees, got ' || point_dec::text, '22003')
    ELSE _dms_hpx_ang2pix(
        hpx_order,
        '1.5707963267948966'::float8 - point_dec * '0.017453292519943295'::float8,
        point_ra * '0.017453292519943295'::float8)
END;
