-- Rollups of the dashboard's Acquisition, Pages, Technology and Retention tabs, over the context
-- columns of V030. Like V005: a statement trigger queues the ids of the rows really inserted
-- (dash_dim_pending, its own queue), dash_dimension_refresh(max_rows) folds them in (the ETL calls
-- it right after dash_rollup_refresh), dash_dimension_rebuild() recomputes everything. Both run
-- as their owner (SECURITY DEFINER), so the ETL's role gains no privilege on these tables.
--
-- Three kinds of cells, every one keyed by is_bot (the dashboard excludes bots unless asked):
--
-- 1. Session cells (dash_dim_hourly / dash_dim_daily), bucket = the hour/day the SESSION STARTS
--    (its first event). A session (client_id, session_id, hashed) counts once, under the values of
--    its first event: channel_group, traffic_source, referrer_host, campaign (utm source / medium /
--    campaign, only sessions that carry one), browser, os, device_class; entry_page = path of its
--    first page_view, exit_page = path of its last page_view (sessions without a page_view have
--    neither). conversions = the session has a purchase; revenue = its purchases (discount price,
--    else price; the KPI tiles count revenue at the purchase's time, this at the session's start).
--    All exact integers, not sketches: each session is one row of dash_dim_sessions (its state),
--    and when a late event changes a session (an earlier first event, a later last page view, a
--    purchase) the refresh takes its old contribution OUT of the cells and adds the new one, so the
--    cells stay exact whatever order events arrive in. The state of a session is dropped once its
--    last event is older than session_state_days (default 3) before the newest event seen; an
--    event arriving even later than that starts a new state, i.e. is counted as one more session
--    (the only approximation; dash_dimension_rebuild() recomputes it exactly).
-- 2. Page cells (dash_page_hourly / dash_page_daily), bucket = the hour/day of the page_view:
--    views (exact) and sessions that viewed the page (HyperLogLog like V005: exact up to 8,192 per
--    figure, then ~1.6 % error).
-- 3. Visitors, as V005's users: visitor = 'u:' || user_id when the event has one, else 'c:' ||
--    client_id. dash_visitor_daily: a sketch of each UTC day's visitors (DAU, WAU, MAU and
--    stickiness are unions of them). dash_visitor_weeks: one row per (visitor hash, is_bot, UTC ISO
--    week with activity); dash_retention: exact visitors per (cohort week = the visitor's first
--    active week, active week), kept exact under late arrival the same way (a visitor whose first
--    week moves earlier leaves its old cohort).
--
-- Size: hourly cells (session and page) are kept only for hourly_days (default 16: a 7-day period
-- and the 7 days the Comparison tab reads before it, in any timezone) before the newest event; an
-- older period is read from daily cells, its ends rounded to the nearest UTC midnight, and flagged
-- as estimated (exact in UTC, whose days are whole UTC days); the session state holds only the last few days of sessions; visitor-weeks
-- hold one 8-byte hash per visitor and active week.

CREATE TABLE public.dash_dim_hourly (
    bucket timestamptz NOT NULL,
    is_bot boolean NOT NULL,
    dimension text NOT NULL,   -- channel_group, traffic_source, referrer_host, campaign, browser, os,
                               -- device_class, entry_page, exit_page
    value text NOT NULL,       -- '(not set)' = NULL; campaign: source || E'\x1f' || medium || E'\x1f' || campaign
    sessions bigint NOT NULL,
    conversions bigint NOT NULL,
    revenue numeric(16, 2) NOT NULL,
    -- dimension first: every dashboard query reads one dimension (or two) over a period
    PRIMARY KEY (dimension, bucket, is_bot, value)
);
CREATE TABLE public.dash_dim_daily (LIKE public.dash_dim_hourly INCLUDING ALL);

CREATE TABLE public.dash_page_hourly (
    bucket timestamptz NOT NULL,
    is_bot boolean NOT NULL,
    page_path text NOT NULL,
    views bigint NOT NULL,
    sessions hll(12, 5, 8192, 1) NOT NULL,
    PRIMARY KEY (bucket, is_bot, page_path)
);
CREATE TABLE public.dash_page_daily (LIKE public.dash_page_hourly INCLUDING ALL);

CREATE TABLE public.dash_visitor_daily (
    bucket timestamptz NOT NULL,
    is_bot boolean NOT NULL,
    visitors hll(12, 5, 8192, 1) NOT NULL,
    PRIMARY KEY (bucket, is_bot)
);

CREATE TABLE public.dash_visitor_weeks (
    visitor bigint NOT NULL,   -- hashtextextended(..., 0) of the visitor key
    is_bot boolean NOT NULL,
    week timestamptz NOT NULL, -- Monday 00:00 UTC
    PRIMARY KEY (visitor, is_bot, week)
);

CREATE TABLE public.dash_retention (
    cohort_week timestamptz NOT NULL,
    week timestamptz NOT NULL,
    is_bot boolean NOT NULL,
    visitors bigint NOT NULL,
    PRIMARY KEY (cohort_week, week, is_bot)
);

-- The state of recent sessions (see 1. above); the refresh's working set, not read by the dashboard.
CREATE TABLE public.dash_dim_sessions (
    session bigint PRIMARY KEY,      -- hashtextextended(..., 0) of length(client_id) || ':' || client_id || session_id
    first_ts timestamptz NOT NULL,   -- first event (any name): the session's bucket and attributes
    first_id uuid NOT NULL,
    last_ts timestamptz NOT NULL,    -- last event (any name): when the state may be dropped
    is_bot boolean NOT NULL,
    channel_group text,
    traffic_source text,
    referrer_host text,
    campaign text,
    browser text,
    os text,
    device_class text,
    entry_ts timestamptz,            -- first page_view
    entry_id uuid,
    entry_page text,
    exit_ts timestamptz,             -- last page_view
    exit_id uuid,
    exit_page text,
    purchases bigint NOT NULL,
    revenue numeric(16, 2) NOT NULL
);

-- One row: the knobs and where the refresh stands.
CREATE TABLE public.dash_dim_state (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    hourly_days integer NOT NULL DEFAULT 16 CHECK (hourly_days >= 2),
    session_state_days integer NOT NULL DEFAULT 3 CHECK (session_state_days >= 1),
    newest_event timestamptz,        -- the newest event_timestamp folded in
    hourly_from timestamptz NOT NULL DEFAULT '-infinity'  -- hourly cells exist from here on
);
INSERT INTO public.dash_dim_state DEFAULT VALUES;

CREATE TABLE public.dash_dim_pending (event_id uuid NOT NULL);

COMMENT ON TABLE public.dash_dim_hourly IS
    'Sessions per UTC hour of their start, per dimension value (V031); kept for dash_dim_state.hourly_days.';
COMMENT ON TABLE public.dash_dim_daily IS 'Same cells as dash_dim_hourly per UTC day, kept forever.';
COMMENT ON TABLE public.dash_page_hourly IS 'page_view counts and session sketches per page path and UTC hour (V031).';
COMMENT ON TABLE public.dash_page_daily IS 'Same cells as dash_page_hourly per UTC day.';
COMMENT ON TABLE public.dash_visitor_daily IS 'Visitors per UTC day (HyperLogLog), for DAU/WAU/MAU (V031).';
COMMENT ON TABLE public.dash_retention IS 'Exact visitors per (first active UTC ISO week, active week) (V031).';

-- The cells of [t0, t1) like dash_cells (V005), except that where the hourly cells were dropped
-- (before dash_dim_state.hourly_from) a ragged end is rounded to the nearest UTC midnight.
CREATE FUNCTION public.dash_dim_bounds(t0 timestamptz, t1 timestamptz, OUT r0 timestamptz, OUT r1 timestamptz,
                                       OUT rounded boolean)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT b.r0, b.r1, b.r0 <> t0 OR b.r1 <> t1
    FROM public.dash_dim_state AS s
    CROSS JOIN LATERAL (SELECT
        CASE WHEN t0 < s.hourly_from THEN public.dash_day_floor(t0 + interval '12 hours') ELSE t0 END AS r0,
        CASE WHEN public.dash_day_floor(t1) < s.hourly_from
             THEN public.dash_day_floor(t1 + interval '12 hours') ELSE t1 END AS r1
    ) AS b
$$;

CREATE FUNCTION public.dash_dim_cells(t0 timestamptz, t1 timestamptz) RETURNS SETOF public.dash_dim_hourly
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT d.* FROM public.dash_dim_bounds(t0, t1) AS b, public.dash_dim_daily AS d
    WHERE d.bucket >= public.dash_day_ceil(b.r0) AND d.bucket < public.dash_day_floor(b.r1)
    UNION ALL
    SELECT h.* FROM public.dash_dim_bounds(t0, t1) AS b, public.dash_dim_hourly AS h
    WHERE h.bucket >= b.r0 AND h.bucket < b.r1
      AND (h.bucket < public.dash_day_ceil(b.r0) OR h.bucket >= public.dash_day_floor(b.r1))
$$;

CREATE FUNCTION public.dash_page_cells(t0 timestamptz, t1 timestamptz) RETURNS SETOF public.dash_page_hourly
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT d.* FROM public.dash_dim_bounds(t0, t1) AS b, public.dash_page_daily AS d
    WHERE d.bucket >= public.dash_day_ceil(b.r0) AND d.bucket < public.dash_day_floor(b.r1)
    UNION ALL
    SELECT h.* FROM public.dash_dim_bounds(t0, t1) AS b, public.dash_page_hourly AS h
    WHERE h.bucket >= b.r0 AND h.bucket < b.r1
      AND (h.bucket < public.dash_day_ceil(b.r0) OR h.bucket >= public.dash_day_floor(b.r1))
$$;

-- The session's contribution to the session cells: one (dimension, value) per dimension it has.
CREATE FUNCTION public.dash_dim_values(s public.dash_dim_sessions) RETURNS TABLE (dimension text, value text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT v.dimension, v.value
    FROM (VALUES
        ('channel_group', coalesce(s.channel_group, '(not set)')),
        ('traffic_source', coalesce(s.traffic_source, '(not set)')),
        ('referrer_host', coalesce(s.referrer_host, '(not set)')),
        ('campaign', s.campaign),
        ('browser', coalesce(s.browser, '(not set)')),
        ('os', coalesce(s.os, '(not set)')),
        ('device_class', coalesce(s.device_class, '(not set)')),
        ('entry_page', CASE WHEN s.entry_ts IS NOT NULL THEN coalesce(s.entry_page, '(not set)') END),
        ('exit_page', CASE WHEN s.exit_ts IS NOT NULL THEN coalesce(s.exit_page, '(not set)') END)
    ) AS v (dimension, value)
    WHERE v.value IS NOT NULL
$$;

-- Fold the events of pg_temp.dim_batch into every V031 table (the refresh's and the rebuild's one
-- path). Caller holds the advisory lock.
CREATE FUNCTION public.dash_dimension_fold() RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
DECLARE
    grain record;
    st public.dash_dim_state;
BEGIN
    -- Event-level cells: page views, daily visitors.
    FOR grain IN SELECT * FROM (VALUES ('1 hour', 'hourly'), ('1 day', 'daily')) AS g (width, name) LOOP
        EXECUTE format($q$
            INSERT INTO public.dash_page_%1$s AS d
            SELECT date_bin(%2$L, e.event_timestamp, timestamptz '2000-01-01 00:00:00+00'), e.is_bot,
                   coalesce(e.page_path, '(not set)'), count(*),
                   hll_add_agg(hll_hash_text(length(e.client_id) || ':' || e.client_id || e.session_id), 12, 5, 8192, 1)
            FROM pg_temp.dim_batch AS e
            WHERE e.event_name = 'page_view'
            GROUP BY 1, 2, 3
            ON CONFLICT (bucket, is_bot, page_path) DO UPDATE SET
                views = d.views + EXCLUDED.views,
                sessions = hll_union(d.sessions, EXCLUDED.sessions)
            $q$, grain.name, grain.width);
    END LOOP;
    INSERT INTO public.dash_visitor_daily AS d
    SELECT public.dash_day_floor(e.event_timestamp), e.is_bot,
           hll_add_agg(hll_hash_text(coalesce('u:' || e.user_id, 'c:' || e.client_id)), 12, 5, 8192, 1)
    FROM pg_temp.dim_batch AS e
    GROUP BY 1, 2
    ON CONFLICT (bucket, is_bot) DO UPDATE SET visitors = hll_union(d.visitors, EXCLUDED.visitors);

    -- Sessions: the batch's view of each session, merged with the stored state.
    DROP TABLE IF EXISTS pg_temp.dim_touch, pg_temp.dim_old, pg_temp.dim_new;
    CREATE TEMP TABLE dim_touch ON COMMIT DROP AS
    WITH b AS (
        SELECT hashtextextended(length(e.client_id) || ':' || e.client_id || e.session_id, 0) AS session, e.*
        FROM pg_temp.dim_batch AS e
    ), firsts AS (
        SELECT DISTINCT ON (b.session) b.session, b.event_timestamp AS first_ts, b.event_id AS first_id, b.is_bot,
               b.channel_group, b.traffic_source, b.referrer_host,
               CASE WHEN coalesce(b.utm_source, b.utm_medium, b.utm_campaign) IS NOT NULL
                    THEN concat_ws(E'\x1f', coalesce(b.utm_source, '(not set)'), coalesce(b.utm_medium, '(not set)'),
                                   coalesce(b.utm_campaign, '(not set)')) END AS campaign,
               b.ua_browser AS browser, b.ua_os AS os, b.device_class
        FROM b ORDER BY b.session, b.event_timestamp, b.event_id
    ), entries AS (
        SELECT DISTINCT ON (b.session) b.session, b.event_timestamp AS entry_ts, b.event_id AS entry_id, b.page_path
        FROM b WHERE b.event_name = 'page_view' ORDER BY b.session, b.event_timestamp, b.event_id
    ), exits AS (
        SELECT DISTINCT ON (b.session) b.session, b.event_timestamp AS exit_ts, b.event_id AS exit_id, b.page_path
        FROM b WHERE b.event_name = 'page_view' ORDER BY b.session, b.event_timestamp DESC, b.event_id DESC
    ), totals AS (
        SELECT b.session, max(b.event_timestamp) AS last_ts,
               count(*) FILTER (WHERE b.event_name = 'purchase') AS purchases,
               coalesce(sum(coalesce(b.context_product_discount_price, b.context_product_price))
                   FILTER (WHERE b.event_name = 'purchase'), 0) AS revenue
        FROM b GROUP BY b.session
    )
    SELECT f.session, f.first_ts, f.first_id, t.last_ts, f.is_bot, f.channel_group, f.traffic_source,
           f.referrer_host, f.campaign, f.browser, f.os, f.device_class,
           n.entry_ts, n.entry_id, n.page_path AS entry_page, x.exit_ts, x.exit_id, x.page_path AS exit_page,
           t.purchases, t.revenue
    FROM firsts AS f
    JOIN totals AS t USING (session)
    LEFT JOIN entries AS n USING (session)
    LEFT JOIN exits AS x USING (session);

    CREATE TEMP TABLE dim_old ON COMMIT DROP AS
    SELECT s.* FROM public.dash_dim_sessions AS s WHERE s.session IN (SELECT session FROM pg_temp.dim_touch);

    -- New state = stored state merged with the batch: earliest first event, earliest entry, latest
    -- exit (ties broken by event id, so any arrival order gives the same state), sums added.
    CREATE TEMP TABLE dim_new ON COMMIT DROP AS
    SELECT t.session,
           CASE WHEN o.session IS NULL OR (t.first_ts, t.first_id) < (o.first_ts, o.first_id) THEN t.first_ts ELSE o.first_ts END AS first_ts,
           CASE WHEN o.session IS NULL OR (t.first_ts, t.first_id) < (o.first_ts, o.first_id) THEN t.first_id ELSE o.first_id END AS first_id,
           greatest(t.last_ts, o.last_ts) AS last_ts,
           f.is_bot, f.channel_group, f.traffic_source, f.referrer_host, f.campaign, f.browser, f.os, f.device_class,
           n.entry_ts, n.entry_id, n.entry_page, x.exit_ts, x.exit_id, x.exit_page,
           t.purchases + coalesce(o.purchases, 0) AS purchases,
           t.revenue + coalesce(o.revenue, 0) AS revenue
    FROM pg_temp.dim_touch AS t
    LEFT JOIN pg_temp.dim_old AS o USING (session)
    CROSS JOIN LATERAL (
        SELECT t.is_bot, t.channel_group, t.traffic_source, t.referrer_host, t.campaign, t.browser, t.os, t.device_class
        WHERE o.session IS NULL OR (t.first_ts, t.first_id) < (o.first_ts, o.first_id)
        UNION ALL
        SELECT o.is_bot, o.channel_group, o.traffic_source, o.referrer_host, o.campaign, o.browser, o.os, o.device_class
        WHERE NOT (o.session IS NULL OR (t.first_ts, t.first_id) < (o.first_ts, o.first_id))
    ) AS f
    CROSS JOIN LATERAL (
        SELECT t.entry_ts, t.entry_id, t.entry_page
        WHERE o.entry_ts IS NULL OR (t.entry_ts IS NOT NULL AND (t.entry_ts, t.entry_id) < (o.entry_ts, o.entry_id))
        UNION ALL
        SELECT o.entry_ts, o.entry_id, o.entry_page
        WHERE NOT (o.entry_ts IS NULL OR (t.entry_ts IS NOT NULL AND (t.entry_ts, t.entry_id) < (o.entry_ts, o.entry_id)))
    ) AS n
    CROSS JOIN LATERAL (
        SELECT t.exit_ts, t.exit_id, t.exit_page
        WHERE o.exit_ts IS NULL OR (t.exit_ts IS NOT NULL AND (t.exit_ts, t.exit_id) > (o.exit_ts, o.exit_id))
        UNION ALL
        SELECT o.exit_ts, o.exit_id, o.exit_page
        WHERE NOT (o.exit_ts IS NULL OR (t.exit_ts IS NOT NULL AND (t.exit_ts, t.exit_id) > (o.exit_ts, o.exit_id)))
    ) AS x;

    -- Cells: minus the old contribution, plus the new one; cells back at zero are removed.
    FOR grain IN SELECT * FROM (VALUES ('1 hour', 'hourly'), ('1 day', 'daily')) AS g (width, name) LOOP
        EXECUTE format($q$
            INSERT INTO public.dash_dim_%1$s AS d
            SELECT date_bin(%2$L, c.first_ts, timestamptz '2000-01-01 00:00:00+00'), c.is_bot, v.dimension, v.value,
                   sum(c.sign), sum(c.sign * (c.purchases > 0)::int), sum(c.sign * c.revenue)
            FROM (
                SELECT -1 AS sign, o.* FROM pg_temp.dim_old AS o
                UNION ALL
                SELECT 1, n.* FROM pg_temp.dim_new AS n
            ) AS c
            CROSS JOIN LATERAL public.dash_dim_values(ROW(c.session, c.first_ts, c.first_id, c.last_ts, c.is_bot,
                c.channel_group, c.traffic_source, c.referrer_host, c.campaign, c.browser, c.os, c.device_class,
                c.entry_ts, c.entry_id, c.entry_page, c.exit_ts, c.exit_id, c.exit_page, c.purchases,
                c.revenue)::public.dash_dim_sessions) AS v
            GROUP BY 1, 2, 3, 4
            HAVING sum(c.sign) <> 0 OR sum(c.sign * (c.purchases > 0)::int) <> 0 OR sum(c.sign * c.revenue) <> 0
            ORDER BY 1, 2, 3, 4
            ON CONFLICT (dimension, bucket, is_bot, value) DO UPDATE SET
                sessions = d.sessions + EXCLUDED.sessions,
                conversions = d.conversions + EXCLUDED.conversions,
                revenue = d.revenue + EXCLUDED.revenue
            $q$, grain.name, grain.width);
        EXECUTE format($q$
            DELETE FROM public.dash_dim_%1$s AS d
            WHERE d.sessions = 0 AND d.conversions = 0 AND d.revenue = 0
              AND d.bucket IN (SELECT DISTINCT date_bin(%2$L, o.first_ts, timestamptz '2000-01-01 00:00:00+00')
                               FROM pg_temp.dim_old AS o)
            $q$, grain.name, grain.width);
    END LOOP;

    DELETE FROM public.dash_dim_sessions WHERE session IN (SELECT session FROM pg_temp.dim_old);
    INSERT INTO public.dash_dim_sessions SELECT * FROM pg_temp.dim_new;

    -- Retention: new (visitor, week) rows; a visitor whose first week changed leaves its old cohort.
    DROP TABLE IF EXISTS pg_temp.dim_vw, pg_temp.dim_vold, pg_temp.dim_vnew;
    CREATE TEMP TABLE dim_vw ON COMMIT DROP AS
    SELECT DISTINCT hashtextextended(coalesce('u:' || e.user_id, 'c:' || e.client_id), 0) AS visitor, e.is_bot,
           date_trunc('week', e.event_timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS week
    FROM pg_temp.dim_batch AS e;
    CREATE TEMP TABLE dim_vold ON COMMIT DROP AS
    SELECT w.* FROM public.dash_visitor_weeks AS w
    WHERE (w.visitor, w.is_bot) IN (SELECT visitor, is_bot FROM pg_temp.dim_vw);
    INSERT INTO public.dash_visitor_weeks SELECT * FROM pg_temp.dim_vw ON CONFLICT DO NOTHING;
    CREATE TEMP TABLE dim_vnew ON COMMIT DROP AS
    SELECT w.* FROM public.dash_visitor_weeks AS w
    WHERE (w.visitor, w.is_bot) IN (SELECT visitor, is_bot FROM pg_temp.dim_vw);
    INSERT INTO public.dash_retention AS d
    SELECT c.cohort_week, c.week, c.is_bot, sum(c.sign)
    FROM (
        SELECT -1 AS sign, min(o.week) OVER (PARTITION BY o.visitor, o.is_bot) AS cohort_week, o.week, o.is_bot
        FROM pg_temp.dim_vold AS o
        UNION ALL
        SELECT 1, min(n.week) OVER (PARTITION BY n.visitor, n.is_bot), n.week, n.is_bot
        FROM pg_temp.dim_vnew AS n
    ) AS c
    GROUP BY 1, 2, 3
    HAVING sum(c.sign) <> 0
    ON CONFLICT (cohort_week, week, is_bot) DO UPDATE SET visitors = d.visitors + EXCLUDED.visitors;
    DELETE FROM public.dash_retention WHERE visitors = 0;

    -- Bounds: hourly cells only for the recent window, session state only for recent sessions.
    UPDATE public.dash_dim_state
    SET newest_event = greatest(newest_event, (SELECT max(event_timestamp) FROM pg_temp.dim_batch))
    RETURNING * INTO st;
    IF st.newest_event IS NOT NULL THEN
        UPDATE public.dash_dim_state
        SET hourly_from = greatest(hourly_from, public.dash_day_floor(st.newest_event) - make_interval(days => st.hourly_days))
        RETURNING * INTO st;
        DELETE FROM public.dash_dim_hourly WHERE bucket < st.hourly_from;
        DELETE FROM public.dash_page_hourly WHERE bucket < st.hourly_from;
        DELETE FROM public.dash_dim_sessions
        WHERE last_ts < st.newest_event - make_interval(days => st.session_state_days);
    END IF;
    DROP TABLE pg_temp.dim_touch, pg_temp.dim_old, pg_temp.dim_new, pg_temp.dim_vw, pg_temp.dim_vold, pg_temp.dim_vnew;
END
$fn$;

CREATE FUNCTION public.dash_dim_enqueue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
BEGIN
    INSERT INTO public.dash_dim_pending (event_id) SELECT event_id FROM new_events;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER dash_dim_enqueue
    AFTER INSERT ON public.clickstream_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.dash_dim_enqueue();

-- Fold up to max_rows queued events in; returns how many it took. Its own advisory lock (not
-- V005's), so the two refreshes do not wait for each other.
CREATE FUNCTION public.dash_dimension_refresh(max_rows integer DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    taken bigint;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'dash_dimension_refresh: max_rows must be a positive integer (got %)', max_rows;
    END IF;
    PERFORM pg_advisory_xact_lock(1530731122);
    DROP TABLE IF EXISTS pg_temp.dim_batch;
    CREATE TEMP TABLE dim_batch (LIKE public.clickstream_events) ON COMMIT DROP;
    WITH taken_ids AS (
        DELETE FROM public.dash_dim_pending
        WHERE ctid IN (SELECT ctid FROM public.dash_dim_pending LIMIT max_rows)
        RETURNING event_id
    )
    INSERT INTO pg_temp.dim_batch
    SELECT e.* FROM public.clickstream_events AS e WHERE e.event_id IN (SELECT event_id FROM taken_ids);
    GET DIAGNOSTICS taken = ROW_COUNT;
    IF taken > 0 THEN
        ANALYZE pg_temp.dim_batch;
        PERFORM public.dash_dimension_fold();
    END IF;
    DROP TABLE pg_temp.dim_batch;
    RETURN taken;
END
$fn$;

-- Recompute every V031 table from the events (owner only; after a bulk load with the trigger
-- disabled, or to make late-session approximations exact again). Empties the queue.
CREATE FUNCTION public.dash_dimension_rebuild() RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    taken bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1530731122);
    TRUNCATE public.dash_dim_hourly, public.dash_dim_daily, public.dash_page_hourly, public.dash_page_daily,
        public.dash_visitor_daily, public.dash_visitor_weeks, public.dash_retention, public.dash_dim_sessions,
        public.dash_dim_pending;
    UPDATE public.dash_dim_state SET newest_event = NULL, hourly_from = '-infinity';
    DROP TABLE IF EXISTS pg_temp.dim_batch;
    CREATE TEMP TABLE dim_batch ON COMMIT DROP AS SELECT * FROM public.clickstream_events;
    GET DIAGNOSTICS taken = ROW_COUNT;
    ANALYZE pg_temp.dim_batch;
    PERFORM public.dash_dimension_fold();
    DROP TABLE pg_temp.dim_batch;
    RETURN taken;
END
$fn$;

SELECT public.dash_dimension_rebuild();

-- Reader: the cells and the period functions. Writer: dash_dimension_refresh() only.
REVOKE ALL ON public.dash_dim_hourly, public.dash_dim_daily, public.dash_page_hourly, public.dash_page_daily,
    public.dash_visitor_daily, public.dash_visitor_weeks, public.dash_retention, public.dash_dim_sessions,
    public.dash_dim_state, public.dash_dim_pending FROM PUBLIC;
GRANT SELECT ON public.dash_dim_hourly, public.dash_dim_daily, public.dash_page_hourly, public.dash_page_daily,
    public.dash_visitor_daily, public.dash_retention, public.dash_dim_state, public.dash_dim_pending
    TO clickstream_reader;
REVOKE ALL ON FUNCTION public.dash_dim_enqueue(), public.dash_dimension_fold(), public.dash_dimension_rebuild(),
    public.dash_dimension_refresh(integer), public.dash_dim_values(public.dash_dim_sessions),
    public.dash_dim_bounds(timestamptz, timestamptz), public.dash_dim_cells(timestamptz, timestamptz),
    public.dash_page_cells(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dash_dim_bounds(timestamptz, timestamptz),
    public.dash_dim_cells(timestamptz, timestamptz), public.dash_page_cells(timestamptz, timestamptz)
    TO clickstream_reader;
GRANT EXECUTE ON FUNCTION public.dash_dimension_refresh(integer) TO clickstream_writer;
