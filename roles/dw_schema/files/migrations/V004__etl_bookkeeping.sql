-- Bookkeeping of SBW_Lamda_ETL, committed in the same transaction as the rows it describes.

-- How far the incremental listing got, per key prefix: the greatest raw object key that has been
-- processed with every listed key before it. The next run lists with StartAfter = this key's
-- UUIDv7 time minus the look-back window.
CREATE TABLE public.etl_watermarks (
    prefix text PRIMARY KEY,
    last_key text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per processed raw object. status = 'loaded' (its rows are in clickstream_events) or
-- 'quarantined' (poison object: unparsable, invalid event, too large; error says why). An object
-- with a row here is not read again by incremental runs; a backfill re-reads it.
CREATE TABLE public.etl_objects (
    object_key text PRIMARY KEY,
    etag text,
    size_bytes bigint,
    status text NOT NULL CONSTRAINT etl_objects_status_chk CHECK (status IN ('loaded', 'quarantined')),
    rows_in_object integer NOT NULL DEFAULT 0,
    error text,
    run_id bigint,
    first_processed_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX etl_objects_quarantined_idx ON public.etl_objects (processed_at) WHERE status = 'quarantined';

-- One row per ETL run (what the dashboard shows as "last ETL run"). A run killed before it could
-- finish stays 'running' until the next run, holding the advisory lock, marks it 'abandoned'.
CREATE TABLE public.etl_runs (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger text NOT NULL DEFAULT 'schedule',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'running'
        CONSTRAINT etl_runs_status_chk
        CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'abandoned')),
    objects_seen integer NOT NULL DEFAULT 0,
    objects_loaded integer NOT NULL DEFAULT 0,
    objects_quarantined integer NOT NULL DEFAULT 0,
    rows_inserted bigint NOT NULL DEFAULT 0,
    duplicates_skipped bigint NOT NULL DEFAULT 0,
    summary jsonb,
    error text
);
CREATE INDEX etl_runs_started_idx ON public.etl_runs (started_at DESC);

-- Writer: read and write its own bookkeeping, never delete. Reader: select only.
REVOKE ALL ON public.etl_watermarks, public.etl_objects, public.etl_runs FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON public.etl_watermarks, public.etl_objects, public.etl_runs
    TO clickstream_writer;
GRANT SELECT ON public.etl_watermarks, public.etl_objects, public.etl_runs TO clickstream_reader;
