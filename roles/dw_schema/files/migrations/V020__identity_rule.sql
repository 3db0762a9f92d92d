-- Issue 15: one identity rule for every count the dashboard shows.
--   session   = (client_id, session_id): two clients that happen to use the same session_id string
--               are two sessions (V005 keyed sessions and the funnel by session_id alone).
--   user      = user_id when the event has one, else the client (a guest is one client).
--   logged-in = derived from user_id (ingest rejects a user_login_state that contradicts it).
-- Only dash_rollup_statements() changes: the refresh (V005), the full rebuild (V005) and the
-- rebuild by day (V008) all run its statements, so every path that computes cells follows the
-- rule. The cells are then recomputed once under it.

CREATE OR REPLACE FUNCTION public.dash_rollup_statements(source text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    grains CONSTANT text[][] := ARRAY[['1 hour', 'hourly'], ['1 day', 'daily']];
    sketch CONSTANT text := '12, 5, 8192, 1';
    -- Every cell also exists with category and/or brand rolled up (NULL = all), so that a query
    -- without those filters reads a few dense sketches instead of hundreds of small ones.
    cube CONSTANT text := '1, 2, 5, 6, GROUPING SETS ('
        '(coalesce(e.context_product_category, ''''), coalesce(e.context_product_brand, '''')), '
        '(coalesce(e.context_product_category, '''')), (coalesce(e.context_product_brand, '''')), ())';
    -- A session is (client_id, session_id): the contract lets each client choose its session ids.
    -- Length-prefixed so that no two different pairs hash the same text.
    session_key CONSTANT text := $$length(e.client_id) || ':' || e.client_id || e.session_id$$;
    funnel_names CONSTANT text := $$('product_view', 'add_to_cart', 'begin_checkout', 'purchase')$$;
    -- The funnel events of the sessions in `source` (all of them for a rebuild).
    funnel_events CONSTANT text := CASE WHEN source = 'public.clickstream_events'
        THEN format('SELECT * FROM public.clickstream_events WHERE event_name IN %s', funnel_names)
        -- session_id IN (...) first: it lets the planner use clickstream_events_session_ts_idx.
        ELSE format('SELECT e.* FROM public.clickstream_events AS e WHERE e.event_name IN %1$s AND e.session_id IN '
                    '(SELECT DISTINCT n.session_id FROM %2$s AS n WHERE n.event_name IN %1$s) '
                    'AND (e.client_id, e.session_id) IN '
                    '(SELECT n.client_id, n.session_id FROM %2$s AS n WHERE n.event_name IN %1$s)', funnel_names, source)
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
                   hll_add_agg(hll_hash_text(%6$s), %4$s),
                   hll_add_agg(hll_hash_text(coalesce('u:' || e.user_id, 'c:' || e.client_id)), %4$s),
                   coalesce(hll_add_agg(hll_hash_text(e.user_id), %4$s)
                       FILTER (WHERE e.user_id IS NOT NULL), hll_empty(%4$s)),
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
            $q$, source, grains[i][2], grains[i][1], sketch, cube, session_key);

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
                   hll_add_agg(hll_hash_text(%5$s), %3$s)
            FROM reached AS e
            GROUP BY %4$s
            ON CONFLICT (bucket, event_name, category, brand, login_state, identity_source) DO UPDATE SET
                funnel_sessions = hll_union(d.funnel_sessions, EXCLUDED.funnel_sessions)
            $q$, grains[i][2], grains[i][1], sketch, cube, session_key);
    END LOOP;

    -- Funnel: re-evaluate every funnel event of the sessions the new rows touch (their other events
    -- may have arrived earlier or may be these very rows), once for both grains. One sort per
    -- session: r1 = first view, r2 = first cart at/after r1, r3 = first checkout at/after r2.
    stmts := stmts || format($q$
        WITH ev AS (
            %1$s
        ), a AS (
            SELECT ev.*, min(ev.event_timestamp) FILTER (WHERE ev.event_name = 'product_view')
                       OVER (PARTITION BY ev.client_id, ev.session_id) AS r1
            FROM ev
        ), b AS (
            SELECT a.*, min(a.event_timestamp) FILTER (WHERE a.event_name = 'add_to_cart' AND a.event_timestamp >= a.r1)
                       OVER (PARTITION BY a.client_id, a.session_id) AS r2
            FROM a
        ), c AS (
            SELECT b.*, min(b.event_timestamp) FILTER (WHERE b.event_name = 'begin_checkout' AND b.event_timestamp >= b.r2)
                       OVER (PARTITION BY b.client_id, b.session_id) AS r3
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

SELECT public.dash_rollup_rebuild();
