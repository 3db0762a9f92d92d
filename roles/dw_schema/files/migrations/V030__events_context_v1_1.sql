-- Contract v1.1 (additive): page, campaign and client context sent by the tracker, and what ingest
-- derives from the request (user agent -> browser/OS/device class/bot flag; referrer + UTM ->
-- source and channel group). Nullable columns without a default (no table rewrite on the
-- partitioned table, every partition gets them), except is_bot: NOT NULL DEFAULT false, a constant
-- default, which PostgreSQL 11+ also adds without a rewrite. IF NOT EXISTS on every column: is_bot
-- may already exist (V022 adds it too), and the others keep this file safe in either order.
-- The ETL builds its staging table from the catalog (see V021), so it fills these columns from the
-- next run on; rows loaded before keep NULL (is_bot false) and the dashboard shows '(not set)'.
ALTER TABLE public.clickstream_events
    ADD COLUMN IF NOT EXISTS page_url text,
    ADD COLUMN IF NOT EXISTS page_path text,
    ADD COLUMN IF NOT EXISTS page_title text,
    ADD COLUMN IF NOT EXISTS page_referrer text,
    ADD COLUMN IF NOT EXISTS utm_source text,
    ADD COLUMN IF NOT EXISTS utm_medium text,
    ADD COLUMN IF NOT EXISTS utm_campaign text,
    ADD COLUMN IF NOT EXISTS utm_term text,
    ADD COLUMN IF NOT EXISTS utm_content text,
    ADD COLUMN IF NOT EXISTS click_id_type text,
    ADD COLUMN IF NOT EXISTS screen text,
    ADD COLUMN IF NOT EXISTS viewport text,
    ADD COLUMN IF NOT EXISTS locale text,
    ADD COLUMN IF NOT EXISTS client_timezone text,
    ADD COLUMN IF NOT EXISTS ua_browser text,
    ADD COLUMN IF NOT EXISTS ua_browser_version text,
    ADD COLUMN IF NOT EXISTS ua_os text,
    ADD COLUMN IF NOT EXISTS ua_os_version text,
    ADD COLUMN IF NOT EXISTS device_class text,
    ADD COLUMN IF NOT EXISTS is_bot boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS referrer_host text,
    ADD COLUMN IF NOT EXISTS traffic_source text,
    ADD COLUMN IF NOT EXISTS channel_group text;

COMMENT ON COLUMN public.clickstream_events.click_id_type IS
    'Which ad click-id query parameter the landing URL carried (gclid, fbclid, msclkid, ...); the id itself is never stored.';
COMMENT ON COLUMN public.clickstream_events.device_class IS
    'Set by ingest from the User-Agent header: desktop, mobile, tablet, bot or other.';
COMMENT ON COLUMN public.clickstream_events.is_bot IS
    'Set by ingest: the User-Agent is a crawler/bot (UA rules + known-bot list); kept, excluded from the dashboard by default.';
COMMENT ON COLUMN public.clickstream_events.channel_group IS
    'Set by ingest from page_referrer, utm_* and click ids (docs/architecture.md, channel rule table).';
