-- Issue 14: backfills resume where they stopped; dead ETL sessions cannot hold the run lock for long.

-- One row per backfill range ({"from", "to"} exactly as the invocation gave them). Each batch of a
-- backfill commits its cursor (the last listed key it processed) in the same transaction as its
-- rows, so the next invocation of the same range, or the catch-up schedule, resumes after it.
-- finished_at is set when the range has been read to its end; asking for the same range again
-- then starts it over (a new backfill after a fix is a normal thing to do).
CREATE TABLE public.etl_backfills (
    range_from text NOT NULL,
    range_to text NOT NULL,
    cursor_key text,
    objects_done bigint NOT NULL DEFAULT 0,
    rows_inserted bigint NOT NULL DEFAULT 0,
    runs integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (range_from, range_to)
);
CREATE INDEX etl_backfills_open_idx ON public.etl_backfills (updated_at) WHERE finished_at IS NULL;

REVOKE ALL ON public.etl_backfills FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON public.etl_backfills TO clickstream_writer;
GRANT SELECT ON public.etl_backfills TO clickstream_reader;

-- The run lock is a session advisory lock: it lives as long as the server believes the session
-- does. A Lambda killed at its timeout (or frozen) leaves a half-open TCP connection that the
-- server, by default, keeps for hours (tcp_keepalives_* = the kernel's 2 h). These settings apply
-- to every new session of this database (ALTER DATABASE ... SET, so the postgresql role's server
-- configuration stays untouched): a dead peer is detected after 60 + 6 * 10 s, and a session left
-- idle inside a transaction is ended after 5 minutes (no ETL transaction waits that long; the
-- dashboard reads in autocommit).
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET tcp_keepalives_idle = 60', current_database());
    EXECUTE format('ALTER DATABASE %I SET tcp_keepalives_interval = 10', current_database());
    EXECUTE format('ALTER DATABASE %I SET tcp_keepalives_count = 6', current_database());
    EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L', current_database(), '5min');
END
$$;
