-- Issue 14: rebuild the dashboard rollups without downtime.
--
-- dash_rollup_rebuild() (V005) starts with TRUNCATE: for its whole run (313 s at 10 M events) every
-- dashboard query and the ETL's insert trigger wait for its ACCESS EXCLUSIVE lock. These two rebuild
-- one UTC day per transaction instead, with DELETE + INSERT: readers keep seeing the previous cells
-- of that day until it commits (MVCC, no lock they wait for), and the ETL's loads go on (its
-- trigger only appends to dash_pending). Only the ETL's end-of-run refresh waits, for one day at
-- most, because both take the refresh's advisory lock.
--
-- Exactly once: the day's events are copied aside first (one snapshot); their ids still queued in
-- dash_pending are removed in the same transaction, so the next refresh does not count them again,
-- while events committed after the snapshot stay queued for it. Funnel sketches of other days that
-- the day's sessions reach are merged again, which leaves them unchanged (hll_union is idempotent).
-- The aggregation is dash_rollup_statements(), the one the refresh and the full rebuild use.

-- Recompute the cells of the UTC days overlapping [t0, t1) in the caller's transaction; returns the
-- number of events folded in. Owner only.
CREATE FUNCTION public.dash_rollup_rebuild_period(t0 timestamptz, t1 timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    first_day timestamptz := public.dash_day_floor(t0);
    end_day timestamptz := public.dash_day_ceil(t1);
    stmt text;
    taken bigint;
BEGIN
    IF t0 IS NULL OR t1 IS NULL OR t1 <= t0 THEN
        RAISE EXCEPTION 'dash_rollup_rebuild_period: need t0 < t1 (got % and %)', t0, t1;
    END IF;
    PERFORM pg_advisory_xact_lock(1530731121);

    DROP TABLE IF EXISTS pg_temp.dash_batch;
    CREATE TEMP TABLE dash_batch ON COMMIT DROP AS
        SELECT *
        FROM public.clickstream_events
        WHERE event_timestamp >= first_day AND event_timestamp < end_day;
    GET DIAGNOSTICS taken = ROW_COUNT;

    DELETE FROM public.dash_pending
    WHERE event_id IN (SELECT event_id FROM pg_temp.dash_batch);

    DELETE FROM public.dash_hourly WHERE bucket >= first_day AND bucket < end_day;
    DELETE FROM public.dash_daily WHERE bucket >= first_day AND bucket < end_day;
    DELETE FROM public.dash_product_hourly WHERE bucket >= first_day AND bucket < end_day;
    DELETE FROM public.dash_product_daily WHERE bucket >= first_day AND bucket < end_day;

    IF taken > 0 THEN
        ANALYZE pg_temp.dash_batch;
        FOREACH stmt IN ARRAY public.dash_rollup_statements('pg_temp.dash_batch') LOOP
            EXECUTE stmt;
        END LOOP;
    END IF;
    DROP TABLE pg_temp.dash_batch;
    RETURN taken;
END
$fn$;

-- Rebuild [t0, t1) (default: every day that has events or cells) one UTC day per transaction:
--   CALL public.dash_rollup_rebuild_by_day();
--   CALL public.dash_rollup_rebuild_by_day('2026-11-01', '2026-12-01');
-- A procedure, so it can COMMIT after each day; call it outside a transaction block. Owner only.
-- (No SET clause: PostgreSQL forbids transaction control in a procedure that has one.)
CREATE PROCEDURE public.dash_rollup_rebuild_by_day(t0 timestamptz DEFAULT NULL, t1 timestamptz DEFAULT NULL)
LANGUAGE plpgsql AS $fn$
DECLARE
    day timestamptz;
    last_day timestamptz;
BEGIN
    day := public.dash_day_floor(coalesce(
        t0,
        least(
            (SELECT min(event_timestamp) FROM public.clickstream_events),
            (SELECT min(bucket) FROM public.dash_hourly)
        )
    ));
    last_day := coalesce(
        t1,
        greatest(
            (SELECT max(event_timestamp) FROM public.clickstream_events),
            (SELECT max(bucket) FROM public.dash_hourly)
        ) + interval '1 microsecond'
    );
    WHILE day IS NOT NULL AND day < last_day LOOP
        PERFORM public.dash_rollup_rebuild_period(day, day + interval '24 hours');
        COMMIT;
        day := day + interval '24 hours';
    END LOOP;
END
$fn$;

REVOKE ALL ON FUNCTION public.dash_rollup_rebuild_period(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE public.dash_rollup_rebuild_by_day(timestamptz, timestamptz) FROM PUBLIC;
