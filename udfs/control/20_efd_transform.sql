-- The EFD transformation (PostgreSQL, control database only; installed by revision c0004).
--
-- Configured by dms.efd_transform_column, as Rubin's ConsDB transformed EFD is by its YAML: each output
-- summarises fields of one topic over each exposure's window [timespan_begin - start_offset, timespan_end]
-- (the exposure timespan is TAI, converted to UTC to meet the EFD's sample times; both ends included),
-- optionally over the samples whose subset_field equals subset_value only. Functions:
--   mean, stddev (sample standard deviation, NULL below two samples), min, max: over non-NULL values;
--   most_recent_value: the value of the latest sample in the window (ties: the highest sal_index);
--   rms_from_polynomial_fit: sqrt(mean(residual^2)) of the least-squares polynomial of order
--     function_args.order (default 4) in time; NULL unless more than `order` samples have a value.
-- A window without samples gives NULL. Values below ~1e-154 in magnitude can make PostgreSQL report
-- float underflow (it raises instead of rounding to 0, e.g. when squaring in stddev); telemetry never
-- comes near that. Results go to efd_lsstcam.exposure_efd / visit1_efd (one column
-- per output; a visit1 is the single-exposure visit with the exposure's id) and to their unpivoted forms
-- (one row per output and field). Rows are upserted: re-running is idempotent.
--
-- The heavy work is set-based SQL generated per group of outputs sharing a topic, subset and window, so
-- each sample table is scanned once per group however many outputs read it.

-- Least-squares polynomial coefficients (lowest power first) from the power sums of a fit:
-- s[k+1] = sum(x^k) for k = 0..2*order and ty[k+1] = sum(x^k * y) for k = 0..order (the normal
-- equations, a Hankel system), solved by Gaussian elimination with partial pivoting. NULL if singular.
CREATE OR REPLACE FUNCTION dms.efd_polyfit_solve(s double precision[], ty double precision[])
RETURNS double precision[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    n integer := array_length(ty, 1);
    m double precision[];
    v double precision[] := ty;
    x double precision[];
    i integer; j integer; k integer; p integer;
    f double precision;
    tmp double precision;
BEGIN
    IF n IS NULL OR array_length(s, 1) <> 2 * n - 1 THEN
        RAISE EXCEPTION 'efd_polyfit_solve needs 2n-1 power sums for n right-hand sides' USING ERRCODE = '22023';
    END IF;
    m := array_fill(0::double precision, ARRAY[n * n]);
    FOR i IN 1..n LOOP
        FOR j IN 1..n LOOP
            m[(i - 1) * n + j] := s[i + j - 1];
        END LOOP;
    END LOOP;
    FOR k IN 1..n LOOP
        p := k;
        FOR i IN k + 1..n LOOP
            IF abs(m[(i - 1) * n + k]) > abs(m[(p - 1) * n + k]) THEN
                p := i;
            END IF;
        END LOOP;
        IF m[(p - 1) * n + k] = 0 THEN
            RETURN NULL;
        END IF;
        IF p <> k THEN
            FOR j IN 1..n LOOP
                tmp := m[(k - 1) * n + j];
                m[(k - 1) * n + j] := m[(p - 1) * n + j];
                m[(p - 1) * n + j] := tmp;
            END LOOP;
            tmp := v[k]; v[k] := v[p]; v[p] := tmp;
        END IF;
        FOR i IN k + 1..n LOOP
            f := m[(i - 1) * n + k] / m[(k - 1) * n + k];
            FOR j IN k..n LOOP
                m[(i - 1) * n + j] := m[(i - 1) * n + j] - f * m[(k - 1) * n + j];
            END LOOP;
            v[i] := v[i] - f * v[k];
        END LOOP;
    END LOOP;
    x := array_fill(0::double precision, ARRAY[n]);
    FOR i IN REVERSE n..1 LOOP
        tmp := v[i];
        FOR j IN i + 1..n LOOP
            tmp := tmp - m[(i - 1) * n + j] * x[j];
        END LOOP;
        x[i] := tmp / m[(i - 1) * n + i];
    END LOOP;
    RETURN x;
END
$$;

-- The SQL type of a column of a topic's sample table; an error naming the topic and its fields if the
-- column does not exist.
CREATE OR REPLACE FUNCTION dms._efd_field_type(topic text, table_name text, field text, output text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    found_type text;
BEGIN
    SELECT format_type(a.atttypid, a.atttypmod) INTO found_type
    FROM pg_attribute a
    WHERE a.attrelid = format('efd.%I', table_name)::regclass AND a.attname = field
      AND a.attnum > 0 AND NOT a.attisdropped;
    IF found_type IS NULL THEN
        RAISE EXCEPTION 'EFD transform output %: topic % has no field %', output, topic, field
            USING ERRCODE = '42703',
                  HINT = 'fields of the topic: ' || (
                      SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
                      WHERE attrelid = format('efd.%I', table_name)::regclass AND attnum > 0
                        AND NOT attisdropped);
    END IF;
    RETURN found_type;
END
$$;

-- Summaries of one group of outputs (same topic, subset and start offset) for the exposures of
-- _efd_win, appended to _efd_out as (exposure_id, target_table, name, field, value).
CREATE OR REPLACE FUNCTION dms._efd_transform_group(
    topic text, table_name text, subset_field text, subset_value text, start_offset double precision
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    outputs record;
    cond text;
    aggs text[] := '{}';
    agg_keys text[] := '{}';
    agg_values text[] := '{}';
    mrv_cols text[] := '{}';
    mrv_keys text[] := '{}';
    mrv_values text[] := '{}';
    key text;
    alias text;
    ftype text;
BEGIN
    cond := format('t.sample_time >= w.t_begin - make_interval(secs => %L::float8) AND t.sample_time <= w.t_end',
                   start_offset);
    IF subset_field IS NOT NULL THEN
        ftype := dms._efd_field_type(topic, table_name, subset_field, 'subset of ' || topic);
        cond := cond || format(' AND t.%I = CAST(%L AS %s)', subset_field, subset_value, ftype);
    END IF;
    FOR outputs IN
        SELECT c.target_table, c.name, f.field, c.function,
               coalesce((c.function_args ->> 'order')::integer, 4) AS fit_order
        FROM dms.efd_transform_column c, jsonb_array_elements_text(c.fields) AS f(field)
        WHERE c.topic = _efd_transform_group.topic
          AND c.subset_field IS NOT DISTINCT FROM _efd_transform_group.subset_field
          AND c.subset_value IS NOT DISTINCT FROM _efd_transform_group.subset_value
          AND c.start_offset = _efd_transform_group.start_offset
        ORDER BY c.target_table, c.name, f.field
    LOOP
        ftype := dms._efd_field_type(topic, table_name, outputs.field, outputs.name);
        IF ftype NOT IN ('double precision', 'real', 'bigint', 'integer', 'smallint', 'boolean') THEN
            RAISE EXCEPTION 'EFD transform output %: field % of topic % is %, not a number',
                outputs.name, outputs.field, topic, ftype USING ERRCODE = '42804';
        END IF;
        IF outputs.function IN ('mean', 'stddev', 'min', 'max') THEN
            key := outputs.function || ':' || outputs.field;
            IF NOT key = ANY(agg_keys) THEN
                agg_keys := agg_keys || key;
                aggs := aggs || format('%s(t.%I::float8) AS a%s',
                    CASE outputs.function WHEN 'mean' THEN 'avg' WHEN 'stddev' THEN 'stddev_samp'
                         ELSE outputs.function END,
                    outputs.field, array_length(agg_keys, 1));
            END IF;
            alias := 'a.a' || array_position(agg_keys, key);
            agg_values := agg_values || format('(%L, %L, %L, %s)', outputs.target_table, outputs.name,
                                               outputs.field, alias);
        ELSIF outputs.function = 'most_recent_value' THEN
            IF NOT outputs.field = ANY(mrv_keys) THEN
                mrv_keys := mrv_keys || outputs.field;
                mrv_cols := mrv_cols || format('t.%I::float8 AS m%s', outputs.field, array_length(mrv_keys, 1));
            END IF;
            mrv_values := mrv_values || format('(%L, %L, %L, s.m%s)', outputs.target_table, outputs.name,
                                               outputs.field, array_position(mrv_keys, outputs.field));
        ELSE
            PERFORM dms._efd_rms_polyfit(table_name, cond, outputs.target_table, outputs.name,
                                         outputs.field, outputs.fit_order);
        END IF;
    END LOOP;
    IF array_length(aggs, 1) > 0 THEN
        EXECUTE format(
            'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
            'SELECT a.exposure_id, o.target_table, o.name, o.field, o.value FROM ('
            '  SELECT w.exposure_id, %s FROM _efd_win w LEFT JOIN efd.%I t ON %s GROUP BY w.exposure_id'
            ') a CROSS JOIN LATERAL (VALUES %s) AS o(target_table, name, field, value)',
            array_to_string(aggs, ', '), table_name, cond, array_to_string(agg_values, ', '));
    END IF;
    IF array_length(mrv_cols, 1) > 0 THEN
        EXECUTE format(
            'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
            'SELECT w.exposure_id, o.target_table, o.name, o.field, o.value FROM _efd_win w '
            'LEFT JOIN LATERAL (SELECT %s FROM efd.%I t WHERE %s '
            '  ORDER BY t.sample_time DESC, t.sal_index DESC LIMIT 1) s ON true '
            'CROSS JOIN LATERAL (VALUES %s) AS o(target_table, name, field, value)',
            array_to_string(mrv_cols, ', '), table_name, cond, array_to_string(mrv_values, ', '));
    END IF;
END
$$;

-- rms_from_polynomial_fit of one field for the exposures of _efd_win, in three set-based passes: the
-- time range of each window's samples (time is scaled to [-1, 1] over it, which keeps the normal
-- equations well conditioned), the power sums and their solution, then the residuals themselves (so
-- the RMS does not suffer the cancellation of sum(y^2) - fit).
CREATE OR REPLACE FUNCTION dms._efd_rms_polyfit(
    table_name text, cond text, target_table text, output text, field text, fit_order integer
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    x text := 'CASE WHEN r.span > 0 THEN 2 * (extract(epoch FROM t.sample_time)::float8 - r.t0) / r.span - 1 ELSE 0 END';
    power_sums text[] := '{}';
    moment_sums text[] := '{}';
    horner text := 'c.coef[' || (fit_order + 1) || ']';
    k integer;
BEGIN
    IF fit_order < 0 OR fit_order > 10 THEN
        RAISE EXCEPTION 'EFD transform output %: polynomial order % is not in 0..10', output, fit_order
            USING ERRCODE = '22023';
    END IF;
    FOR k IN 0..2 * fit_order LOOP
        power_sums := power_sums || format('sum(%s)', CASE WHEN k = 0 THEN '1::float8'
                                           ELSE repeat('s.x * ', k - 1) || 's.x' END);
    END LOOP;
    FOR k IN 0..fit_order LOOP
        moment_sums := moment_sums || format('sum(%ss.y)', repeat('s.x * ', k));
    END LOOP;
    FOR k IN REVERSE fit_order..1 LOOP
        horner := format('c.coef[%s] + s.x * (%s)', k, horner);
    END LOOP;
    DROP TABLE IF EXISTS _efd_fit;
    EXECUTE format(
        'CREATE TEMP TABLE _efd_fit ON COMMIT DROP AS '
        'SELECT w.exposure_id, extract(epoch FROM min(t.sample_time))::float8 AS t0, '
        '  extract(epoch FROM max(t.sample_time))::float8 - extract(epoch FROM min(t.sample_time))::float8 AS span, '
        '  count(*) AS n, NULL::float8[] AS coef '
        'FROM _efd_win w JOIN efd.%I t ON %s AND t.%I IS NOT NULL GROUP BY w.exposure_id HAVING count(*) > %s',
        table_name, cond, field, fit_order);
    EXECUTE format(
        'UPDATE _efd_fit f SET coef = p.coef FROM ('
        '  SELECT s.exposure_id, dms.efd_polyfit_solve(ARRAY[%s], ARRAY[%s]) AS coef FROM ('
        '    SELECT w.exposure_id, %s AS x, t.%I::float8 AS y FROM _efd_fit r JOIN _efd_win w USING (exposure_id) '
        '    JOIN efd.%I t ON %s AND t.%I IS NOT NULL) s GROUP BY s.exposure_id) p '
        'WHERE f.exposure_id = p.exposure_id',
        array_to_string(power_sums, ', '), array_to_string(moment_sums, ', '), x, field, table_name, cond, field);
    EXECUTE format(
        'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
        'SELECT s.exposure_id, %L, %L, %L, sqrt(avg((s.y - (%s)) * (s.y - (%s)))) FROM ('
        '  SELECT w.exposure_id, %s AS x, t.%I::float8 AS y FROM _efd_fit r JOIN _efd_win w USING (exposure_id) '
        '  JOIN efd.%I t ON %s AND t.%I IS NOT NULL WHERE r.coef IS NOT NULL) s '
        'JOIN _efd_fit c ON c.exposure_id = s.exposure_id GROUP BY s.exposure_id',
        target_table, output, field, horner, horner, x, field, table_name, cond, field);
END
$$;

-- Check that every pivoted output names a column of its target table (before any work is done).
CREATE OR REPLACE FUNCTION dms._efd_check_outputs()
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    bad record;
BEGIN
    FOR bad IN
        SELECT c.target_table, c.name, jsonb_array_length(c.fields) AS n_fields, a.attname IS NULL AS missing
        FROM dms.efd_transform_column c
        LEFT JOIN pg_attribute a ON a.attrelid = format('efd_lsstcam.%I', c.target_table)::regclass
            AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.target_table IN ('exposure_efd', 'visit1_efd')
          AND (a.attname IS NULL OR jsonb_array_length(c.fields) <> 1)
        ORDER BY 1, 2
    LOOP
        IF bad.missing THEN
            RAISE EXCEPTION 'EFD transform output %: efd_lsstcam.% has no column %', bad.name,
                bad.target_table, bad.name USING ERRCODE = '42703';
        END IF;
        RAISE EXCEPTION 'EFD transform output % of %: a pivoted output summarises exactly one field, not %',
            bad.name, bad.target_table, bad.n_fields USING ERRCODE = '22023';
    END LOOP;
END
$$;

-- Write _efd_out into the four efd_lsstcam tables for the exposures of _efd_win.
CREATE OR REPLACE FUNCTION dms._efd_write_outputs()
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    target text;
    key_column text;
    columns text[];
    selects text[];
    updates text[];
BEGIN
    FOREACH target IN ARRAY ARRAY['exposure_efd', 'visit1_efd'] LOOP
        key_column := CASE target WHEN 'exposure_efd' THEN 'exposure_id' ELSE 'visit_id' END;
        SELECT array_agg(format('%I', name) ORDER BY name),
               array_agg(format('max(o.value) FILTER (WHERE o.name = %L)', name) ORDER BY name),
               array_agg(format('%I = EXCLUDED.%I', name, name) ORDER BY name)
        INTO columns, selects, updates
        FROM dms.efd_transform_column WHERE target_table = target;
        IF columns IS NULL THEN
            CONTINUE;
        END IF;
        EXECUTE format(
            'INSERT INTO efd_lsstcam.%I (day_obs, seq_num, %I, %s) '
            'SELECT w.day_obs, w.seq_num, w.exposure_id, %s FROM _efd_win w '
            'LEFT JOIN _efd_out o ON o.exposure_id = w.exposure_id AND o.target_table = %L '
            'GROUP BY w.day_obs, w.seq_num, w.exposure_id '
            'ON CONFLICT (day_obs, seq_num) DO UPDATE SET %I = EXCLUDED.%I, %s',
            target, key_column, array_to_string(columns, ', '), array_to_string(selects, ', '), target,
            key_column, key_column, array_to_string(updates, ', '));
    END LOOP;
    FOREACH target IN ARRAY ARRAY['exposure_efd_unpivoted', 'visit1_efd_unpivoted'] LOOP
        key_column := CASE target WHEN 'exposure_efd_unpivoted' THEN 'exposure_id' ELSE 'visit_id' END;
        EXECUTE format(
            'INSERT INTO efd_lsstcam.%I (day_obs, seq_num, %I, property, field, value) '
            'SELECT w.day_obs, w.seq_num, w.exposure_id, c.name, c.field, o.value FROM _efd_win w '
            'CROSS JOIN (SELECT name, f.field FROM dms.efd_transform_column, '
            '            jsonb_array_elements_text(fields) AS f(field) WHERE target_table = %L) c '
            'LEFT JOIN _efd_out o ON o.exposure_id = w.exposure_id AND o.target_table = %L '
            '    AND o.name = c.name AND o.field = c.field '
            'ON CONFLICT (day_obs, seq_num, %I, property, field) DO UPDATE SET value = EXCLUDED.value',
            target, key_column, target, target, key_column);
    END LOOP;
END
$$;

-- Transform the given exposures of an instrument with every configured output; returns how many
-- exposures (those with a timespan) were written. Idempotent: outputs are upserted.
CREATE OR REPLACE FUNCTION dms.efd_transform(instrument text, exposure_ids bigint[], run_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    g record;
    exposures integer;
BEGIN
    PERFORM dms._efd_check_outputs();
    DROP TABLE IF EXISTS _efd_win;
    DROP TABLE IF EXISTS _efd_out;
    CREATE TEMP TABLE _efd_win ON COMMIT DROP AS
        SELECT e.id AS exposure_id, e.day_obs, e.seq_num,
               dms.efd_tai_to_utc(e.timespan_begin) AS t_begin, dms.efd_tai_to_utc(e.timespan_end) AS t_end
        FROM dms.exposure e
        WHERE e.instrument = efd_transform.instrument AND e.id = ANY(exposure_ids)
          AND e.timespan_begin IS NOT NULL AND e.timespan_end IS NOT NULL;
    CREATE TEMP TABLE _efd_out (
        exposure_id bigint, target_table text, name text, field text, value double precision
    ) ON COMMIT DROP;
    ANALYZE _efd_win;
    SELECT count(*) INTO exposures FROM _efd_win;
    IF exposures = 0 THEN
        RETURN 0;
    END IF;
    FOR g IN
        SELECT c.topic, tp.table_name, c.subset_field, c.subset_value, c.start_offset
        FROM dms.efd_transform_column c JOIN dms.efd_topic tp ON tp.name = c.topic
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 3, 4, 5
    LOOP
        IF g.table_name IS NULL THEN
            CONTINUE;  -- a registered topic without samples yet: its outputs stay NULL
        END IF;
        PERFORM dms._efd_transform_group(g.topic, g.table_name, g.subset_field, g.subset_value, g.start_offset);
    END LOOP;
    PERFORM dms._efd_write_outputs();
    IF run_id IS NOT NULL THEN
        INSERT INTO dms.efd_exposure_transform (instrument, exposure_id, run_id, transformed_at)
        SELECT efd_transform.instrument, w.exposure_id, efd_transform.run_id, now() FROM _efd_win w
        ON CONFLICT ON CONSTRAINT efd_exposure_transform_pkey
        DO UPDATE SET run_id = EXCLUDED.run_id, transformed_at = EXCLUDED.transformed_at;
    END IF;
    RETURN exposures;
END
$$;

-- One incremental run: transform the exposures of an instrument that were never transformed (only those
-- beginning at or after `since`, when given) and those whose window overlaps samples loaded since the
-- previous run (late telemetry). Returns the run id and the number of exposures transformed.
CREATE OR REPLACE FUNCTION dms.efd_transform_incremental(instrument text, since timestamp DEFAULT NULL)
RETURNS TABLE (run_id bigint, exposure_count integer)
LANGUAGE plpgsql
AS $$
DECLARE
    previous bigint;
    newest bigint;
    ids bigint[];
    new_run bigint;
BEGIN
    -- Loaders hold this lock (shared) until they commit: waiting for it here means every batch id up
    -- to `newest` is committed and visible, so no late batch is skipped by the watermark.
    PERFORM pg_advisory_xact_lock(hashtext('dms.efd_ingest'));
    SELECT coalesce(max(b.batch_id), 0) INTO newest FROM dms.efd_ingest_batch b;
    SELECT coalesce(max(r.last_batch_id), 0) INTO previous FROM dms.efd_transform_run r;
    SELECT array_agg(e.id ORDER BY e.id) INTO ids
    FROM dms.exposure e
    WHERE e.instrument = efd_transform_incremental.instrument
      AND e.timespan_begin IS NOT NULL AND e.timespan_end IS NOT NULL
      AND (
        (NOT EXISTS (SELECT 1 FROM dms.efd_exposure_transform x
                     WHERE x.instrument = e.instrument AND x.exposure_id = e.id)
         AND (since IS NULL OR e.timespan_begin >= since))
        OR EXISTS (
            SELECT 1 FROM dms.efd_ingest_batch b
            JOIN (SELECT topic, max(start_offset) AS start_offset FROM dms.efd_transform_column GROUP BY topic) c
              ON c.topic = b.topic
            WHERE b.batch_id > previous AND b.batch_id <= newest
              AND b.min_sample_time <= dms.efd_tai_to_utc(e.timespan_end)
              AND b.max_sample_time >= dms.efd_tai_to_utc(e.timespan_begin) - make_interval(secs => c.start_offset)));
    INSERT INTO dms.efd_transform_run (last_batch_id, exposure_count)
    VALUES (newest, coalesce(array_length(ids, 1), 0)) RETURNING efd_transform_run.run_id INTO new_run;
    run_id := new_run;
    exposure_count := 0;
    IF ids IS NOT NULL THEN
        exposure_count := dms.efd_transform(instrument, ids, new_run);
        UPDATE dms.efd_transform_run r SET exposure_count = efd_transform_incremental.exposure_count
        WHERE r.run_id = new_run;
    END IF;
    RETURN NEXT;
END
$$;
