-- The warehouse fact table: one row per clickstream event. Client columns are named exactly as
-- the event contract's properties (lambda_src/sbw_clickstream/schemas/clickstream-event.v1.json,
-- contract.EVENT_FIELDS, in that order), then the fields ingest adds, then the ETL's lineage.
CREATE TABLE public.clickstream_events (
    event_id uuid PRIMARY KEY,
    event_timestamp timestamptz NOT NULL,
    event_name text NOT NULL,
    user_id text,
    user_login_state text,
    identity_source text,
    client_id text NOT NULL,
    session_id text NOT NULL,
    is_first_visit boolean,
    context_product_id text,
    context_product_name text,
    context_product_category text,
    context_product_brand text,
    context_product_price numeric(12, 2),
    context_product_discount_price numeric(12, 2),
    context_product_url_path text,
    -- enrichment by ingest (NULL for objects written by the seed's original workshop function)
    received_at timestamptz,
    schema_version text,
    user_agent text,
    client_ip text,
    -- lineage: the raw object the row came from, and when the ETL committed it
    source_key text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clickstream_events_login_state_chk
        CHECK (user_login_state IS NULL OR user_login_state IN ('logged_in', 'guest')),
    CONSTRAINT clickstream_events_price_chk
        CHECK (context_product_price IS NULL OR context_product_price >= 0),
    CONSTRAINT clickstream_events_discount_chk
        CHECK (context_product_discount_price IS NULL OR context_product_discount_price >= 0)
);

COMMENT ON TABLE public.clickstream_events IS
    'Clickstream events, loaded exactly once by SBW_Lamda_ETL (primary key event_id).';
COMMENT ON COLUMN public.clickstream_events.source_key IS 'S3 key of the raw object in the raw bucket.';

-- ETL writer: INSERT only. It loads with INSERT ... ON CONFLICT DO NOTHING (no conflict target):
-- naming the target, ON CONFLICT (event_id), would also need SELECT on event_id (arbiter columns
-- are read); the primary key is the only unique constraint (tests/test_migrations.py checks it).
-- It cannot read, update, delete or truncate events. Dashboard reader: SELECT only.
REVOKE ALL ON public.clickstream_events FROM PUBLIC;
GRANT INSERT ON public.clickstream_events TO clickstream_writer;
GRANT SELECT ON public.clickstream_events TO clickstream_reader;
