-- Indexes for the dashboard's queries (justified by benchmarks/bench_etl.py, which times the
-- same queries with and without them):
--   * time range (events per hour/day, recent events)    -> (event_timestamp)
--   * counts/filters by event name within a range         -> (event_name, event_timestamp)
--   * product / category views, carts, purchases          -> partial (category|product, event_timestamp)
--   * session funnel (steps of each session in order)     -> (session_id, event_timestamp)
CREATE INDEX clickstream_events_ts_idx
    ON public.clickstream_events (event_timestamp);
CREATE INDEX clickstream_events_name_ts_idx
    ON public.clickstream_events (event_name, event_timestamp);
CREATE INDEX clickstream_events_category_ts_idx
    ON public.clickstream_events (context_product_category, event_timestamp)
    WHERE context_product_category IS NOT NULL;
CREATE INDEX clickstream_events_product_ts_idx
    ON public.clickstream_events (context_product_id, event_timestamp)
    WHERE context_product_id IS NOT NULL;
CREATE INDEX clickstream_events_session_ts_idx
    ON public.clickstream_events (session_id, event_timestamp);
