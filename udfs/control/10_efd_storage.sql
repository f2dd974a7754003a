-- EFD telemetry storage in the control database (PostgreSQL only; installed by revision c0004).
--
-- Every registered topic has a typed sample table efd.<table_name> (one column per field of the topic),
-- range-partitioned by sample_time into UTC days: efd.<table_name>_YYYYMMDD. Partitions are created on
-- demand by the loader (dms.efd_ensure_partitions) and dropped by the retention policy
-- (dms.efd_apply_retention). The functions here are PL/pgSQL so that installing them needs no table.

-- TAI - UTC in seconds at a UTC instant (IERS Bulletin C leap seconds since 1972). Exposure timespans are
-- TAI; EFD sample times are UTC. Before 1972 UTC had rubber seconds, which DMS does not model: error.
CREATE OR REPLACE FUNCTION dms.efd_tai_minus_utc(tai timestamp)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    -- (first UTC day the offset applies, TAI - UTC from that day)
    steps CONSTANT text[] := ARRAY[
        '2017-01-01:37', '2015-07-01:36', '2012-07-01:35', '2009-01-01:34', '2006-01-01:33',
        '1999-01-01:32', '1997-07-01:31', '1996-01-01:30', '1994-07-01:29', '1993-07-01:28',
        '1992-07-01:27', '1991-01-01:26', '1990-01-01:25', '1988-01-01:24', '1985-07-01:23',
        '1983-07-01:22', '1982-07-01:21', '1981-07-01:20', '1980-01-01:19', '1979-01-01:18',
        '1978-01-01:17', '1977-01-01:16', '1976-01-01:15', '1975-01-01:14', '1974-01-01:13',
        '1973-01-01:12', '1972-07-01:11', '1972-01-01:10'];
    step text;
    offset_s double precision;
BEGIN
    IF tai IS NULL THEN
        RETURN NULL;
    END IF;
    FOREACH step IN ARRAY steps LOOP
        offset_s := split_part(step, ':', 2)::double precision;
        -- The step applies from midnight UTC, which is midnight + offset in TAI.
        IF tai >= split_part(step, ':', 1)::timestamp + make_interval(secs => offset_s) THEN
            RETURN offset_s;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'TAI time % is before 1972, when UTC had no fixed offset from TAI', tai
        USING ERRCODE = '22008';
END
$$;

-- A TAI timestamp (exposure timespans) as the UTC instant it names (EFD sample times).
CREATE OR REPLACE FUNCTION dms.efd_tai_to_utc(tai timestamp)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (tai - make_interval(secs => dms.efd_tai_minus_utc(tai))) AT TIME ZONE 'UTC';

-- Create the daily partitions of efd.<table_name> covering [first, last] (UTC), if missing.
-- Serialised per table by an advisory lock so that concurrent loaders do not race on CREATE.
CREATE OR REPLACE FUNCTION dms.efd_ensure_partitions(table_name text, first timestamptz, last timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    day date;
    created integer := 0;
    part text;
BEGIN
    IF first IS NULL OR last IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('dms.efd_partition:' || table_name));
    day := (first AT TIME ZONE 'UTC')::date;
    WHILE day <= (last AT TIME ZONE 'UTC')::date LOOP
        part := table_name || '_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(format('efd.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE efd.%I PARTITION OF efd.%I FOR VALUES FROM (%L) TO (%L)',
                part, table_name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the partitions holding only samples older than their topic's retention_days before `now`
-- (a partition goes when its whole UTC day is older). Returns the partitions dropped.
CREATE OR REPLACE FUNCTION dms.efd_apply_retention(now timestamptz DEFAULT now())
RETURNS TABLE (topic text, partition_name text)
LANGUAGE plpgsql
AS $$
DECLARE
    t record;
    p record;
BEGIN
    FOR t IN
        SELECT name, efd_topic.table_name, retention_days FROM dms.efd_topic
        WHERE retention_days IS NOT NULL AND efd_topic.table_name IS NOT NULL ORDER BY name
    LOOP
        FOR p IN
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('efd.%I', t.table_name)::regclass
              AND c.relname ~ '_[0-9]{8}$'
              AND (to_date(right(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
                  <= now - make_interval(days => t.retention_days)
            ORDER BY c.relname
        LOOP
            EXECUTE format('DROP TABLE efd.%I', p.relname);
            topic := t.name;
            partition_name := p.relname;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
