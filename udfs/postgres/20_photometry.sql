-- scisql-compatible photometry (PostgreSQL).
--
-- What scisql has (smonkewitz/scisql src/photometry.h and src/udfs/*.c; release 0.3.11 added the
-- nanojansky functions used by Rubin/LSST catalogs). Constants from photometry.h:
--   C1 = 2.5 / ln(10) = 1.085736204758129569, C2 = ln(10) / 2.5 = 0.9210340371976182736,
--   F0 = 10^(-48.6 / 2.5) = 3.630780547701013425e-20 (AB zero point in erg/cm^2/s/Hz).
--   nanojanskyToAbMag(flux)                  -2.5 log10(flux) + 31.4            [flux in nJy]
--   nanojanskyToAbMagSigma(flux, fluxSigma)  C1 fluxSigma / flux
--   abMagToNanojansky(mag)                   10^(-0.4 (mag - 31.4))
--   abMagToNanojanskySigma(mag, magSigma)    magSigma abMagToNanojansky(mag) C2
--   fluxToAbMag(flux)                        -2.5 log10(flux) - 48.6            [erg/cm^2/s/Hz]
--   fluxToAbMagSigma(flux, fluxSigma)        C1 fluxSigma / flux
--   abMagToFlux(mag)                         10^(-0.4 (mag + 48.6))
--   abMagToFluxSigma(mag, magSigma)          magSigma abMagToFlux(mag) C2
--   dnToFlux(dn, fluxMag0)                   F0 dn / fluxMag0                   [raw counts]
--   dnToFluxSigma(dn, dnSigma, fluxMag0, fluxMag0Sigma)
--                                            F0 hypot(dn fluxMag0Sigma, dnSigma fluxMag0) / fluxMag0^2
--   dnToAbMag(dn, fluxMag0)                  fluxToAbMag(dnToFlux(dn, fluxMag0))
--   dnToAbMagSigma(dn, dnSigma, fluxMag0, fluxMag0Sigma)
--                                            fluxToAbMagSigma(dnToFlux(..), dnToFluxSigma(..))
--   fluxToDn(flux, fluxMag0)                 flux fluxMag0 / F0
--   fluxToDnSigma(flux, fluxSigma, fluxMag0, fluxMag0Sigma)
--                                            hypot(flux fluxMag0Sigma, fluxMag0 fluxSigma) / F0
--   abMagToDn(mag, fluxMag0)                 fluxToDn(abMagToFlux(mag), fluxMag0)
--   abMagToDnSigma(mag, magSigma, fluxMag0, fluxMag0Sigma)
--                                            fluxToDnSigma(f, magSigma f C2, fluxMag0, fluxMag0Sigma),
--                                            f = abMagToFlux(mag)
-- scisql's NULL rules: the nanojansky functions return NULL for a NULL, NaN or +/-Inf argument, for
-- flux <= 0, for a negative sigma and for a non-finite result; the older functions promise NULL for
-- NULL/NaN/Inf arguments (and fluxMag0 = 0) but compute whatever the C arithmetic gives otherwise.
-- There is no two-argument fluxToAbMag: the (counts, zero point) conversion is dnToAbMag.
--
-- DMS applies the nanojansky rules to all sixteen functions, the same way on both backends:
-- NULL when any argument is NULL, NaN or +/-Inf; when a flux or dn that is converted to a magnitude
-- is <= 0; when fluxMag0 <= 0; when any sigma argument is negative; and when a magnitude is so
-- extreme that 10^(-0.4 (mag - zero point)) would overflow or underflow double precision (exponent
-- outside [-307, 308]; catalogs' -9999 and 9999 sentinels land here). The formulas are evaluated
-- in scisql's order of operations, so results match scisql to the last bit where libm agrees.

CREATE OR REPLACE FUNCTION scisql_nanojanskyToAbMag(flux double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(flux) AND flux > 0 THEN '-2.5'::float8 * log10(flux) + '31.4'::float8
END;

CREATE OR REPLACE FUNCTION scisql_nanojanskyToAbMagSigma(flux double precision, flux_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_sigma) AND flux > 0 AND flux_sigma >= 0
        THEN '1.085736204758129569'::float8 * flux_sigma / flux
END;

CREATE OR REPLACE FUNCTION scisql_abMagToNanojansky(mag double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(mag) AND '-0.4'::float8 * (mag - '31.4'::float8) BETWEEN -307 AND 308
        THEN power('10'::float8, '-0.4'::float8 * (mag - '31.4'::float8))
END;

CREATE OR REPLACE FUNCTION scisql_abMagToNanojanskySigma(mag double precision, mag_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(mag_sigma) AND mag_sigma >= 0
        THEN mag_sigma * scisql_abMagToNanojansky(mag) * '0.9210340371976182736'::float8
END;

CREATE OR REPLACE FUNCTION scisql_fluxToAbMag(flux double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(flux) AND flux > 0 THEN '-2.5'::float8 * log10(flux) - '48.6'::float8
END;

CREATE OR REPLACE FUNCTION scisql_fluxToAbMagSigma(flux double precision, flux_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_sigma) AND flux > 0 AND flux_sigma >= 0
        THEN '1.085736204758129569'::float8 * flux_sigma / flux
END;

CREATE OR REPLACE FUNCTION scisql_abMagToFlux(mag double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(mag) AND '-0.4'::float8 * (mag + '48.6'::float8) BETWEEN -307 AND 308
        THEN power('10'::float8, '-0.4'::float8 * (mag + '48.6'::float8))
END;

CREATE OR REPLACE FUNCTION scisql_abMagToFluxSigma(mag double precision, mag_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(mag_sigma) AND mag_sigma >= 0
        THEN mag_sigma * scisql_abMagToFlux(mag) * '0.9210340371976182736'::float8
END;

CREATE OR REPLACE FUNCTION scisql_dnToFlux(dn double precision, flux_mag0 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(dn) AND _dms_finite(flux_mag0) AND flux_mag0 > 0
        THEN '3.630780547701013425e-20'::float8 * dn / flux_mag0
END;

CREATE OR REPLACE FUNCTION scisql_dnToFluxSigma(
    dn double precision, dn_sigma double precision,
    flux_mag0 double precision, flux_mag0_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(dn) AND _dms_finite(dn_sigma) AND _dms_finite(flux_mag0) AND _dms_finite(flux_mag0_sigma)
        AND flux_mag0 > 0 AND dn_sigma >= 0 AND flux_mag0_sigma >= 0
        THEN '3.630780547701013425e-20'::float8 * _dms_hypot(dn * flux_mag0_sigma, dn_sigma * flux_mag0)
            / (flux_mag0 * flux_mag0)
END;

CREATE OR REPLACE FUNCTION scisql_dnToAbMag(dn double precision, flux_mag0 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(dn) AND _dms_finite(flux_mag0) AND dn > 0 AND flux_mag0 > 0
        THEN '-2.5'::float8 * log10('3.630780547701013425e-20'::float8 * dn / flux_mag0) - '48.6'::float8
END;

CREATE OR REPLACE FUNCTION scisql_dnToAbMagSigma(
    dn double precision, dn_sigma double precision,
    flux_mag0 double precision, flux_mag0_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(dn) AND _dms_finite(dn_sigma) AND _dms_finite(flux_mag0) AND _dms_finite(flux_mag0_sigma)
        AND dn > 0 AND flux_mag0 > 0 AND dn_sigma >= 0 AND flux_mag0_sigma >= 0
        THEN '1.085736204758129569'::float8
            * ('3.630780547701013425e-20'::float8 * _dms_hypot(dn * flux_mag0_sigma, dn_sigma * flux_mag0)
                / (flux_mag0 * flux_mag0))
            / ('3.630780547701013425e-20'::float8 * dn / flux_mag0)
END;

CREATE OR REPLACE FUNCTION scisql_fluxToDn(flux double precision, flux_mag0 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_mag0) AND flux_mag0 > 0
        THEN flux * flux_mag0 / '3.630780547701013425e-20'::float8
END;

CREATE OR REPLACE FUNCTION scisql_fluxToDnSigma(
    flux double precision, flux_sigma double precision,
    flux_mag0 double precision, flux_mag0_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_sigma) AND _dms_finite(flux_mag0)
        AND _dms_finite(flux_mag0_sigma) AND flux_mag0 > 0 AND flux_sigma >= 0 AND flux_mag0_sigma >= 0
        THEN _dms_hypot(flux * flux_mag0_sigma, flux_mag0 * flux_sigma) / '3.630780547701013425e-20'::float8
END;

CREATE OR REPLACE FUNCTION scisql_abMagToDn(mag double precision, flux_mag0 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(mag) AND '-0.4'::float8 * (mag + '48.6'::float8) BETWEEN -307 AND 308
        AND _dms_finite(flux_mag0) AND flux_mag0 > 0
        THEN power('10'::float8, '-0.4'::float8 * (mag + '48.6'::float8)) * flux_mag0
            / '3.630780547701013425e-20'::float8
END;

CREATE OR REPLACE FUNCTION scisql_abMagToDnSigma(
    mag double precision, mag_sigma double precision,
    flux_mag0 double precision, flux_mag0_sigma double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN _dms_finite(mag) AND '-0.4'::float8 * (mag + '48.6'::float8) BETWEEN -307 AND 308
        AND _dms_finite(mag_sigma) AND _dms_finite(flux_mag0) AND _dms_finite(flux_mag0_sigma)
        AND mag_sigma >= 0 AND flux_mag0 > 0 AND flux_mag0_sigma >= 0
        THEN _dms_hypot(
            power('10'::float8, '-0.4'::float8 * (mag + '48.6'::float8)) * flux_mag0_sigma,
            flux_mag0 * (mag_sigma * power('10'::float8, '-0.4'::float8 * (mag + '48.6'::float8))
                * '0.9210340371976182736'::float8))
            / '3.630780547701013425e-20'::float8
END;
