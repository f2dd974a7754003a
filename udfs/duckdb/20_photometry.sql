-- scisql-compatible photometry (DuckDB).
--
-- Mirrors udfs/postgres/20_photometry.sql, whose header lists scisql's sixteen photometric
-- functions (smonkewitz/scisql src/photometry.h, src/udfs/*.c), their formulas and the NULL rules
-- DMS applies to all of them: NULL for a NULL, NaN or +/-Inf argument, a non-positive flux (or dn)
-- converted to a magnitude, fluxMag0 <= 0, a negative sigma, or a magnitude whose flux would
-- overflow or underflow double precision.

CREATE OR REPLACE MACRO scisql_nanojanskyToAbMag(flux DOUBLE) AS
CASE
    WHEN _dms_finite(flux) AND flux > 0 THEN '-2.5'::DOUBLE * log10(flux) + '31.4'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_nanojanskyToAbMagSigma(flux DOUBLE, flux_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_sigma) AND flux > 0 AND flux_sigma >= 0
        THEN '1.085736204758129569'::DOUBLE * flux_sigma / flux
END;

CREATE OR REPLACE MACRO scisql_abMagToNanojansky(mag DOUBLE) AS
CASE
    WHEN _dms_finite(mag) AND '-0.4'::DOUBLE * (mag - '31.4'::DOUBLE) BETWEEN -307 AND 308
        THEN power('10'::DOUBLE, '-0.4'::DOUBLE * (mag - '31.4'::DOUBLE))
END;

CREATE OR REPLACE MACRO scisql_abMagToNanojanskySigma(mag DOUBLE, mag_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(mag_sigma) AND mag_sigma >= 0
        THEN mag_sigma * scisql_abMagToNanojansky(mag) * '0.9210340371976182736'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_fluxToAbMag(flux DOUBLE) AS
CASE
    WHEN _dms_finite(flux) AND flux > 0 THEN '-2.5'::DOUBLE * log10(flux) - '48.6'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_fluxToAbMagSigma(flux DOUBLE, flux_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_sigma) AND flux > 0 AND flux_sigma >= 0
        THEN '1.085736204758129569'::DOUBLE * flux_sigma / flux
END;

CREATE OR REPLACE MACRO scisql_abMagToFlux(mag DOUBLE) AS
CASE
    WHEN _dms_finite(mag) AND '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE) BETWEEN -307 AND 308
        THEN power('10'::DOUBLE, '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE))
END;

CREATE OR REPLACE MACRO scisql_abMagToFluxSigma(mag DOUBLE, mag_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(mag_sigma) AND mag_sigma >= 0
        THEN mag_sigma * scisql_abMagToFlux(mag) * '0.9210340371976182736'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_dnToFlux(dn DOUBLE, flux_mag0 DOUBLE) AS
CASE
    WHEN _dms_finite(dn) AND _dms_finite(flux_mag0) AND flux_mag0 > 0
        THEN '3.630780547701013425e-20'::DOUBLE * dn / flux_mag0
END;

CREATE OR REPLACE MACRO scisql_dnToFluxSigma(
    dn DOUBLE, dn_sigma DOUBLE,
    flux_mag0 DOUBLE, flux_mag0_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(dn) AND _dms_finite(dn_sigma) AND _dms_finite(flux_mag0) AND _dms_finite(flux_mag0_sigma)
        AND flux_mag0 > 0 AND dn_sigma >= 0 AND flux_mag0_sigma >= 0
        THEN '3.630780547701013425e-20'::DOUBLE * _dms_hypot(dn * flux_mag0_sigma, dn_sigma * flux_mag0)
            / (flux_mag0 * flux_mag0)
END;

CREATE OR REPLACE MACRO scisql_dnToAbMag(dn DOUBLE, flux_mag0 DOUBLE) AS
CASE
    WHEN _dms_finite(dn) AND _dms_finite(flux_mag0) AND dn > 0 AND flux_mag0 > 0
        THEN '-2.5'::DOUBLE * log10('3.630780547701013425e-20'::DOUBLE * dn / flux_mag0) - '48.6'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_dnToAbMagSigma(
    dn DOUBLE, dn_sigma DOUBLE,
    flux_mag0 DOUBLE, flux_mag0_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(dn) AND _dms_finite(dn_sigma) AND _dms_finite(flux_mag0) AND _dms_finite(flux_mag0_sigma)
        AND dn > 0 AND flux_mag0 > 0 AND dn_sigma >= 0 AND flux_mag0_sigma >= 0
        THEN '1.085736204758129569'::DOUBLE
            * ('3.630780547701013425e-20'::DOUBLE * _dms_hypot(dn * flux_mag0_sigma, dn_sigma * flux_mag0)
                / (flux_mag0 * flux_mag0))
            / ('3.630780547701013425e-20'::DOUBLE * dn / flux_mag0)
END;

CREATE OR REPLACE MACRO scisql_fluxToDn(flux DOUBLE, flux_mag0 DOUBLE) AS
CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_mag0) AND flux_mag0 > 0
        THEN flux * flux_mag0 / '3.630780547701013425e-20'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_fluxToDnSigma(
    flux DOUBLE, flux_sigma DOUBLE,
    flux_mag0 DOUBLE, flux_mag0_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(flux) AND _dms_finite(flux_sigma) AND _dms_finite(flux_mag0)
        AND _dms_finite(flux_mag0_sigma) AND flux_mag0 > 0 AND flux_sigma >= 0 AND flux_mag0_sigma >= 0
        THEN _dms_hypot(flux * flux_mag0_sigma, flux_mag0 * flux_sigma) / '3.630780547701013425e-20'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_abMagToDn(mag DOUBLE, flux_mag0 DOUBLE) AS
CASE
    WHEN _dms_finite(mag) AND '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE) BETWEEN -307 AND 308
        AND _dms_finite(flux_mag0) AND flux_mag0 > 0
        THEN power('10'::DOUBLE, '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE)) * flux_mag0
            / '3.630780547701013425e-20'::DOUBLE
END;

CREATE OR REPLACE MACRO scisql_abMagToDnSigma(
    mag DOUBLE, mag_sigma DOUBLE,
    flux_mag0 DOUBLE, flux_mag0_sigma DOUBLE) AS
CASE
    WHEN _dms_finite(mag) AND '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE) BETWEEN -307 AND 308
        AND _dms_finite(mag_sigma) AND _dms_finite(flux_mag0) AND _dms_finite(flux_mag0_sigma)
        AND mag_sigma >= 0 AND flux_mag0 > 0 AND flux_mag0_sigma >= 0
        THEN _dms_hypot(
            power('10'::DOUBLE, '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE)) * flux_mag0_sigma,
            flux_mag0 * (mag_sigma * power('10'::DOUBLE, '-0.4'::DOUBLE * (mag + '48.6'::DOUBLE))
                * '0.9210340371976182736'::DOUBLE))
            / '3.630780547701013425e-20'::DOUBLE
END;
