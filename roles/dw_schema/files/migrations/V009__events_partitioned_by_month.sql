-- Issue 14 (data lifecycle): clickstream_events partitioned by month, retention by dropping months.
--
-- Partition key = event_id itself. A partitioned table's unique keys must contain the partition
-- key, and exactly-once is "one row per event_id" (DESIGN.md 7, 13): partitioning by event_timestamp
-- would force the key to (event_id, event_timestamp), and a re-sent event whose timestamp differed
-- would load twice. Event ids are UUIDv7 made by the tracker (or ingest) when the event happens and
-- kept across retries: their top 48 bits are that millisecond, so "the month of an id" never changes
-- and a range partition per month, bounded by the lowest UUID of the month, holds exactly that
-- month's ids. The primary key stays (event_id), still the only unique constraint, so the ETL's
-- INSERT ... ON CONFLICT DO NOTHING skips exactly the duplicate ids, whichever partition they are in.
-- Ids without a time (the seed function's UUIDv4, the uuid5 derived for its events) land in the
-- DEFAULT partition, as does any id of a month without a partition yet (nothing ever fails to load).
--
-- This migration rewrites the table once (copy into the partitioned table, then swap names): on an
-- existing warehouse it takes about as long as a COPY of the events and blocks loads meanwhile.

CREATE FUNCTION public.dw_uuid_month_floor(month date) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- The lowest UUID whose 48-bit millisecond prefix is the first instant of `month` (UTC).
RETURN (lpad(to_hex((extract(epoch FROM date_trunc('month', month)::timestamp) * 1000)::bigint), 12, '0')
        || '00000000000000000000')::uuid;

CREATE FUNCTION public.dw_uuid_time(id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- The millisecond a UUIDv7 carries (meaningless for other versions).
RETURN to_timestamp((('x' || left(replace(id::text, '-', ''), 12))::bit(48)::bigint) / 1000.0);

ALTER TABLE public.clickstream_events RENAME TO clickstream_events_v008;
ALTER INDEX public.clickstream_events_pkey RENAME TO clickstream_events_v008_pkey;
ALTER INDEX public.clickstream_events_ts_idx RENAME TO clickstream_events_v008_ts_idx;
ALTER INDEX public.clickstream_events_name_ts_idx RENAME TO clickstream_events_v008_name_ts_idx;
ALTER INDEX public.clickstream_events_category_ts_idx RENAME TO clickstream_events_v008_category_ts_idx;
ALTER INDEX public.clickstream_events_product_ts_idx RENAME TO clickstream_events_v008_product_ts_idx;
ALTER INDEX public.clickstream_events_session_ts_idx RENAME TO clickstream_events_v008_session_ts_idx;

CREATE TABLE public.clickstream_events (
    LIKE public.clickstream_events_v008 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    PRIMARY KEY (event_id)
) PARTITION BY RANGE (event_id);
CREATE TABLE public.clickstream_events_default PARTITION OF public.clickstream_events DEFAULT;
COMMENT ON TABLE public.clickstream_events IS
    'Clickstream events, loaded exactly once by SBW_Lamda_ETL (primary key event_id), one partition per '
    'month of the UUIDv7 event id (V009).';

-- One month's partition (no-op when it exists). Rows of that month that went to the DEFAULT
-- partition meanwhile are moved into it, straight into the partition so that the rollup trigger
-- (on the parent) does not queue them a second time.
CREATE FUNCTION public.dw_create_month_partition(month date) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
DECLARE
    first_id uuid := public.dw_uuid_month_floor(month);
    end_id uuid := public.dw_uuid_month_floor((date_trunc('month', month) + interval '1 month')::date);
    partition_name text := 'clickstream_events_' || to_char(month, 'YYYY_MM');
BEGIN
    IF to_regclass('public.' || partition_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    DROP TABLE IF EXISTS pg_temp.dw_moved;
    CREATE TEMP TABLE dw_moved ON COMMIT DROP AS
        SELECT * FROM public.clickstream_events_default WHERE event_id >= first_id AND event_id < end_id;
    DELETE FROM public.clickstream_events_default WHERE event_id >= first_id AND event_id < end_id;
    EXECUTE format(
        'CREATE TABLE public.%I PARTITION OF public.clickstream_events FOR VALUES FROM (%L) TO (%L)',
        partition_name, first_id, end_id
    );
    EXECUTE format('INSERT INTO public.%I SELECT * FROM pg_temp.dw_moved', partition_name);
    DROP TABLE pg_temp.dw_moved;
    RETURN true;
END
$fn$;

-- Partitions for every month that has UUIDv7 events, this month and two ahead.
DO $$
DECLARE
    month date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', public.dw_uuid_time(event_id) AT TIME ZONE 'UTC')::date
        FROM public.clickstream_events_v008
        WHERE substr(event_id::text, 15, 1) = '7'
          AND public.dw_uuid_time(event_id) BETWEEN '2000-01-01' AND now() + interval '1 year'
        UNION
        SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => n))::date
        FROM generate_series(0, 2) AS n
    LOOP
        PERFORM public.dw_create_month_partition(month);
    END LOOP;
END
$$;

INSERT INTO public.clickstream_events SELECT * FROM public.clickstream_events_v008;
DROP TABLE public.clickstream_events_v008;  -- with its trigger and indexes

CREATE INDEX clickstream_events_ts_idx ON public.clickstream_events (event_timestamp);
CREATE INDEX clickstream_events_name_ts_idx ON public.clickstream_events (event_name, event_timestamp);
CREATE INDEX clickstream_events_category_ts_idx
    ON public.clickstream_events (context_product_category, event_timestamp)
    WHERE context_product_category IS NOT NULL;
CREATE INDEX clickstream_events_product_ts_idx
    ON public.clickstream_events (context_product_id, event_timestamp)
    WHERE context_product_id IS NOT NULL;
CREATE INDEX clickstream_events_session_ts_idx ON public.clickstream_events (session_id, event_timestamp);

CREATE TRIGGER dash_rollup
    AFTER INSERT ON public.clickstream_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.dash_rollup();

REVOKE ALL ON public.clickstream_events FROM PUBLIC;
GRANT INSERT ON public.clickstream_events TO clickstream_writer;
GRANT SELECT ON public.clickstream_events TO clickstream_reader;

-- The lifecycle settings, set by the dw_schema role (dw_schema_retention_months): NULL keeps
-- everything. One row. The ETL's role may read them, not change them.
CREATE TABLE public.dw_lifecycle (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    retention_months integer CHECK (retention_months IS NULL OR retention_months >= 1),
    months_ahead integer NOT NULL DEFAULT 2 CHECK (months_ahead BETWEEN 1 AND 24),
    last_maintained_at timestamptz
);
INSERT INTO public.dw_lifecycle DEFAULT VALUES;
REVOKE ALL ON public.dw_lifecycle FROM PUBLIC;
GRANT SELECT ON public.dw_lifecycle TO clickstream_writer, clickstream_reader;

-- Called by SBW_Lamda_ETL at the start of each run (cheap when there is nothing to do): creates
-- the coming months' partitions, and, with a retention set, drops the partitions of the months
-- before the cutoff (the first day of the month retention_months before this one), deletes the
-- DEFAULT partition's rows and the rollup cells before it. The cutoff comes from dw_lifecycle, not
-- from the caller: the writer can trigger the maintenance but never choose what it deletes.
-- Returns what it did, as JSON (the run summary's "lifecycle").
CREATE FUNCTION public.dw_maintain_partitions() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    settings public.dw_lifecycle;
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    cutoff date;
    created text[] := ARRAY[]::text[];
    dropped text[] := ARRAY[]::text[];
    part record;
    n integer;
BEGIN
    -- One maintainer at a time (the refresh's lock: rollups are touched too).
    PERFORM pg_advisory_xact_lock(1530731121);
    SELECT * INTO settings FROM public.dw_lifecycle;
    FOR n IN 0 .. settings.months_ahead LOOP
        IF public.dw_create_month_partition((this_month + make_interval(months => n))::date) THEN
            created := created || to_char(this_month + make_interval(months => n), 'YYYY-MM');
        END IF;
    END LOOP;
    IF settings.retention_months IS NOT NULL THEN
        cutoff := (this_month - make_interval(months => settings.retention_months))::date;
        FOR part IN
            SELECT c.relname
            FROM pg_inherits AS i
            JOIN pg_class AS c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'public.clickstream_events'::regclass
              AND c.relname ~ '^clickstream_events_[0-9]{4}_[0-9]{2}$'
              AND to_date(right(c.relname, 7), 'YYYY_MM') < cutoff
        LOOP
            EXECUTE format('DROP TABLE public.%I', part.relname);
            dropped := dropped || part.relname;
        END LOOP;
        DELETE FROM public.clickstream_events_default WHERE event_timestamp < cutoff;
        DELETE FROM public.dash_hourly WHERE bucket < cutoff;
        DELETE FROM public.dash_daily WHERE bucket < cutoff;
        DELETE FROM public.dash_product_hourly WHERE bucket < cutoff;
        DELETE FROM public.dash_product_daily WHERE bucket < cutoff;
    END IF;
    UPDATE public.dw_lifecycle SET last_maintained_at = now();
    RETURN jsonb_build_object('cutoff', cutoff, 'created', to_jsonb(created), 'dropped', to_jsonb(dropped));
END
$fn$;

REVOKE ALL ON FUNCTION public.dw_create_month_partition(date), public.dw_maintain_partitions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dw_maintain_partitions() TO clickstream_writer;
