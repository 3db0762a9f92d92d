-- Issue 15 (identity stitching) and issue 13 (rollup SQL readable as SQL), plus bots out of the KPIs.
--
-- Identity rule (extends V020):
--   session = (client_id, session_id).
--   A session with any event that carries a user_id belongs to that user: ALL its events, the guest
--   events before the login included. A session without any user_id belongs to its client. So a
--   guest who logs in mid-session is one user, and one user on two devices is one user.
--   (A session with two user_ids: each event with a user_id is its own user's; its guest events go
--   to the user of the session's earliest event with a user_id.)
-- The link is kept in dash_session_users (one row per session that has a login), filled by the
-- fold from the events it folds. A login that arrives in a later ETL run than the session's earlier
-- events (late-arriving, or the session spans two runs) relinks them: the refresh recomputes the
-- three identity sketches (users, logged_in_users, guest_visitors) of the hourly cells of the hours
-- holding those earlier events, from the events (nothing counts twice: the sketches are replaced,
-- not merged), then the same sketches of their days from the hourly cells. Sessions, funnel and
-- product cells do not depend on the user and are left alone.
-- Relink window: only the session's events at most 24 h before its login event are relinked by the
-- refresh, which bounds its cost to the hours of the last day of the sessions that log in. Guest
-- events older than that keep counting as their client until the days are rebuilt
-- (CALL dash_rollup_rebuild_by_day(t0, t1) or dash_rollup_rebuild(): both stitch without a window).
--
-- Bots: clickstream_events.is_bot (filled by ingest's enrichment, V030; false for older rows) is a
-- key of every rollup cell, so the dashboard's blocks exclude bots by default (include_bots).
--
-- Readable SQL: the fold is written once as plain SQL statements in dash_fold_batch(), which reads
-- the events to fold from the relation pg_temp.dash_batch: a temp table of queued events (refresh),
-- of one day's events (rebuild by day), or a temp view of all events (full rebuild). Daily cells are
-- rolled up from the batch's hourly cells, so both grains are the same aggregation.
-- dash_rollup_statements() (V005, V020: SQL text built by nested format()) is dropped.
--
-- Privileges are unchanged: the ETL's role calls dash_rollup_refresh() and dw_maintain_partitions()
-- (SECURITY DEFINER) and still cannot read events, links or rollups.

ALTER TABLE public.clickstream_events ADD COLUMN IF NOT EXISTS is_bot boolean NOT NULL DEFAULT false;

-- is_bot becomes a key of every cell (the cells are recomputed at the end of this migration).
ALTER TABLE public.dash_hourly ADD COLUMN is_bot boolean NOT NULL DEFAULT false;
ALTER TABLE public.dash_daily ADD COLUMN is_bot boolean NOT NULL DEFAULT false;
ALTER TABLE public.dash_product_hourly ADD COLUMN is_bot boolean NOT NULL DEFAULT false;
ALTER TABLE public.dash_product_daily ADD COLUMN is_bot boolean NOT NULL DEFAULT false;
DO $$
DECLARE
    c record;
BEGIN
    -- The cell keys of V005 (dash_daily's and the product tables' have generated names).
    FOR c IN
        SELECT conrelid::regclass AS tab, conname
        FROM pg_constraint
        WHERE contype IN ('u', 'p')
          AND conrelid IN ('public.dash_hourly'::regclass, 'public.dash_daily'::regclass,
                           'public.dash_product_hourly'::regclass, 'public.dash_product_daily'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tab, c.conname);
    END LOOP;
END
$$;
ALTER TABLE public.dash_hourly ADD CONSTRAINT dash_hourly_cell UNIQUE NULLS NOT DISTINCT
    (bucket, event_name, category, brand, login_state, identity_source, is_bot);
ALTER TABLE public.dash_daily ADD CONSTRAINT dash_daily_cell UNIQUE NULLS NOT DISTINCT
    (bucket, event_name, category, brand, login_state, identity_source, is_bot);
ALTER TABLE public.dash_product_hourly ADD CONSTRAINT dash_product_hourly_pkey
    PRIMARY KEY (bucket, product_id, category, brand, is_bot);
ALTER TABLE public.dash_product_daily ADD CONSTRAINT dash_product_daily_pkey
    PRIMARY KEY (bucket, product_id, category, brand, is_bot);
COMMENT ON COLUMN public.dash_hourly.users IS
    'Distinct people (V022): ''u:'' || the user the event belongs to (its user_id, else its session''s), else ''c:'' || client_id';
COMMENT ON COLUMN public.dash_hourly.logged_in_users IS 'Distinct users the events belong to (V022: guest events of a session with a login included)';
COMMENT ON COLUMN public.dash_hourly.guest_visitors IS 'Distinct client_id of events of sessions without any user_id (V022)';

-- Session -> user: the sessions that have a login. login_at = the earliest event with a user_id;
-- user_id = that event's (ties: the smallest user_id), so the link does not depend on load order.
CREATE TABLE public.dash_session_users (
    client_id text NOT NULL,
    session_id text NOT NULL,
    user_id text NOT NULL,
    login_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, session_id)
);
CREATE INDEX dash_session_users_user_idx ON public.dash_session_users (user_id);
CREATE INDEX dash_session_users_login_idx ON public.dash_session_users (login_at);
COMMENT ON TABLE public.dash_session_users IS
    'Identity stitching (V022): the user each session with a login belongs to, kept by the rollup fold.';
REVOKE ALL ON public.dash_session_users FROM PUBLIC;

DROP FUNCTION public.dash_rollup_statements(text);

-- The session key of the sketches: (client_id, session_id), length-prefixed so that no two
-- different pairs hash the same text (V020).
CREATE FUNCTION public.dash_session_key(client_id text, session_id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN length(client_id) || ':' || client_id || session_id;

-- The person key of the users sketch: the user the event belongs to, else its client.
CREATE FUNCTION public.dash_person_key(user_id text, client_id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce('u:' || user_id, 'c:' || client_id);

-- Fold the events of pg_temp.dash_batch into the rollups (caller: the refresh, the rebuilds, which
-- hold the rollup lock). whole = the batch is every event (full rebuild, links and cells emptied
-- first): the funnel then reads all funnel events, and nothing needs relinking.
CREATE FUNCTION public.dash_fold_batch(whole boolean) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
BEGIN
    -- 1. Links: the batch's logins; the sessions whose link is new or changed are relinked (step 5).
    DROP TABLE IF EXISTS pg_temp.dash_relinked;
    CREATE TEMP TABLE dash_relinked (client_id text, session_id text, login_at timestamptz) ON COMMIT DROP;
    WITH logins AS (
        SELECT DISTINCT ON (b.client_id, b.session_id) b.client_id, b.session_id, b.user_id, b.event_timestamp
        FROM pg_temp.dash_batch AS b
        WHERE b.user_id IS NOT NULL
        ORDER BY b.client_id, b.session_id, b.event_timestamp, b.user_id
    ), linked AS (
        INSERT INTO public.dash_session_users AS s (client_id, session_id, user_id, login_at)
        SELECT l.client_id, l.session_id, l.user_id, l.event_timestamp FROM logins AS l
        ON CONFLICT (client_id, session_id) DO UPDATE
            SET user_id = EXCLUDED.user_id, login_at = EXCLUDED.login_at
            WHERE (EXCLUDED.login_at, EXCLUDED.user_id) < (s.login_at, s.user_id)
        RETURNING s.client_id, s.session_id, s.login_at
    )
    INSERT INTO pg_temp.dash_relinked SELECT * FROM linked;

    -- 2. The batch's hourly cells. Each cell also exists with category and/or brand rolled up
    --    (NULL = all), so that a query without those filters reads a few dense sketches.
    DROP TABLE IF EXISTS pg_temp.dash_batch_cells;
    CREATE TEMP TABLE dash_batch_cells (LIKE public.dash_hourly) ON COMMIT DROP;
    INSERT INTO pg_temp.dash_batch_cells
        (bucket, event_name, category, brand, login_state, identity_source, is_bot,
         events, revenue, sessions, users, logged_in_users, guest_visitors, first_visit_clients, clients,
         funnel_sessions)
    SELECT date_bin('1 hour', e.event_timestamp, timestamptz '2000-01-01 00:00:00+00'),
           e.event_name,
           coalesce(e.context_product_category, ''),
           coalesce(e.context_product_brand, ''),
           coalesce(e.user_login_state, ''),
           coalesce(e.identity_source, ''),
           e.is_bot,
           count(*),
           coalesce(sum(coalesce(e.context_product_discount_price, e.context_product_price))
               FILTER (WHERE e.event_name = 'purchase'), 0),
           hll_add_agg(hll_hash_text(public.dash_session_key(e.client_id, e.session_id)), 12, 5, 8192, 1),
           hll_add_agg(hll_hash_text(public.dash_person_key(coalesce(e.user_id, s.user_id), e.client_id)), 12, 5, 8192, 1),
           coalesce(hll_add_agg(hll_hash_text(coalesce(e.user_id, s.user_id)), 12, 5, 8192, 1)
               FILTER (WHERE coalesce(e.user_id, s.user_id) IS NOT NULL), hll_empty(12, 5, 8192, 1)),
           coalesce(hll_add_agg(hll_hash_text(e.client_id), 12, 5, 8192, 1)
               FILTER (WHERE coalesce(e.user_id, s.user_id) IS NULL), hll_empty(12, 5, 8192, 1)),
           coalesce(hll_add_agg(hll_hash_text(e.client_id), 12, 5, 8192, 1)
               FILTER (WHERE e.is_first_visit), hll_empty(12, 5, 8192, 1)),
           hll_add_agg(hll_hash_text(e.client_id), 12, 5, 8192, 1),
           hll_empty(12, 5, 8192, 1)
    FROM pg_temp.dash_batch AS e
    LEFT JOIN public.dash_session_users AS s ON s.client_id = e.client_id AND s.session_id = e.session_id
    GROUP BY 1, 2, 5, 6, 7, GROUPING SETS ((3, 4), (3), (4), ());

    -- 3. Funnel: a step-k event counts when its session reached step k-1 before it (product_view ->
    --    add_to_cart -> begin_checkout -> purchase, in time order, any product). Every funnel event
    --    of the batch's sessions is re-evaluated (their other events may have arrived earlier):
    --    r1 = first view, r2 = first cart at/after r1, r3 = first checkout at/after r2. Merging a
    --    session into a cell that already has it changes nothing (hll_union is idempotent).
    DROP TABLE IF EXISTS pg_temp.dash_funnel_events;
    IF whole THEN
        CREATE TEMP VIEW dash_funnel_events AS
            SELECT * FROM public.clickstream_events
            WHERE event_name IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase');
    ELSE
        CREATE TEMP TABLE dash_funnel_events ON COMMIT DROP AS
            SELECT e.*
            FROM public.clickstream_events AS e
            -- session_id IN (...) first: it lets the planner use clickstream_events_session_ts_idx.
            WHERE e.event_name IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase')
              AND e.session_id IN (
                  SELECT b.session_id FROM pg_temp.dash_batch AS b
                  WHERE b.event_name IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase'))
              AND (e.client_id, e.session_id) IN (
                  SELECT b.client_id, b.session_id FROM pg_temp.dash_batch AS b
                  WHERE b.event_name IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase'));
    END IF;
    WITH a AS (
        SELECT f.*, min(f.event_timestamp) FILTER (WHERE f.event_name = 'product_view')
                   OVER (PARTITION BY f.client_id, f.session_id) AS r1
        FROM pg_temp.dash_funnel_events AS f
    ), b AS (
        SELECT a.*, min(a.event_timestamp) FILTER (WHERE a.event_name = 'add_to_cart' AND a.event_timestamp >= a.r1)
                   OVER (PARTITION BY a.client_id, a.session_id) AS r2
        FROM a
    ), c AS (
        SELECT b.*, min(b.event_timestamp) FILTER (WHERE b.event_name = 'begin_checkout' AND b.event_timestamp >= b.r2)
                   OVER (PARTITION BY b.client_id, b.session_id) AS r3
        FROM b
    ), reached AS (
        SELECT * FROM c
        WHERE c.event_name = 'product_view'
           OR (c.event_name = 'add_to_cart' AND c.event_timestamp >= c.r1)
           OR (c.event_name = 'begin_checkout' AND c.event_timestamp >= c.r2)
           OR (c.event_name = 'purchase' AND c.event_timestamp >= c.r3)
    )
    INSERT INTO pg_temp.dash_batch_cells
        (bucket, event_name, category, brand, login_state, identity_source, is_bot,
         events, revenue, sessions, users, logged_in_users, guest_visitors, first_visit_clients, clients,
         funnel_sessions)
    SELECT date_bin('1 hour', e.event_timestamp, timestamptz '2000-01-01 00:00:00+00'),
           e.event_name,
           coalesce(e.context_product_category, ''),
           coalesce(e.context_product_brand, ''),
           coalesce(e.user_login_state, ''),
           coalesce(e.identity_source, ''),
           e.is_bot,
           0, 0,
           hll_empty(12, 5, 8192, 1), hll_empty(12, 5, 8192, 1), hll_empty(12, 5, 8192, 1),
           hll_empty(12, 5, 8192, 1), hll_empty(12, 5, 8192, 1), hll_empty(12, 5, 8192, 1),
           hll_add_agg(hll_hash_text(public.dash_session_key(e.client_id, e.session_id)), 12, 5, 8192, 1)
    FROM reached AS e
    GROUP BY 1, 2, 5, 6, 7, GROUPING SETS ((3, 4), (3), (4), ());
    IF whole THEN
        DROP VIEW pg_temp.dash_funnel_events;
    ELSE
        DROP TABLE pg_temp.dash_funnel_events;
    END IF;

    -- 4. Merge the batch's cells into the hourly cells, and the same cells per UTC day.
    INSERT INTO public.dash_hourly AS d
        (bucket, event_name, category, brand, login_state, identity_source, is_bot,
         events, revenue, sessions, users, logged_in_users, guest_visitors, first_visit_clients, clients,
         funnel_sessions)
    SELECT c.bucket, c.event_name, c.category, c.brand, c.login_state, c.identity_source, c.is_bot,
           sum(c.events), sum(c.revenue),
           hll_union_agg(c.sessions), hll_union_agg(c.users), hll_union_agg(c.logged_in_users),
           hll_union_agg(c.guest_visitors), hll_union_agg(c.first_visit_clients), hll_union_agg(c.clients),
           hll_union_agg(c.funnel_sessions)
    FROM pg_temp.dash_batch_cells AS c
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (bucket, event_name, category, brand, login_state, identity_source, is_bot) DO UPDATE SET
        events = d.events + EXCLUDED.events,
        revenue = d.revenue + EXCLUDED.revenue,
        sessions = hll_union(d.sessions, EXCLUDED.sessions),
        users = hll_union(d.users, EXCLUDED.users),
        logged_in_users = hll_union(d.logged_in_users, EXCLUDED.logged_in_users),
        guest_visitors = hll_union(d.guest_visitors, EXCLUDED.guest_visitors),
        first_visit_clients = hll_union(d.first_visit_clients, EXCLUDED.first_visit_clients),
        clients = hll_union(d.clients, EXCLUDED.clients),
        funnel_sessions = hll_union(d.funnel_sessions, EXCLUDED.funnel_sessions);

    INSERT INTO public.dash_daily AS d
        (bucket, event_name, category, brand, login_state, identity_source, is_bot,
         events, revenue, sessions, users, logged_in_users, guest_visitors, first_visit_clients, clients,
         funnel_sessions)
    SELECT public.dash_day_floor(c.bucket), c.event_name, c.category, c.brand, c.login_state,
           c.identity_source, c.is_bot,
           sum(c.events), sum(c.revenue),
           hll_union_agg(c.sessions), hll_union_agg(c.users), hll_union_agg(c.logged_in_users),
           hll_union_agg(c.guest_visitors), hll_union_agg(c.first_visit_clients), hll_union_agg(c.clients),
           hll_union_agg(c.funnel_sessions)
    FROM pg_temp.dash_batch_cells AS c
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (bucket, event_name, category, brand, login_state, identity_source, is_bot) DO UPDATE SET
        events = d.events + EXCLUDED.events,
        revenue = d.revenue + EXCLUDED.revenue,
        sessions = hll_union(d.sessions, EXCLUDED.sessions),
        users = hll_union(d.users, EXCLUDED.users),
        logged_in_users = hll_union(d.logged_in_users, EXCLUDED.logged_in_users),
        guest_visitors = hll_union(d.guest_visitors, EXCLUDED.guest_visitors),
        first_visit_clients = hll_union(d.first_visit_clients, EXCLUDED.first_visit_clients),
        clients = hll_union(d.clients, EXCLUDED.clients),
        funnel_sessions = hll_union(d.funnel_sessions, EXCLUDED.funnel_sessions);
    DROP TABLE pg_temp.dash_batch_cells;

    -- Product cells: additive counts per product, hour and day.
    DROP TABLE IF EXISTS pg_temp.dash_batch_products;
    CREATE TEMP TABLE dash_batch_products ON COMMIT DROP AS
    SELECT date_bin('1 hour', e.event_timestamp, timestamptz '2000-01-01 00:00:00+00') AS bucket,
           e.context_product_id AS product_id,
           coalesce(e.context_product_category, '') AS category,
           coalesce(e.context_product_brand, '') AS brand,
           e.is_bot,
           max(e.context_product_name) AS product_name,
           count(*) AS events,
           count(*) FILTER (WHERE e.event_name = 'product_view') AS views,
           count(*) FILTER (WHERE e.event_name = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE e.event_name = 'begin_checkout') AS checkouts,
           count(*) FILTER (WHERE e.event_name = 'purchase') AS purchases,
           coalesce(sum(coalesce(e.context_product_discount_price, e.context_product_price))
               FILTER (WHERE e.event_name = 'purchase'), 0) AS revenue
    FROM pg_temp.dash_batch AS e
    WHERE e.context_product_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5;

    INSERT INTO public.dash_product_hourly AS d
        (bucket, product_id, category, brand, is_bot, product_name,
         events, views, add_to_carts, checkouts, purchases, revenue)
    SELECT p.bucket, p.product_id, p.category, p.brand, p.is_bot, p.product_name,
           p.events, p.views, p.add_to_carts, p.checkouts, p.purchases, p.revenue
    FROM pg_temp.dash_batch_products AS p
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket, product_id, category, brand, is_bot) DO UPDATE SET
        product_name = coalesce(EXCLUDED.product_name, d.product_name),
        events = d.events + EXCLUDED.events,
        views = d.views + EXCLUDED.views,
        add_to_carts = d.add_to_carts + EXCLUDED.add_to_carts,
        checkouts = d.checkouts + EXCLUDED.checkouts,
        purchases = d.purchases + EXCLUDED.purchases,
        revenue = d.revenue + EXCLUDED.revenue;

    INSERT INTO public.dash_product_daily AS d
        (bucket, product_id, category, brand, is_bot, product_name,
         events, views, add_to_carts, checkouts, purchases, revenue)
    SELECT public.dash_day_floor(p.bucket), p.product_id, p.category, p.brand, p.is_bot, max(p.product_name),
           sum(p.events), sum(p.views), sum(p.add_to_carts), sum(p.checkouts), sum(p.purchases), sum(p.revenue)
    FROM pg_temp.dash_batch_products AS p
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket, product_id, category, brand, is_bot) DO UPDATE SET
        product_name = coalesce(EXCLUDED.product_name, d.product_name),
        events = d.events + EXCLUDED.events,
        views = d.views + EXCLUDED.views,
        add_to_carts = d.add_to_carts + EXCLUDED.add_to_carts,
        checkouts = d.checkouts + EXCLUDED.checkouts,
        purchases = d.purchases + EXCLUDED.purchases,
        revenue = d.revenue + EXCLUDED.revenue;
    DROP TABLE pg_temp.dash_batch_products;

    -- 5. Relink: the sessions that got (or changed) their user in this batch had events folded
    --    earlier as their client. Recompute the identity sketches of those events' hours (within
    --    the relink window) from the events already folded, then of their days from the hours.
    IF NOT whole THEN
        PERFORM public.dash_relink(interval '24 hours');
    END IF;
    DROP TABLE pg_temp.dash_relinked;
END
$fn$;

-- Step 5 of dash_fold_batch(): the sessions in pg_temp.dash_relinked. Only their guest events
-- (no user_id of their own) already folded change owner: those in the batch were just folded with
-- the new link, those still queued will be by their own fold.
-- (jit off: a few hours' events, read through indexes; compiling its plans costs more than running them.)
CREATE FUNCTION public.dash_relink(relink_window interval) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp SET jit = off AS $fn$
BEGIN
    ANALYZE pg_temp.dash_relinked;
    DROP TABLE IF EXISTS pg_temp.dash_relink_hours;
    CREATE TEMP TABLE dash_relink_hours ON COMMIT DROP AS
        SELECT DISTINCT date_bin('1 hour', e.event_timestamp, timestamptz '2000-01-01 00:00:00+00') AS bucket
        FROM pg_temp.dash_relinked AS r
        JOIN public.clickstream_events AS e ON e.session_id = r.session_id AND e.client_id = r.client_id
        WHERE e.user_id IS NULL
          AND e.event_timestamp >= r.login_at - relink_window
          -- NOT IN (a hashed subplan whatever the estimates; event ids are never NULL).
          AND e.event_id NOT IN (SELECT b.event_id FROM pg_temp.dash_batch AS b)
          AND e.event_id NOT IN (SELECT p.event_id FROM public.dash_pending AS p);
    IF NOT EXISTS (SELECT 1 FROM pg_temp.dash_relink_hours) THEN
        DROP TABLE pg_temp.dash_relink_hours;
        RETURN;
    END IF;
    ANALYZE pg_temp.dash_relink_hours;

    -- The hours' identity sketches, recomputed from their folded events (as in step 2). LATERAL
    -- with OFFSET 0 (not flattened): one index range per hour, whatever the statistics of freshly
    -- loaded partitions say.
    DROP TABLE IF EXISTS pg_temp.dash_relink_cells;
    CREATE TEMP TABLE dash_relink_cells ON COMMIT DROP AS
    SELECT date_bin('1 hour', e.event_timestamp, timestamptz '2000-01-01 00:00:00+00') AS bucket,
           e.event_name,
           coalesce(e.context_product_category, '') AS category,
           coalesce(e.context_product_brand, '') AS brand,
           coalesce(e.user_login_state, '') AS login_state,
           coalesce(e.identity_source, '') AS identity_source,
           e.is_bot,
           hll_add_agg(hll_hash_text(public.dash_person_key(coalesce(e.user_id, s.user_id), e.client_id)),
                       12, 5, 8192, 1) AS users,
           coalesce(hll_add_agg(hll_hash_text(coalesce(e.user_id, s.user_id)), 12, 5, 8192, 1)
               FILTER (WHERE coalesce(e.user_id, s.user_id) IS NOT NULL), hll_empty(12, 5, 8192, 1))
               AS logged_in_users,
           coalesce(hll_add_agg(hll_hash_text(e.client_id), 12, 5, 8192, 1)
               FILTER (WHERE coalesce(e.user_id, s.user_id) IS NULL), hll_empty(12, 5, 8192, 1))
               AS guest_visitors
    FROM pg_temp.dash_relink_hours AS h
    CROSS JOIN LATERAL (
        SELECT * FROM public.clickstream_events AS x
        WHERE x.event_timestamp >= h.bucket AND x.event_timestamp < h.bucket + interval '1 hour'
        OFFSET 0
    ) AS e
    LEFT JOIN public.dash_session_users AS s ON s.client_id = e.client_id AND s.session_id = e.session_id
    WHERE e.event_id NOT IN (SELECT p.event_id FROM public.dash_pending AS p)
    GROUP BY 1, 2, 5, 6, 7, GROUPING SETS ((3, 4), (3), (4), ());
    ANALYZE pg_temp.dash_relink_cells;

    UPDATE public.dash_hourly AS d
    SET users = f.users, logged_in_users = f.logged_in_users, guest_visitors = f.guest_visitors
    FROM pg_temp.dash_relink_cells AS f
    WHERE d.bucket = f.bucket AND d.event_name = f.event_name
      AND d.category IS NOT DISTINCT FROM f.category AND d.brand IS NOT DISTINCT FROM f.brand
      AND d.login_state = f.login_state AND d.identity_source = f.identity_source AND d.is_bot = f.is_bot;

    -- Their days: the union of the day's hourly sketches (the daily cells are that by construction).
    DROP TABLE IF EXISTS pg_temp.dash_relink_days;
    CREATE TEMP TABLE dash_relink_days ON COMMIT DROP AS
    SELECT y.day AS bucket, c.event_name, c.category, c.brand, c.login_state, c.identity_source, c.is_bot,
           hll_union_agg(c.users) AS users,
           hll_union_agg(c.logged_in_users) AS logged_in_users,
           hll_union_agg(c.guest_visitors) AS guest_visitors
    FROM (SELECT DISTINCT public.dash_day_floor(h.bucket) AS day FROM pg_temp.dash_relink_hours AS h) AS y
    JOIN public.dash_hourly AS c ON c.bucket >= y.day AND c.bucket < y.day + interval '24 hours'
    GROUP BY 1, 2, 3, 4, 5, 6, 7;
    ANALYZE pg_temp.dash_relink_days;

    UPDATE public.dash_daily AS d
    SET users = f.users, logged_in_users = f.logged_in_users, guest_visitors = f.guest_visitors
    FROM pg_temp.dash_relink_days AS f
    WHERE d.bucket = f.bucket AND d.event_name = f.event_name
      AND d.category IS NOT DISTINCT FROM f.category AND d.brand IS NOT DISTINCT FROM f.brand
      AND d.login_state = f.login_state AND d.identity_source = f.identity_source AND d.is_bot = f.is_bot;
    DROP TABLE pg_temp.dash_relink_cells;
    DROP TABLE pg_temp.dash_relink_days;
    DROP TABLE pg_temp.dash_relink_hours;
END
$fn$;

-- Fold up to max_rows queued events into the rollups; returns how many it took (0: nothing queued).
-- Serialised by a transaction-level advisory lock, so concurrent callers queue up behind each other.
CREATE OR REPLACE FUNCTION public.dash_rollup_refresh(max_rows integer DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
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
        PERFORM public.dash_fold_batch(false);
    END IF;
    DROP TABLE pg_temp.dash_batch;
    RETURN taken;
END
$fn$;

-- Recompute every rollup and link from the events (owner only); empties the queue.
CREATE OR REPLACE FUNCTION public.dash_rollup_rebuild() RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1530731121);
    TRUNCATE public.dash_hourly, public.dash_daily, public.dash_product_hourly, public.dash_product_daily,
        public.dash_pending, public.dash_session_users;
    DROP TABLE IF EXISTS pg_temp.dash_batch;
    CREATE TEMP VIEW dash_batch AS SELECT * FROM public.clickstream_events;
    PERFORM public.dash_fold_batch(true);
    DROP VIEW pg_temp.dash_batch;
END
$fn$;

-- Recompute the cells of the UTC days overlapping [t0, t1) in the caller's transaction; returns the
-- number of events folded in. Owner only. Links learnt from these days' events relink the sessions'
-- events of other days (within the relink window), as a refresh does.
CREATE OR REPLACE FUNCTION public.dash_rollup_rebuild_period(t0 timestamptz, t1 timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    first_day timestamptz := public.dash_day_floor(t0);
    end_day timestamptz := public.dash_day_ceil(t1);
    taken bigint;
BEGIN
    IF t0 IS NULL OR t1 IS NULL OR t1 <= t0 THEN
        RAISE EXCEPTION 'dash_rollup_rebuild_period: need t0 < t1 (got % and %)', t0, t1;
    END IF;
    PERFORM pg_advisory_xact_lock(1530731121);

    DROP TABLE IF EXISTS pg_temp.dash_batch;
    CREATE TEMP TABLE dash_batch ON COMMIT DROP AS
        SELECT *
        FROM public.clickstream_events
        WHERE event_timestamp >= first_day AND event_timestamp < end_day;
    GET DIAGNOSTICS taken = ROW_COUNT;

    DELETE FROM public.dash_pending
    WHERE event_id IN (SELECT event_id FROM pg_temp.dash_batch);

    DELETE FROM public.dash_hourly WHERE bucket >= first_day AND bucket < end_day;
    DELETE FROM public.dash_daily WHERE bucket >= first_day AND bucket < end_day;
    DELETE FROM public.dash_product_hourly WHERE bucket >= first_day AND bucket < end_day;
    DELETE FROM public.dash_product_daily WHERE bucket >= first_day AND bucket < end_day;

    IF taken > 0 THEN
        ANALYZE pg_temp.dash_batch;
        PERFORM public.dash_fold_batch(false);
    END IF;
    DROP TABLE pg_temp.dash_batch;
    RETURN taken;
END
$fn$;

-- Erasure (V010) and retention (V009) also forget the links of what they delete: the V009/V010
-- functions keep their job under a new name, these wrappers add the links. Erasing a user unlinks
-- its sessions before their days are rebuilt, so their remaining guest events count as the client.
ALTER FUNCTION public.dw_erase_subject(text, text) RENAME TO dw_erase_subject_events;
CREATE FUNCTION public.dw_erase_subject(kind text, subject text)
RETURNS TABLE (erasure_id bigint, source_key text)
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(1530731121);  -- the rollup lock first: no refresh relinks meanwhile
    DELETE FROM public.dash_session_users AS s
    WHERE (kind = 'user_id' AND s.user_id = subject) OR (kind = 'client_id' AND s.client_id = subject);
    RETURN QUERY SELECT * FROM public.dw_erase_subject_events(kind, subject);
END
$fn$;

ALTER FUNCTION public.dw_maintain_partitions() RENAME TO dw_maintain_partitions_events;
CREATE FUNCTION public.dw_maintain_partitions() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET client_min_messages = warning AS $fn$
DECLARE
    done jsonb := public.dw_maintain_partitions_events();
BEGIN
    IF done ->> 'cutoff' IS NOT NULL THEN
        DELETE FROM public.dash_session_users WHERE login_at < (done ->> 'cutoff')::date;
    END IF;
    RETURN done;
END
$fn$;

REVOKE ALL ON FUNCTION public.dash_fold_batch(boolean), public.dash_relink(interval),
    public.dw_erase_subject_events(text, text), public.dw_erase_subject(text, text),
    public.dw_maintain_partitions_events(), public.dw_maintain_partitions()
    FROM PUBLIC;
REVOKE ALL ON FUNCTION public.dw_maintain_partitions_events() FROM clickstream_writer;
GRANT EXECUTE ON FUNCTION public.dw_maintain_partitions() TO clickstream_writer;

SELECT public.dash_rollup_rebuild();
