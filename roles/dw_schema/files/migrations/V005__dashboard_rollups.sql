-- Pre-aggregated rollups for the dashboard (issue: p95 < 300 ms per query at 10 M events).
--
-- Two grains of the same cells: per UTC hour and per UTC day. A period [t0, t1) is read as the
-- daily cells of the whole UTC days inside it plus the hourly cells of its ragged ends
-- (dash_cells / dash_product_cells), so a 90-day period reads ~90 daily cells per combination
-- instead of millions of events. Exact for every timezone whose offset is a whole number of
-- hours (all the app offers); a :30/:45 offset rounds the period's ends to the hour.
--
-- Additive figures (events, revenue, product counts) are exact sums. Distinct counts (sessions,
-- users, visitors) are HyperLogLog sketches (extension hll, Debian's postgresql-15-hll): exact
-- (an explicit set of 64-bit hashes) up to 8,192 distinct values per period and filter, then an
-- estimate with ~1.6 % standard error (log2m 12). Sketches of the same shape merge (hll_union),
-- which is what makes a distinct count over any period cheap.
--
-- Kept in two steps, so that the exactly-once load stays as fast as a COPY and the aggregation is
-- amortised over a whole ETL run instead of paid per batch:
--   1. a statement-level trigger on clickstream_events queues the ids of the rows really inserted
--      (its transition table: ON CONFLICT DO NOTHING duplicates are not in it) in dash_pending, in
--      the load's own transaction;
--   2. dash_rollup_refresh(max_rows) folds queued events into the rollups and removes them from the
--      queue in ONE transaction (a crash leaves them queued; nothing is counted twice). SBW_Lamda_ETL
--      calls it at the end of every run; anyone else who inserts events calls it too.
-- Both run as their owner (SECURITY DEFINER): the ETL's role fires the trigger and may call the
-- refresh, but gains no privilege on the rollups or the queue and still cannot read events. dash_rollup_rebuild() recomputes everything
-- (end of this migration, and for the owner after a bulk load with the trigger disabled).
--
-- Funnel: a step-k event counts when the session had reached step k-1 before it (product_view ->
-- add_to_cart -> begin_checkout -> purchase, in time order, any product, any time); the step is
-- counted in the period and for the product of that step's event. A late event can only make more
-- events qualify, so the add-only sketches stay exact whatever order events arrive in.

CREATE EXTENSION IF NOT EXISTS hll WITH SCHEMA public;

CREATE TABLE public.dash_hourly (
    bucket timestamptz NOT NULL,
    event_name text NOT NULL,
    category text,                   -- '' = no product in the event; NULL = all categories
    brand text,                      -- '' = no product; NULL = all brands
    login_state text NOT NULL,       -- '' = unknown
    identity_source text NOT NULL,   -- '' = unknown
    events bigint NOT NULL,
    revenue numeric(16, 2) NOT NULL, -- purchases only: discount price, else price
    sessions hll(12, 5, 8192, 1) NOT NULL,
    users hll(12, 5, 8192, 1) NOT NULL,            -- 'u:' || user_id, else 'c:' || client_id
    logged_in_users hll(12, 5, 8192, 1) NOT NULL,  -- user_id of logged-in events
    guest_visitors hll(12, 5, 8192, 1) NOT NULL,   -- client_id of events without user_id
    first_visit_clients hll(12, 5, 8192, 1) NOT NULL,
    clients hll(12, 5, 8192, 1) NOT NULL,
    funnel_sessions hll(12, 5, 8192, 1) NOT NULL,  -- sessions whose event here reached its funnel step
    CONSTRAINT dash_hourly_cell UNIQUE NULLS NOT DISTINCT
        (bucket, event_name, category, brand, login_state, identity_source)
);
-- The dashboard always filters on category and brand (NULL = all) and a period.
CREATE INDEX dash_hourly_filter_idx ON public.dash_hourly (category, brand, bucket);
CREATE TABLE public.dash_daily (LIKE public.dash_hourly INCLUDING ALL);

CREATE TABLE public.dash_product_hourly (
    bucket timestamptz NOT NULL,
    product_id text NOT NULL,
    category text NOT NULL,
    brand text NOT NULL,
    product_name text,
    events bigint NOT NULL,
    views bigint NOT NULL,
    add_to_carts bigint NOT NULL,
    checkouts bigint NOT NULL,
    purchases bigint NOT NULL,
    revenue numeric(16, 2) NOT NULL,
    PRIMARY KEY (bucket, product_id, category, brand)
);
CREATE TABLE public.dash_product_daily (LIKE public.dash_product_hourly INCLUDING ALL);

-- Events inserted but not yet in the rollups (append-only queue; no index: it is read whole).
CREATE TABLE public.dash_pending (event_id uuid NOT NULL);

COMMENT ON TABLE public.dash_hourly IS
    'Dashboard rollup per UTC hour: events queued by trigger dash_rollup, folded in by dash_rollup_refresh() (V005).';
COMMENT ON TABLE public.dash_daily IS 'Same cells as dash_hourly per UTC day.';
COMMENT ON TABLE public.dash_product_hourly IS 'Per-product commerce counts per UTC hour (V005).';
COMMENT ON TABLE public.dash_product_daily IS 'Same cells as dash_product_hourly per UTC day.';

-- UTC day boundaries, independent of the session's TimeZone.
CREATE FUNCTION public.dash_day_floor(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN date_bin('1 day', t, timestamptz '2000-01-01 00:00:00+00');

CREATE FUNCTION public.dash_day_ceil(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN public.dash_day_floor(t) = t THEN t ELSE public.dash_day_floor(t) + interval '24 hours' END;

-- The cells of [t0, t1): daily cells of the whole UTC days inside, hourly cells for the rest.
CREATE FUNCTION public.dash_cells(t0 timestamptz, t1 timestamptz) RETURNS SETOF public.dash_hourly
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM public.dash_daily
    WHERE bucket >= public.dash_day_ceil(t0) AND bucket < public.dash_day_floor(t1)
    UNION ALL
    SELECT * FROM public.dash_hourly
    WHERE bucket >= t0 AND bucket < t1
      AND (bucket < public.dash_day_ceil(t0) OR bucket >= public.dash_day_floor(t1))
$$;

CREATE FUNCTION public.dash_product_cells(t0 timestamptz, t1 timestamptz)
RETURNS SETOF public.dash_product_hourly
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM public.dash_product_daily
    WHERE bucket >= public.dash_day_ceil(t0) AND bucket < public.dash_day_floor(t1)
    UNION ALL
    SELECT * FROM public.dash_product_hourly
    WHERE bucket >= t0 AND bucket < t1
      AND (bucket < public.dash_day_ceil(t0) OR bucket >= public.dash_day_floor(t1))
$$;

-- The statements that fold the events of relation `source` (the refresh's batch of queued events,
-- or clickstream_events for a rebuild) into the rollups: one text, so both paths compute the same.
CREATE FUNCTION public.dash_rollup_statements(source text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    grains CONSTANT text[][] := ARRAY[['1 hour', 'hourly'], ['1 day', 'daily']];
    sketch CONSTANT text := '12, 5, 8192, 1';
    -- Every cell also exists with category and/or brand rolled up (NULL = all), so that a query
    -- without those filters reads a few dense sketches instead of hundreds of small ones.
    cube CONSTANT text := '1, 2, 5, 6, GROUPING SETS ('
        '(coalesce(e.context_product_category, ''''), coalesce(e.context_product_brand, '''')), '
        '(coalesce(e.context_product_category, '''')), (coalesce(e.context_product_brand, '''')), ())';
    funnel_names CONSTANT text := $$('product_view', 'add_to_cart', 'begin_checkout', 'purchase')$$;
    -- The funnel events of the sessions in `source` (all of them for a rebuild).
    funnel_events CONSTANT text := CASE WHEN source = 'public.clickstream_events'
        THEN format('SELECT * FROM public.clickstream_events WHERE event_name IN %s', funnel_names)
        ELSE format('SELECT e.* FROM public.clickstream_events AS e WHERE e.event_name IN %1$s AND e.session_id IN '
                    '(SELECT DISTINCT n.session_id FROM %2$s AS n WHERE n.event_name IN %1$s)', funnel_names, source)
    END;
    stmts text[] := ARRAY[]::text[];
    funnel_inserts text[] := ARRAY[]::text[];
    i int;
BEGIN
    FOR i IN 1 .. array_length(grains, 1) LOOP
        stmts := stmts || format($q$
            INSERT INTO public.dash_%2$s AS d
            SELECT date_bin(%3$L, e.event_timestamp, timestamptz '2000-01-01 00:00:00+00'), e.event_name,
                   coalesce(e.context_product_category, ''), coalesce(e.context_product_brand, ''),
                   coalesce(e.user_login_state, ''), coalesce(e.identity_source, ''),
                   count(*),
                   coalesce(sum(coalesce(e.context_product_discount_price, e.context_product_price))
                       FILTER (WHERE e.event_name = 'purchase'), 0),
                   hll_add_agg(hll_hash_text(e.session_id), %4$s),
                   hll_add_agg(hll_hash_text(coalesce('u:' || e.user_id, 'c:' || e.client_id)), %4$s),
                   coalesce(hll_add_agg(hll_hash_text(e.user_id), %4$s)
                       FILTER (WHERE e.user_login_state = 'logged_in' AND e.user_id IS NOT NULL), hll_empty(%4$s)),
                   coalesce(hll_add_agg(hll_hash_text(e.client_id), %4$s)
                       FILTER (WHERE e.user_id IS NULL), hll_empty(%4$s)),
                   coalesce(hll_add_agg(hll_hash_text(e.client_id), %4$s)
                       FILTER (WHERE e.is_first_visit), hll_empty(%4$s)),
                   hll_add_agg(hll_hash_text(e.client_id), %4$s),
                   hll_empty(%4$s)
            FROM %1$s AS e
            GROUP BY %5$s
            ON CONFLICT (bucket, event_name, category, brand, login_state, identity_source) DO UPDATE SET
                events = d.events + EXCLUDED.events,
                revenue = d.revenue + EXCLUDED.revenue,
                sessions = hll_union(d.sessions, EXCLUDED.sessions),
                users = hll_union(d.users, EXCLUDED.users),
                logged_in_users = hll_union(d.logged_in_users, EXCLUDED.logged_in_users),
                guest_visitors = hll_union(d.guest_visitors, EXCLUDED.guest_visitors),
                first_visit_clients = hll_union(d.first_visit_clients, EXCLUDED.first_visit_clients),
                clients = hll_union(d.clients, EXCLUDED.clients)
            $q$, source, grains[i][2], grains[i][1], sketch, cube);

        stmts := stmts || format($q$
            INSERT INTO public.dash_product_%2$s AS d
            SELECT date_bin(%3$L, e.event_timestamp, timestamptz '2000-01-01 00:00:00+00'), e.context_product_id,
                   coalesce(e.context_product_category, ''), coalesce(e.context_product_brand, ''),
                   max(e.context_product_name),
                   count(*),
                   count(*) FILTER (WHERE e.event_name = 'product_view'),
                   count(*) FILTER (WHERE e.event_name = 'add_to_cart'),
                   count(*) FILTER (WHERE e.event_name = 'begin_checkout'),
                   count(*) FILTER (WHERE e.event_name = 'purchase'),
                   coalesce(sum(coalesce(e.context_product_discount_price, e.context_product_price))
                       FILTER (WHERE e.event_name = 'purchase'), 0)
            FROM %1$s AS e
            WHERE e.context_product_id IS NOT NULL
            GROUP BY 1, 2, 3, 4
            ORDER BY 1, 2, 3, 4
            ON CONFLICT (bucket, product_id, category, brand) DO UPDATE SET
                product_name = coalesce(EXCLUDED.product_name, d.product_name),
                events = d.events + EXCLUDED.events,
                views = d.views + EXCLUDED.views,
                add_to_carts = d.add_to_carts + EXCLUDED.add_to_carts,
                checkouts = d.checkouts + EXCLUDED.checkouts,
                purchases = d.purchases + EXCLUDED.purchases,
                revenue = d.revenue + EXCLUDED.revenue
            $q$, source, grains[i][2], grains[i][1]);

        -- The funnel cells of this grain: filled by the one funnel statement below.
        funnel_inserts := funnel_inserts || format($q$
            INSERT INTO public.dash_%1$s AS d
            SELECT date_bin(%2$L, e.event_timestamp, timestamptz '2000-01-01 00:00:00+00'), e.event_name,
                   coalesce(e.context_product_category, ''), coalesce(e.context_product_brand, ''),
                   coalesce(e.user_login_state, ''), coalesce(e.identity_source, ''),
                   0, 0, hll_empty(%3$s), hll_empty(%3$s), hll_empty(%3$s), hll_empty(%3$s),
                   hll_empty(%3$s), hll_empty(%3$s),
                   hll_add_agg(hll_hash_text(e.session_id), %3$s)
            FROM reached AS e
            GROUP BY %4$s
            ON CONFLICT (bucket, event_name, category, brand, login_state, identity_source) DO UPDATE SET
                funnel_sessions = hll_union(d.funnel_sessions, EXCLUDED.funnel_sessions)
            $q$, grains[i][2], grains[i][1], sketch, cube);
    END LOOP;

    -- Funnel: re-evaluate every funnel event of the sessions the new rows touch (their other events
    -- may have arrived earlier or may be these very rows), once for both grains. One sort per
    -- session: r1 = first view, r2 = first cart at/after r1, r3 = first checkout at/after r2.
    stmts := stmts || format($q$
        WITH ev AS (
            %1$s
        ), a AS (
            SELECT ev.*, min(ev.event_timestamp) FILTER (WHERE ev.event_name = 'product_view')
                       OVER (PARTITION BY ev.session_id) AS r1
            FROM ev
        ), b AS (
            SELECT a.*, min(a.event_timestamp) FILTER (WHERE a.event_name = 'add_to_cart' AND a.event_timestamp >= a.r1)
                       OVER (PARTITION BY a.session_id) AS r2
            FROM a
        ), c AS (
            SELECT b.*, min(b.event_timestamp) FILTER (WHERE b.event_name = 'begin_checkout' AND b.event_timestamp >= b.r2)
                       OVER (PARTITION BY b.session_id) AS r3
            FROM b
        ), reached AS MATERIALIZED (
            SELECT * FROM c
            WHERE c.event_name = 'product_view'
               OR (c.event_name = 'add_to_cart' AND c.event_timestamp >= c.r1)
               OR (c.event_name = 'begin_checkout' AND c.event_timestamp >= c.r2)
               OR (c.event_name = 'purchase' AND c.event_timestamp >= c.r3)
        ), hourly AS (
            %2$s
        )
        %3$s
        $q$, funnel_events, funnel_inserts[1], funnel_inserts[2]);
    RETURN stmts;
END
$fn$;

CREATE FUNCTION public.dash_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
BEGIN
    INSERT INTO public.dash_pending (event_id) SELECT event_id FROM new_events;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER dash_rollup
    AFTER INSERT ON public.clickstream_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.dash_rollup();

-- Fold up to max_rows queued events into the rollups; returns how many it took (0: nothing queued).
-- Serialised by a transaction-level advisory lock, so concurrent callers queue up behind each other.
CREATE FUNCTION public.dash_rollup_refresh(max_rows integer DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    stmt text;
    taken bigint;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'dash_rollup_refresh: max_rows must be a positive integer (got %)', max_rows;
    END IF;
    PERFORM pg_advisory_xact_lock(1530731121);
    DROP TABLE IF EXISTS pg_temp.dash_batch;
    CREATE TEMP TABLE dash_batch (LIKE public.clickstream_events) ON COMMIT DROP;
    WITH taken_ids AS (
        DELETE FROM public.dash_pending
        WHERE ctid IN (SELECT ctid FROM public.dash_pending LIMIT max_rows)
        RETURNING event_id
    )
    INSERT INTO pg_temp.dash_batch
    SELECT e.* FROM public.clickstream_events AS e WHERE e.event_id IN (SELECT event_id FROM taken_ids);
    GET DIAGNOSTICS taken = ROW_COUNT;
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

-- Recompute every rollup from the events (owner only); empties the queue.
CREATE FUNCTION public.dash_rollup_rebuild() RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
DECLARE
    stmt text;
BEGIN
    PERFORM pg_advisory_xact_lock(1530731121);
    TRUNCATE public.dash_hourly, public.dash_daily, public.dash_product_hourly, public.dash_product_daily,
        public.dash_pending;
    FOREACH stmt IN ARRAY public.dash_rollup_statements('public.clickstream_events') LOOP
        EXECUTE stmt;
    END LOOP;
END
$fn$;

SELECT public.dash_rollup_rebuild();

-- Reader: the rollups, the queue (the page says how many events it still lacks) and the two period
-- functions. Writer: dash_rollup_refresh() only (the
-- trigger and the refresh act for it with their owner's rights).
REVOKE ALL ON public.dash_hourly, public.dash_daily, public.dash_product_hourly, public.dash_product_daily,
    public.dash_pending FROM PUBLIC;
GRANT SELECT ON public.dash_hourly, public.dash_daily, public.dash_product_hourly, public.dash_product_daily,
    public.dash_pending TO clickstream_reader;
REVOKE ALL ON FUNCTION public.dash_rollup(), public.dash_rollup_rebuild(), public.dash_rollup_statements(text),
    public.dash_rollup_refresh(integer),
    public.dash_cells(timestamptz, timestamptz), public.dash_product_cells(timestamptz, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.dash_cells(timestamptz, timestamptz),
    public.dash_product_cells(timestamptz, timestamptz) TO clickstream_reader;
GRANT EXECUTE ON FUNCTION public.dash_rollup_refresh(integer) TO clickstream_writer;
