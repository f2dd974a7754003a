-- The EFD transformation (PostgreSQL, control database only; installed by revisions c0004 and c0010).
--
-- Configured by dms.efd_transform_column, as Rubin's ConsDB transformed EFD is by its YAML (and with
-- ConsDB's meanings): each output summarises fields of one topic over each exposure's window
-- [timespan_begin + start_offset hours, timespan_end] (the exposure timespan is TAI, converted to UTC to
-- meet the EFD's sample times; both ends included), optionally over the samples whose subset_field
-- equals subset_value (or one of a JSON array of values) only. A sample counts for an output when every
-- field of the output has a value (not NULL, not NaN: ConsDB drops such rows); booleans count as 1/0.
-- Functions:
--   mean, stddev (sample, ddof 1; NULL below two values), min, max: over the values of the output's
--     fields (all of them together for a pivoted column of several fields, as ConsDB flattens them);
--     function_args.pre_aggregate_interval (seconds) first summarises 1970-aligned bins the same way;
--   most_recent_value: the value of the latest counted sample (ties: the highest sal_index);
--   rms_from_polynomial_fit: sqrt(mean(residual^2)) of the least-squares polynomial of degree
--     function_args.degree (default 1) on the sample index (fit_basis index, the default) or on time;
--     NULL unless more than `degree` samples count.
-- A window without samples gives NULL. Values below ~1e-154 in magnitude can make PostgreSQL report
-- float underflow (it raises instead of rounding to 0, e.g. when squaring in stddev); telemetry never
-- comes near that. Results go to efd_lsstcam.exposure_efd / visit1_efd (one column
-- per output; a visit1 is the single-exposure visit with the exposure's id) and to their unpivoted forms
-- (one row per output and field). Rows are upserted: re-running is idempotent.
--
-- The heavy work is set-based SQL generated per group of outputs sharing a topic, subset and window, so
-- each sample table is scanned once per group for its single-field means, deviations and extrema.

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

-- The value of a field of a sample (alias t) as float8: booleans count as 1 and 0, as ConsDB's
-- numpy conversion makes them (so a boolean's mean is the fraction of true samples).
CREATE OR REPLACE FUNCTION dms._efd_value_expr(topic text, table_name text, field text, output text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    ftype text := dms._efd_field_type(topic, table_name, field, output);
BEGIN
    IF ftype = 'boolean' THEN
        RETURN format('t.%I::integer::float8', field);
    ELSIF ftype IN ('double precision', 'real', 'bigint', 'integer', 'smallint') THEN
        RETURN format('t.%I::float8', field);
    END IF;
    RAISE EXCEPTION 'EFD transform output %: field % of topic % is %, not a number or boolean',
        output, field, topic, ftype USING ERRCODE = '42804';
END
$$;

-- Summaries of one group of outputs (same topic, subset and start offset) for the exposures of
-- _efd_win, appended to _efd_out as (exposure_id, target_table, name, field, value). As ConsDB does, a
-- sample counts for an output only when every field of the output has a value (not NULL, not NaN).
CREATE OR REPLACE FUNCTION dms._efd_transform_group(
    topic text, table_name text, subset_field text, subset_value text, start_offset double precision
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    o record;
    cond text;
    rowok text;
    exprs text[];
    aggs text[] := '{}';
    agg_keys text[] := '{}';
    agg_values text[] := '{}';
    key text;
    ftype text;
    agg text;
    i integer;
    interval_s double precision;
    wbegin text := format('w.t_begin + make_interval(secs => %L::float8 * 3600)', start_offset);
    subcond text := 'true';
BEGIN
    IF subset_field IS NOT NULL THEN
        ftype := dms._efd_field_type(topic, table_name, subset_field, 'subset of ' || topic);
        IF left(subset_value, 1) = '[' THEN  -- any of a JSON array of values
            subcond := format('t.%I IN (%s)', subset_field, (
                SELECT string_agg(format('CAST(%L AS %s)', v, ftype), ', ')
                FROM jsonb_array_elements_text(subset_value::jsonb) AS v));
        ELSE
            subcond := format('t.%I = CAST(%L AS %s)', subset_field, subset_value, ftype);
        END IF;
    END IF;
    cond := format('t.sample_time >= %s AND t.sample_time <= w.t_end AND %s', wbegin, subcond);
    FOR o IN
        SELECT c.target_table, c.name, c.function, c.function_args,
               ARRAY(SELECT jsonb_array_elements_text(c.fields)) AS fields,
               c.target_table LIKE '%_unpivoted' AS unpivoted
        FROM dms.efd_transform_column c
        WHERE c.topic = _efd_transform_group.topic
          AND c.subset_field IS NOT DISTINCT FROM _efd_transform_group.subset_field
          AND c.subset_value IS NOT DISTINCT FROM _efd_transform_group.subset_value
          AND c.start_offset = _efd_transform_group.start_offset
        ORDER BY c.target_table, c.name
    LOOP
        exprs := ARRAY(SELECT dms._efd_value_expr(topic, table_name, f, o.name) FROM unnest(o.fields) AS f);
        rowok := (SELECT string_agg(format('(%s) IS NOT NULL AND (%s) <> ''NaN''::float8', e, e), ' AND ')
                  FROM unnest(exprs) AS e);
        agg := CASE o.function WHEN 'mean' THEN 'avg' WHEN 'stddev' THEN 'stddev_samp' ELSE o.function END;
        interval_s := (o.function_args ->> 'pre_aggregate_interval')::float8;
        IF o.function = 'most_recent_value' THEN
            PERFORM dms._efd_most_recent(table_name, cond, rowok, o.target_table, o.name, o.fields, exprs,
                                         o.unpivoted);
        ELSIF o.function = 'rms_from_polynomial_fit' THEN
            IF NOT o.unpivoted AND array_length(o.fields, 1) > 1 THEN
                RAISE EXCEPTION 'EFD transform output %: rms_from_polynomial_fit of a pivoted column fits '
                    'one field, not %', o.name, array_length(o.fields, 1) USING ERRCODE = '22023';
            END IF;
            FOR i IN 1..array_length(o.fields, 1) LOOP
                PERFORM dms._efd_rms_polyfit(table_name, cond, rowok, o.target_table, o.name, o.fields[i],
                    exprs[i], coalesce((o.function_args ->> 'degree')::integer, 1),
                    coalesce(o.function_args ->> 'fit_basis', 'index'));
            END LOOP;
        ELSIF interval_s IS NOT NULL THEN  -- bins starting in the window, with all their samples
            PERFORM dms._efd_summarise_values(table_name,
                format('t.sample_time >= %s AND t.sample_time < w.t_end + make_interval(secs => %L::float8) '
                       'AND %s', wbegin, interval_s, subcond),
                rowok, o.target_table, o.name, o.fields, exprs, agg, o.unpivoted, interval_s,
                format('b.bin >= %s AND b.bin <= w.t_end', wbegin));
        ELSIF NOT o.unpivoted AND array_length(o.fields, 1) > 1 THEN
            PERFORM dms._efd_summarise_values(table_name, cond, rowok, o.target_table, o.name, o.fields,
                                              exprs, agg, o.unpivoted, NULL, NULL);
        ELSE  -- one scan of the sample table for every such summary of the group
            FOR i IN 1..array_length(o.fields, 1) LOOP
                key := agg || ':' || exprs[i] || ':' || rowok;
                IF NOT key = ANY(agg_keys) THEN
                    agg_keys := agg_keys || key;
                    aggs := aggs || format('%s(%s) FILTER (WHERE %s) AS a%s', agg, exprs[i], rowok,
                                           array_length(agg_keys, 1));
                END IF;
                agg_values := agg_values || format('(%L, %L, %L, a.a%s)', o.target_table, o.name, o.fields[i],
                                                   array_position(agg_keys, key));
            END LOOP;
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
END
$$;

-- most_recent_value: the values of the latest sample of the window (ties: the highest sal_index) among
-- those where every field of the output has a value; a pivoted column takes its first field (ConsDB's
-- last row, first column).
CREATE OR REPLACE FUNCTION dms._efd_most_recent(
    table_name text, cond text, rowok text, target_table text, output text, fields text[], exprs text[],
    unpivoted boolean
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    n integer := CASE WHEN unpivoted THEN array_length(fields, 1) ELSE 1 END;
BEGIN
    EXECUTE format(
        'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
        'SELECT w.exposure_id, %L, %L, o.field, o.value FROM _efd_win w '
        'JOIN LATERAL (SELECT ARRAY[%s] AS v FROM efd.%I t WHERE %s AND %s '
        '  ORDER BY t.sample_time DESC, t.sal_index DESC LIMIT 1) s ON true '
        'CROSS JOIN LATERAL unnest(%L::text[], s.v) AS o(field, value)',
        target_table, output, array_to_string(exprs[1:n], ', '), table_name, cond, rowok, fields[1:n]);
END
$$;

-- mean, stddev, min or max over the values of several fields together (a pivoted column of several
-- fields: ConsDB flattens them), or per field after a pre-aggregation into bins of `interval_s` seconds
-- aligned on 1970 (ConsDB's pre_aggregate_interval, InfluxDB's GROUP BY time(): the summary of the
-- summaries of the bins whose start is in the window, `bin_cond`, each over all its samples).
CREATE OR REPLACE FUNCTION dms._efd_summarise_values(
    table_name text, cond text, rowok text, target_table text, output text, fields text[], exprs text[],
    agg text, unpivoted boolean, interval_s double precision, bin_cond text
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    pairs text := (SELECT string_agg(format('(%L, %s)', CASE WHEN unpivoted THEN f ELSE fields[1] END, e), ', ')
                   FROM unnest(fields, exprs) AS u(f, e));
    source text := format('FROM _efd_win w JOIN efd.%I t ON %s AND %s CROSS JOIN LATERAL (VALUES %s) '
                          'AS v(field, x)', table_name, cond, rowok, pairs);
BEGIN
    IF interval_s IS NULL THEN
        EXECUTE format(
            'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
            'SELECT w.exposure_id, %L, %L, v.field, %s(v.x) %s GROUP BY w.exposure_id, v.field',
            target_table, output, agg, source);
    ELSE
        EXECUTE format(
            'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
            'SELECT b.exposure_id, %L, %L, b.field, %s(b.x) FROM ('
            '  SELECT w.exposure_id, v.field, date_bin(make_interval(secs => %L::float8), t.sample_time, '
            '    %L::timestamptz) AS bin, %s(v.x) AS x %s GROUP BY 1, 2, 3) b '
            'JOIN _efd_win w ON w.exposure_id = b.exposure_id WHERE %s GROUP BY b.exposure_id, b.field',
            target_table, output, agg, interval_s, '1970-01-01 00:00:00+00', agg, source, bin_cond);
    END IF;
END
$$;

-- rms_from_polynomial_fit of one field for the exposures of _efd_win, as ConsDB computes it:
-- sqrt(mean(residual^2)) of the least-squares polynomial of `degree` fitted to the window's values
-- against the sample index 0..n-1 (fit_basis index, ConsDB's default) or time (fit_basis time); NULL
-- unless more than `degree` samples count. The abscissa is scaled to [-1, 1] (an affine change, which
-- leaves the residuals as they are and keeps the normal equations well conditioned); the residuals are
-- computed themselves (no cancellation of sum(y^2) - fit).
CREATE OR REPLACE FUNCTION dms._efd_rms_polyfit(
    table_name text, cond text, rowok text, target_table text, output text, field text, yexpr text,
    degree integer, fit_basis text
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    power_sums text[] := '{}';
    moment_sums text[] := '{}';
    horner text := 'c.coef[' || (degree + 1) || ']';
    x0 text;
    k integer;
BEGIN
    IF degree < 0 OR degree > 10 THEN
        RAISE EXCEPTION 'EFD transform output %: polynomial degree % is not in 0..10', output, degree
            USING ERRCODE = '22023';
    END IF;
    x0 := CASE fit_basis
        WHEN 'index' THEN 'row_number() OVER (PARTITION BY w.exposure_id ORDER BY t.sample_time, t.sal_index)::float8'
        WHEN 'time' THEN 'extract(epoch FROM t.sample_time)::float8' END;
    IF x0 IS NULL THEN
        RAISE EXCEPTION 'EFD transform output %: fit_basis % is not index or time', output, fit_basis
            USING ERRCODE = '22023';
    END IF;
    FOR k IN 0..2 * degree LOOP
        power_sums := power_sums || format('sum(%s)', CASE WHEN k = 0 THEN '1::float8'
                                           ELSE repeat('s.x * ', k - 1) || 's.x' END);
    END LOOP;
    FOR k IN 0..degree LOOP
        moment_sums := moment_sums || format('sum(%ss.y)', repeat('s.x * ', k));
    END LOOP;
    FOR k IN REVERSE degree..1 LOOP
        horner := format('c.coef[%s] + s.x * (%s)', k, horner);
    END LOOP;
    DROP TABLE IF EXISTS _efd_pts;
    DROP TABLE IF EXISTS _efd_fit;
    EXECUTE format(
        'CREATE TEMP TABLE _efd_pts ON COMMIT DROP AS '
        'SELECT exposure_id, y, CASE WHEN hi > lo THEN 2 * (x0 - lo) / (hi - lo) - 1 ELSE 0 END AS x FROM ('
        '  SELECT exposure_id, y, x0, min(x0) OVER p AS lo, max(x0) OVER p AS hi, count(*) OVER p AS n FROM ('
        '    SELECT w.exposure_id, %s AS y, %s AS x0 FROM _efd_win w JOIN efd.%I t ON %s AND %s) s0'
        '  WINDOW p AS (PARTITION BY exposure_id)) s1 WHERE n > %s',
        yexpr, x0, table_name, cond, rowok, degree);
    EXECUTE format(
        'CREATE TEMP TABLE _efd_fit ON COMMIT DROP AS '
        'SELECT s.exposure_id, dms.efd_polyfit_solve(ARRAY[%s], ARRAY[%s]) AS coef FROM _efd_pts s '
        'GROUP BY s.exposure_id',
        array_to_string(power_sums, ', '), array_to_string(moment_sums, ', '));
    EXECUTE format(
        'INSERT INTO _efd_out (exposure_id, target_table, name, field, value) '
        'SELECT s.exposure_id, %L, %L, %L, sqrt(avg((s.y - (%s)) * (s.y - (%s)))) '
        'FROM _efd_pts s JOIN _efd_fit c ON c.exposure_id = s.exposure_id WHERE c.coef IS NOT NULL '
        'GROUP BY s.exposure_id',
        target_table, output, field, horner, horner);
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
        SELECT c.target_table, c.name
        FROM dms.efd_transform_column c
        LEFT JOIN pg_attribute a ON a.attrelid = format('efd_lsstcam.%I', c.target_table)::regclass
            AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.target_table IN ('exposure_efd', 'visit1_efd') AND a.attname IS NULL
        ORDER BY 1, 2
    LOOP
        RAISE EXCEPTION 'EFD transform output %: efd_lsstcam.% has no column %', bad.name,
            bad.target_table, bad.name USING ERRCODE = '42703';
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
-- beginning at or after `since`, when given), those whose window overlaps samples newly stored since
-- the previous run (late telemetry; a reload that stored nothing new changes nothing), and, when an
-- output is pending (configured or changed since) or `recompute` is asked, every exposure transformed
-- before. Returns the run id and the number of exposures transformed.
DROP FUNCTION IF EXISTS dms.efd_transform_incremental(text, timestamp);
CREATE OR REPLACE FUNCTION dms.efd_transform_incremental(
    instrument text, since timestamp DEFAULT NULL, recompute boolean DEFAULT false
)
RETURNS TABLE (run_id bigint, exposure_count integer)
LANGUAGE plpgsql
AS $$
DECLARE
    previous bigint;
    newest bigint;
    ids bigint[];
    new_run bigint;
    redo boolean;
BEGIN
    -- Loaders hold this lock (shared) until they commit: waiting for it here means every batch id up
    -- to `newest` is committed and visible, so no late batch is skipped by the watermark.
    PERFORM pg_advisory_xact_lock(hashtext('dms.efd_ingest'));
    SELECT coalesce(max(b.batch_id), 0) INTO newest FROM dms.efd_ingest_batch b;
    SELECT coalesce(max(r.last_batch_id), 0) INTO previous FROM dms.efd_transform_run r;
    redo := recompute OR EXISTS (SELECT 1 FROM dms.efd_transform_column c WHERE c.pending);
    SELECT array_agg(e.id ORDER BY e.id) INTO ids
    FROM dms.exposure e
    WHERE e.instrument = efd_transform_incremental.instrument
      AND e.timespan_begin IS NOT NULL AND e.timespan_end IS NOT NULL
      AND (
        (NOT EXISTS (SELECT 1 FROM dms.efd_exposure_transform x
                     WHERE x.instrument = e.instrument AND x.exposure_id = e.id)
         AND (since IS NULL OR e.timespan_begin >= since))
        OR (redo AND EXISTS (SELECT 1 FROM dms.efd_exposure_transform x
                             WHERE x.instrument = e.instrument AND x.exposure_id = e.id))
        OR EXISTS (
            SELECT 1 FROM dms.efd_ingest_batch b
            JOIN (SELECT topic, least(min(start_offset), 0) AS start_offset FROM dms.efd_transform_column
                  GROUP BY topic) c ON c.topic = b.topic
            WHERE b.batch_id > previous AND b.batch_id <= newest AND b.inserted_count > 0
              AND b.min_sample_time <= dms.efd_tai_to_utc(e.timespan_end)
              AND b.max_sample_time >= dms.efd_tai_to_utc(e.timespan_begin)
                                       + make_interval(secs => c.start_offset * 3600)));
    INSERT INTO dms.efd_transform_run (last_batch_id, exposure_count)
    VALUES (newest, coalesce(array_length(ids, 1), 0)) RETURNING efd_transform_run.run_id INTO new_run;
    run_id := new_run;
    exposure_count := 0;
    IF ids IS NOT NULL THEN
        exposure_count := dms.efd_transform(instrument, ids, new_run);
        UPDATE dms.efd_transform_run r SET exposure_count = efd_transform_incremental.exposure_count
        WHERE r.run_id = new_run;
    END IF;
    UPDATE dms.efd_transform_column c SET pending = false WHERE c.pending;
    RETURN NEXT;
END
$$;
