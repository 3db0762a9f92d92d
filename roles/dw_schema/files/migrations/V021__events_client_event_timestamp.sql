-- Issue 15: ingest corrects event_timestamp for the client's clock when a batch carries sent_at and
-- keeps the client's own value as client_event_timestamp (an enrichment field of the stored-event
-- contract). One column, nullable (absent for events sent without sent_at and for older rows); on
-- the partitioned table it reaches every partition, without a rewrite. The ETL builds its staging
-- table from the catalog, so it fills the column from the next run on; rows loaded before keep the
-- value in `extra` (V007).
ALTER TABLE public.clickstream_events ADD COLUMN client_event_timestamp timestamptz;
