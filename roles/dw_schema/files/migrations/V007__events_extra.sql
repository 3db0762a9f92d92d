-- Issue 14: schema evolution without losing or quarantining fields.
-- `extra` keeps, as JSON, the fields of an event that the loading ETL has no column for: fields of
-- a newer ingest's contract (ingest deployed before the ETL), or a contract field whose migration
-- has not run yet. A nullable column without a default: no table rewrite, instant on any size.
-- Adding an optional field later is one migration like this one plus one contract change:
--   ALTER TABLE public.clickstream_events ADD COLUMN <field> <type>;
--   UPDATE public.clickstream_events SET <field> = (extra ->> '<field>')::<type>,
--       extra = nullif(extra - '<field>', '{}'::jsonb) WHERE extra ? '<field>';
-- (the ETL finds the new column in the catalog by itself; the writer role needs no new grant:
-- INSERT is granted on the table, and a new column inherits table-level privileges).
ALTER TABLE public.clickstream_events ADD COLUMN extra jsonb;
COMMENT ON COLUMN public.clickstream_events.extra IS
    'Fields the loading ETL had no column for (newer contract or pending migration), as JSON.';
