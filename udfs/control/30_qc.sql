-- Quality control in the database (PostgreSQL, control database only; installed by revision c0004).
--
-- Every measurement inserted into dms.qc_measurement is evaluated, in the inserting transaction, against
-- the active thresholds of its metric whose applies_to its data_id contains (Rubin verify-spec style:
-- the measurement passes when "value operator threshold" holds, after converting the value into the
-- threshold's unit). A failure raises an alarm for the threshold and the measurement's series
-- (dms.qc_series), or counts as a repeat while that alarm is open; a pass clears the open alarm.
-- A NaN measurement is its own outcome, a data-quality alarm: it never passes (so it never clears an
-- alarm, whatever the operator; PostgreSQL would order NaN above every number), and it raises or repeats
-- the threshold's alarm with a message saying the value is not a number.
-- A value converted from another unit that lies within 1e-12 (relative) of the threshold is taken as
-- equal to it: unit factors carry rounding (9 mas is 0.009000000000000001 arcsec), no measurement is
-- that precise, and so a value exactly at a limit given in another unit is not an alarm.
-- Measurements and alarm changes are appended to dms.gateway_event and announced with
-- NOTIFY dms_gateway, for the Telemetry Gateway.

-- The series a measurement belongs to: what it is about apart from its place on the time axis.
CREATE OR REPLACE FUNCTION dms.qc_series(instrument text, detector integer, production text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_strip_nulls(jsonb_build_object('instrument', instrument, 'detector', detector,
                                            'production', production));

-- A value in unit `from_unit` expressed in `to_unit`, from the factors registered in dms.qc_unit; an error
-- naming the units when one is not registered or they measure different things.
CREATE OR REPLACE FUNCTION dms.qc_convert(value double precision, from_unit text, to_unit text)
RETURNS double precision
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    a dms.qc_unit%ROWTYPE;
    b dms.qc_unit%ROWTYPE;
BEGIN
    IF from_unit = to_unit THEN
        RETURN value;
    END IF;
    SELECT * INTO a FROM dms.qc_unit WHERE unit = from_unit;
    SELECT * INTO b FROM dms.qc_unit WHERE unit = to_unit;
    IF a.unit IS NULL OR b.unit IS NULL THEN
        RAISE EXCEPTION 'unit % is not registered in dms.qc_unit', quote_literal(CASE WHEN a.unit IS NULL THEN from_unit ELSE to_unit END)
            USING ERRCODE = '22023', HINT = 'register it with `dms qc unit add UNIT` (astropy unit syntax)';
    END IF;
    IF a.dimension <> b.dimension THEN
        RAISE EXCEPTION 'unit % (%) cannot be converted to % (%)', quote_literal(from_unit), a.dimension,
            quote_literal(to_unit), b.dimension USING ERRCODE = '22023';
    END IF;
    RETURN value * (a.scale / b.scale);
END
$$;

-- Whether "value operator threshold" holds (the verify-spec test a measurement must pass); NULL for a
-- NaN value or threshold, which no operator can compare (PostgreSQL's NaN > every number is not physics).
CREATE OR REPLACE FUNCTION dms.qc_passes(value double precision, operator text, threshold double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN value = 'NaN'::float8 OR threshold = 'NaN'::float8 THEN NULL ELSE CASE operator
    WHEN '<' THEN value < threshold WHEN '<=' THEN value <= threshold
    WHEN '>' THEN value > threshold WHEN '>=' THEN value >= threshold
    WHEN '==' THEN value = threshold WHEN '!=' THEN value <> threshold END END;

-- A value converted into the threshold's unit, snapped onto the threshold when it lies within 1e-12
-- (relative) of it: conversion factors round (9 mas -> 0.009000000000000001 arcsec), measurements are
-- never that precise. Values in the threshold's own unit are compared exactly.
CREATE OR REPLACE FUNCTION dms.qc_value_for_threshold(value double precision, from_unit text,
                                                      threshold double precision, to_unit text)
RETURNS double precision
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    converted double precision := dms.qc_convert(value, from_unit, to_unit);
BEGIN
    IF from_unit IS DISTINCT FROM to_unit AND converted <> 'NaN'::float8
       AND abs(converted - threshold) <= 1e-12 * greatest(abs(converted), abs(threshold)) THEN
        RETURN threshold;
    END IF;
    RETURN converted;
END
$$;

-- Append an event to the gateway stream and wake the gateways. The transaction-level advisory lock makes
-- events commit in event_id order, so a subscriber resuming "after id N" never misses one.
CREATE OR REPLACE FUNCTION dms.gateway_emit(kind text, payload jsonb)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('dms.gateway_event'));
    INSERT INTO dms.gateway_event (kind, payload) VALUES (kind, payload) RETURNING event_id INTO id;
    PERFORM pg_notify('dms_gateway', id::text);
    RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION dms.qc_alarm_json(alarm dms.qc_alarm, t dms.qc_threshold)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN jsonb_build_object(
    'alarm_id', alarm.alarm_id, 'threshold_id', alarm.threshold_id, 'threshold', t.name,
    'metric', t.metric, 'level', t.level, 'severity', alarm.severity, 'state', alarm.state,
    'message', alarm.message, 'data_id', alarm.data_id, 'series', alarm.series,
    'measurement_id', alarm.measurement_id, 'last_measurement_id', alarm.last_measurement_id,
    'occurrences', alarm.occurrences, 'raised_at', alarm.raised_at, 'cleared_at', alarm.cleared_at);

-- Evaluate one new measurement against its metric's thresholds (AFTER INSERT trigger on qc_measurement).
CREATE OR REPLACE FUNCTION dms.qc_evaluate_measurement()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    metric_unit text;
    t dms.qc_threshold%ROWTYPE;
    alarm dms.qc_alarm%ROWTYPE;
    m_series jsonb := dms.qc_series(NEW.instrument, NEW.detector, NEW.production);
    value_in_threshold_unit double precision;
BEGIN
    SELECT unit INTO metric_unit FROM dms.qc_metric WHERE name = NEW.metric;
    -- The measurement's unit must measure the metric's quantity (raises otherwise).
    PERFORM dms.qc_convert(NEW.value, NEW.unit, metric_unit);
    PERFORM dms.gateway_emit('qc_measurement', to_jsonb(NEW));
    FOR t IN
        SELECT * FROM dms.qc_threshold
        WHERE metric = NEW.metric AND active AND NEW.data_id @> applies_to
        ORDER BY threshold_id
    LOOP
        value_in_threshold_unit := dms.qc_value_for_threshold(NEW.value, NEW.unit, t.value, t.unit);
        SELECT * INTO alarm FROM dms.qc_alarm a
        WHERE a.threshold_id = t.threshold_id AND a.series = m_series
          AND a.state <> 'cleared'
        FOR UPDATE;
        -- NULL (a NaN value) is not a pass: a data-quality alarm, raised or repeated, never a clearing.
        IF NOT coalesce(dms.qc_passes(value_in_threshold_unit, t.operator, t.value), false) THEN
            IF alarm.alarm_id IS NULL THEN
                INSERT INTO dms.qc_alarm (threshold_id, measurement_id, severity, message, data_id, series,
                                          last_measurement_id)
                VALUES (t.threshold_id, NEW.measurement_id, t.severity,
                        CASE WHEN NEW.value = 'NaN'::float8 THEN
                            format('%s is NaN (not a number): data quality, %s requires %s %s %s cannot be '
                                   'checked', NEW.metric, t.level, t.operator, t.value, t.unit)
                        ELSE format('%s = %s %s, %s requires %s %s %s', NEW.metric, NEW.value, NEW.unit,
                                    t.level, t.operator, t.value, t.unit) END,
                        NEW.data_id, m_series, NEW.measurement_id)
                RETURNING * INTO alarm;
                PERFORM dms.gateway_emit('qc_alarm_raised', dms.qc_alarm_json(alarm, t));
            ELSE
                UPDATE dms.qc_alarm SET occurrences = occurrences + 1, last_measurement_id = NEW.measurement_id
                WHERE alarm_id = alarm.alarm_id RETURNING * INTO alarm;
                PERFORM dms.gateway_emit('qc_alarm_repeated', dms.qc_alarm_json(alarm, t));
            END IF;
        ELSIF alarm.alarm_id IS NOT NULL THEN
            UPDATE dms.qc_alarm SET state = 'cleared', cleared_at = greatest(now(), raised_at),
                                    cleared_by_measurement_id = NEW.measurement_id
            WHERE alarm_id = alarm.alarm_id RETURNING * INTO alarm;
            PERFORM dms.gateway_emit('qc_alarm_cleared', dms.qc_alarm_json(alarm, t));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
