-- Every figure of the sbw_dashboard app, computed in PostgreSQL (aggregates only, never raw rows).
-- The ONE copy of the dashboard's SQL: R/queries.R runs these blocks and
-- benchmarks/bench_dashboard.py times the very same text.
--
-- The figures come from the rollups of migration V005 (dash_cells / dash_product_cells: daily
-- cells for the whole UTC days of the period, hourly cells for its ends), never from a scan of
-- clickstream_events: sums are exact; distinct counts (sessions, users, visitors) are exact up to
-- 8,192 per figure and HyperLogLog estimates (~1.6 %) above. Sessions are (client_id, session_id);
-- users follow the identity stitching of V022 (a session with a login is its user's, guest events
-- included; a session without one is its client's); bots are out unless include_bots is 'true'. In the cells, category/brand NULL
-- means "all" and '' means "no product"; the filters are written so that, with the values bound,
-- they fold to `category IS NULL` / `category = 'x'` and use the rollups' filter index.
--
-- Format: each block starts with `-- name: <query>` and `-- params: <p1> <p2> ...`; the statement
-- uses $1, $2 ... in that order. Values are always bound with PQexecParams (never pasted into SQL).
-- Common parameters:
--   date_from, date_to  first and last day of the period (YYYY-MM-DD, both included)
--   timezone            IANA name the days and hours are counted in (e.g. UTC, Asia/Singapore)
--   category, brand     product category / brand; '' = all
--   event_name          event name; '' = all
--   include_bots        'true' / 'false': whether events flagged is_bot count (V022; default 'false')
-- Unit of a purchase: one purchase event = one unit at the discount price when there is one, else price.

-- name: kpis
-- params: date_from date_to timezone category brand event_name include_bots
-- estimated: true when a distinct count is above the exact range of the sketches.
SELECT k.*,
       round(k.purchase_sessions::numeric / nullif(k.sessions, 0), 4) AS conversion_rate,
       k.sessions > 8192 OR k.users > 8192 AS estimated
FROM (
    SELECT coalesce(sum(c.events), 0)::bigint AS events,
           coalesce(round(hll_cardinality(hll_union_agg(c.sessions))), 0)::bigint AS sessions,
           coalesce(round(hll_cardinality(hll_union_agg(c.users))), 0)::bigint AS users,
           coalesce(round(hll_cardinality(hll_union_agg(c.logged_in_users))), 0)::bigint AS logged_in_users,
           coalesce(round(hll_cardinality(hll_union_agg(c.guest_visitors))), 0)::bigint AS guest_visitors,
           coalesce(round(hll_cardinality(hll_union_agg(c.first_visit_clients))), 0)::bigint AS first_visits,
           coalesce(sum(c.events) FILTER (WHERE c.event_name = 'product_view'), 0)::bigint AS product_views,
           coalesce(sum(c.events) FILTER (WHERE c.event_name = 'add_to_cart'), 0)::bigint AS add_to_carts,
           coalesce(sum(c.events) FILTER (WHERE c.event_name = 'purchase'), 0)::bigint AS purchases,
           coalesce(round(hll_cardinality(hll_union_agg(c.sessions) FILTER (WHERE c.event_name = 'purchase'))), 0)::bigint AS purchase_sessions,
           coalesce(sum(c.revenue), 0) AS revenue
    FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE (($4::text = '' AND c.category IS NULL) OR c.category = nullif($4::text, ''))
      AND (($5::text = '' AND c.brand IS NULL) OR c.brand = nullif($5::text, ''))
      AND ($6::text = '' OR c.event_name = $6::text)
      AND ($7::boolean OR NOT c.is_bot)
) AS k;

-- name: events_over_time
-- params: date_from date_to timezone category brand event_name granularity include_bots
-- Hourly cells only: a local hour or day is a whole number of UTC hours.
SELECT to_char(date_trunc($7::text, c.bucket AT TIME ZONE $3::text), 'YYYY-MM-DD"T"HH24:MI') AS bucket,
       c.event_name,
       sum(c.events)::bigint AS events
FROM dash_hourly AS c
WHERE c.bucket >= ($1::date)::timestamp AT TIME ZONE $3::text
  AND c.bucket < ($2::date + 1)::timestamp AT TIME ZONE $3::text
  AND (($4::text = '' AND c.category IS NULL) OR c.category = nullif($4::text, ''))
  AND (($5::text = '' AND c.brand IS NULL) OR c.brand = nullif($5::text, ''))
  AND ($6::text = '' OR c.event_name = $6::text)
  AND ($8::boolean OR NOT c.is_bot)
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: funnel
-- params: date_from date_to timezone category brand include_bots
-- Sessions per step: a session counts at a step when it has an event of that step in the period
-- (for the chosen category/brand) after having reached the previous step in time order (any
-- product, any time): product_view -> add_to_cart -> begin_checkout -> purchase. The event-name
-- filter does not apply (the funnel spans four names).
WITH c AS (
    SELECT coalesce(round(hll_cardinality(hll_union_agg(c.funnel_sessions) FILTER (WHERE c.event_name = 'product_view'))), 0)::bigint AS s1,
           coalesce(round(hll_cardinality(hll_union_agg(c.funnel_sessions) FILTER (WHERE c.event_name = 'add_to_cart'))), 0)::bigint AS s2,
           coalesce(round(hll_cardinality(hll_union_agg(c.funnel_sessions) FILTER (WHERE c.event_name = 'begin_checkout'))), 0)::bigint AS s3,
           coalesce(round(hll_cardinality(hll_union_agg(c.funnel_sessions) FILTER (WHERE c.event_name = 'purchase'))), 0)::bigint AS s4
    FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE (($4::text = '' AND c.category IS NULL) OR c.category = nullif($4::text, ''))
      AND (($5::text = '' AND c.brand IS NULL) OR c.brand = nullif($5::text, ''))
      AND c.event_name IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase')
      AND ($6::boolean OR NOT c.is_bot)
)
SELECT v.step, v.step_name, v.sessions,
       round(v.sessions::numeric / nullif(v.previous, 0), 4) AS rate_from_previous,
       round(v.sessions::numeric / nullif(c.s1, 0), 4) AS rate_from_first
FROM c
CROSS JOIN LATERAL (VALUES
    (1, 'product_view', c.s1, c.s1),
    (2, 'add_to_cart', c.s2, c.s1),
    (3, 'begin_checkout', c.s3, c.s2),
    (4, 'purchase', c.s4, c.s3)
) AS v (step, step_name, sessions, previous)
ORDER BY v.step;

-- name: top_products
-- params: date_from date_to timezone category brand event_name order_by row_limit include_bots
-- With an event-name filter, only that event's metric counts and only items that have it are listed.
SELECT * FROM (
    SELECT p.product_id AS product_id,
           max(p.product_name) AS product_name,
           nullif(max(p.category), '') AS category,
           nullif(max(p.brand), '') AS brand,
           CASE WHEN $6::text IN ('', 'product_view') THEN sum(p.views) ELSE 0 END::bigint AS views,
           CASE WHEN $6::text IN ('', 'add_to_cart') THEN sum(p.add_to_carts) ELSE 0 END::bigint AS add_to_carts,
           CASE WHEN $6::text IN ('', 'purchase') THEN sum(p.purchases) ELSE 0 END::bigint AS purchases,
           CASE WHEN $6::text IN ('', 'purchase') THEN sum(p.revenue) ELSE 0 END AS revenue
    FROM dash_product_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS p
    WHERE ($4::text = '' OR p.category = $4::text)
      AND ($5::text = '' OR p.brand = $5::text)
      AND ($9::boolean OR NOT p.is_bot)
    GROUP BY p.product_id
    HAVING sum(CASE $6::text
                   WHEN '' THEN p.events
                   WHEN 'product_view' THEN p.views
                   WHEN 'add_to_cart' THEN p.add_to_carts
                   WHEN 'begin_checkout' THEN p.checkouts
                   WHEN 'purchase' THEN p.purchases
                   ELSE 0
               END) > 0
) AS t
ORDER BY CASE $7::text
             WHEN 'views' THEN t.views::numeric
             WHEN 'add_to_carts' THEN t.add_to_carts::numeric
             WHEN 'purchases' THEN t.purchases::numeric
             ELSE t.revenue
         END DESC,
         t.product_id
LIMIT $8::integer;

-- name: top_categories
-- params: date_from date_to timezone category brand event_name order_by row_limit include_bots
-- With an event-name filter, only that event's metric counts and only items that have it are listed.
SELECT * FROM (
    SELECT p.category AS category,
           count(DISTINCT p.product_id) FILTER (WHERE CASE $6::text
                   WHEN '' THEN p.events
                   WHEN 'product_view' THEN p.views
                   WHEN 'add_to_cart' THEN p.add_to_carts
                   WHEN 'begin_checkout' THEN p.checkouts
                   WHEN 'purchase' THEN p.purchases
                   ELSE 0
               END > 0) AS products,
           CASE WHEN $6::text IN ('', 'product_view') THEN sum(p.views) ELSE 0 END::bigint AS views,
           CASE WHEN $6::text IN ('', 'add_to_cart') THEN sum(p.add_to_carts) ELSE 0 END::bigint AS add_to_carts,
           CASE WHEN $6::text IN ('', 'purchase') THEN sum(p.purchases) ELSE 0 END::bigint AS purchases,
           CASE WHEN $6::text IN ('', 'purchase') THEN sum(p.revenue) ELSE 0 END AS revenue
    FROM dash_product_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS p
    WHERE ($4::text = '' OR p.category = $4::text)
      AND ($5::text = '' OR p.brand = $5::text)
      AND p.category <> ''
      AND ($9::boolean OR NOT p.is_bot)
    GROUP BY p.category
    HAVING sum(CASE $6::text
                   WHEN '' THEN p.events
                   WHEN 'product_view' THEN p.views
                   WHEN 'add_to_cart' THEN p.add_to_carts
                   WHEN 'begin_checkout' THEN p.checkouts
                   WHEN 'purchase' THEN p.purchases
                   ELSE 0
               END) > 0
) AS t
ORDER BY CASE $7::text
             WHEN 'views' THEN t.views::numeric
             WHEN 'add_to_carts' THEN t.add_to_carts::numeric
             WHEN 'purchases' THEN t.purchases::numeric
             ELSE t.revenue
         END DESC,
         t.category
LIMIT $8::integer;

-- name: top_brands
-- params: date_from date_to timezone category brand event_name order_by row_limit include_bots
-- With an event-name filter, only that event's metric counts and only items that have it are listed.
SELECT * FROM (
    SELECT p.brand AS brand,
           count(DISTINCT p.product_id) FILTER (WHERE CASE $6::text
                   WHEN '' THEN p.events
                   WHEN 'product_view' THEN p.views
                   WHEN 'add_to_cart' THEN p.add_to_carts
                   WHEN 'begin_checkout' THEN p.checkouts
                   WHEN 'purchase' THEN p.purchases
                   ELSE 0
               END > 0) AS products,
           CASE WHEN $6::text IN ('', 'product_view') THEN sum(p.views) ELSE 0 END::bigint AS views,
           CASE WHEN $6::text IN ('', 'add_to_cart') THEN sum(p.add_to_carts) ELSE 0 END::bigint AS add_to_carts,
           CASE WHEN $6::text IN ('', 'purchase') THEN sum(p.purchases) ELSE 0 END::bigint AS purchases,
           CASE WHEN $6::text IN ('', 'purchase') THEN sum(p.revenue) ELSE 0 END AS revenue
    FROM dash_product_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS p
    WHERE ($4::text = '' OR p.category = $4::text)
      AND ($5::text = '' OR p.brand = $5::text)
      AND p.brand <> ''
      AND ($9::boolean OR NOT p.is_bot)
    GROUP BY p.brand
    HAVING sum(CASE $6::text
                   WHEN '' THEN p.events
                   WHEN 'product_view' THEN p.views
                   WHEN 'add_to_cart' THEN p.add_to_carts
                   WHEN 'begin_checkout' THEN p.checkouts
                   WHEN 'purchase' THEN p.purchases
                   ELSE 0
               END) > 0
) AS t
ORDER BY CASE $7::text
             WHEN 'views' THEN t.views::numeric
             WHEN 'add_to_carts' THEN t.add_to_carts::numeric
             WHEN 'purchases' THEN t.purchases::numeric
             ELSE t.revenue
         END DESC,
         t.brand
LIMIT $8::integer;

-- name: identity
-- params: date_from date_to timezone category brand event_name include_bots
SELECT coalesce(nullif(c.login_state, ''), 'unknown') AS login_state,
       coalesce(nullif(c.identity_source, ''), 'unknown') AS identity_source,
       sum(c.events)::bigint AS events,
       coalesce(round(hll_cardinality(hll_union_agg(c.sessions))), 0)::bigint AS sessions,
       coalesce(round(hll_cardinality(hll_union_agg(c.users))), 0)::bigint AS users
FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
WHERE (($4::text = '' AND c.category IS NULL) OR c.category = nullif($4::text, ''))
  AND (($5::text = '' AND c.brand IS NULL) OR c.brand = nullif($5::text, ''))
  AND ($6::text = '' OR c.event_name = $6::text)
  AND ($7::boolean OR NOT c.is_bot)
GROUP BY 1, 2
ORDER BY events DESC, 1, 2;

-- name: new_vs_returning
-- params: date_from date_to timezone category brand event_name include_bots
-- A visitor (client) is new when any of its events in the period is flagged is_first_visit.
SELECT v.visitor_type, v.visitors
FROM (
    SELECT coalesce(round(hll_cardinality(hll_union_agg(c.first_visit_clients))), 0)::bigint AS new_visitors,
           coalesce(round(hll_cardinality(hll_union_agg(c.clients))), 0)::bigint AS visitors
    FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE (($4::text = '' AND c.category IS NULL) OR c.category = nullif($4::text, ''))
      AND (($5::text = '' AND c.brand IS NULL) OR c.brand = nullif($5::text, ''))
      AND ($6::text = '' OR c.event_name = $6::text)
      AND ($7::boolean OR NOT c.is_bot)
) AS t
CROSS JOIN LATERAL (VALUES
    ('new', t.new_visitors),
    ('returning', greatest(t.visitors - t.new_visitors, 0))
) AS v (visitor_type, visitors)
WHERE v.visitors > 0
ORDER BY 1;

-- name: filter_choices
-- params: date_from date_to timezone
-- The values the category / brand / event-name filters offer: those present in the period.
SELECT 'category' AS kind, v AS value FROM (
    SELECT DISTINCT c.category AS v FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE c.category <> '' AND c.brand IS NULL
) AS c
UNION ALL
SELECT 'brand', v FROM (
    SELECT DISTINCT c.brand AS v FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE c.brand <> '' AND c.category IS NULL
) AS b
UNION ALL
SELECT 'event_name', v FROM (
    SELECT DISTINCT c.event_name AS v FROM dash_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE c.category IS NULL AND c.brand IS NULL
) AS e
ORDER BY 1, 2;

-- name: freshness
-- params: timezone
-- Not filtered: how current the warehouse is. newest_event uses the event_timestamp index; the
-- last ETL run comes from the ETL's own bookkeeping (etl_runs); pending_events counts the loaded
-- events not yet folded into the rollups (the figures above lag by those).
SELECT to_char(e.newest AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS newest_event,
       round(extract(epoch FROM now() - e.newest)::numeric) AS newest_event_age_s,
       to_char(r.started_at AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS last_run_started,
       to_char(r.finished_at AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS last_run_finished,
       r.status AS last_run_status,
       r.rows_inserted AS last_run_rows,
       round(extract(epoch FROM now() - coalesce(r.finished_at, r.started_at))::numeric) AS last_run_age_s,
       to_char(ok.finished_at AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS last_success_finished,
       (SELECT count(*) FROM dash_pending) AS pending_events
FROM (SELECT max(event_timestamp) AS newest FROM clickstream_events) AS e
LEFT JOIN LATERAL (
    SELECT started_at, finished_at, status, rows_inserted FROM etl_runs ORDER BY started_at DESC LIMIT 1
) AS r ON true
LEFT JOIN LATERAL (
    SELECT finished_at FROM etl_runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1
) AS ok ON true;

-- ---------------------------------------------------------------- dimension tabs (migration V031)
-- Acquisition, Pages, Technology and Retention read V031's rollups (dash_dim_cells, dash_page_cells,
-- dash_visitor_daily, dash_retention), never the events. Sessions per dimension value are exact
-- counts of sessions STARTING in the period, under the values of their first event (entry/exit page:
-- first/last page_view); conversions = those sessions with a purchase, revenue = their purchases.
-- include_bots: 'true' counts bot traffic too; anything else ('false', the default) excludes it.
-- estimated: true when the period's ends were rounded to whole UTC days (hourly cells are kept
-- only for the recent window, V031) or a sketch-based figure is above 8,192 (then ~1.6 %).

-- name: dimension_sessions
-- params: date_from date_to timezone include_bots dimension row_limit
-- dimension: channel_group, traffic_source, referrer_host, campaign, browser, os, device_class,
-- entry_page, exit_page. campaign: sessions whose first event carried a utm_source, utm_medium or
-- utm_campaign; value = source || E'\x1f' || medium || E'\x1f' || campaign ('(not set)' for a missing one).
SELECT t.value, t.sessions,
       round(t.sessions::numeric / nullif(sum(t.sessions) OVER (), 0), 4) AS share,
       t.conversions,
       round(t.conversions::numeric / nullif(t.sessions, 0), 4) AS conversion_rate,
       t.revenue,
       b.rounded AS estimated
FROM (
    SELECT c.value, sum(c.sessions)::bigint AS sessions, sum(c.conversions)::bigint AS conversions,
           sum(c.revenue) AS revenue
    FROM dash_dim_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE c.dimension = $5::text AND ($4::text = 'true' OR NOT c.is_bot)
    GROUP BY c.value
    HAVING sum(c.sessions) > 0
) AS t
CROSS JOIN dash_dim_bounds(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS b
ORDER BY t.sessions DESC, t.value
LIMIT $6::integer;

-- name: top_pages
-- params: date_from date_to timezone include_bots order_by row_limit
-- views: page_view events in the period; sessions: sessions that viewed the page (sketch);
-- entries / exits: sessions starting in the period whose first / last page_view was the page.
-- order_by: views, sessions, entries or exits. The sketches (the costly part) are merged only for
-- the pages listed, except when ranking by sessions.
WITH v AS (
    SELECT p.page_path, sum(p.views)::bigint AS views
    FROM dash_page_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS p
    WHERE ($4::text = 'true' OR NOT p.is_bot)
    GROUP BY p.page_path
), ee AS (
    SELECT c.value AS page_path,
           sum(c.sessions) FILTER (WHERE c.dimension = 'entry_page')::bigint AS entries,
           sum(c.sessions) FILTER (WHERE c.dimension = 'exit_page')::bigint AS exits
    FROM dash_dim_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE c.dimension IN ('entry_page', 'exit_page') AND ($4::text = 'true' OR NOT c.is_bot)
    GROUP BY c.value
), candidates AS (
    SELECT coalesce(v.page_path, ee.page_path) AS page_path,
           coalesce(v.views, 0) AS views, coalesce(ee.entries, 0) AS entries, coalesce(ee.exits, 0) AS exits
    FROM v FULL JOIN ee ON ee.page_path = v.page_path
    WHERE coalesce(v.views, 0) + coalesce(ee.entries, 0) + coalesce(ee.exits, 0) > 0
    ORDER BY CASE $5::text WHEN 'entries' THEN coalesce(ee.entries, 0) WHEN 'exits' THEN coalesce(ee.exits, 0)
                           ELSE coalesce(v.views, 0) END DESC,
             1
    LIMIT CASE WHEN $5::text = 'sessions' THEN NULL ELSE $6::integer END
), s AS (
    SELECT p.page_path, round(hll_cardinality(hll_union_agg(p.sessions)))::bigint AS sessions
    FROM dash_page_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS p
    WHERE ($4::text = 'true' OR NOT p.is_bot) AND p.page_path IN (SELECT page_path FROM candidates)
    GROUP BY p.page_path
)
SELECT c.page_path, c.views, coalesce(s.sessions, 0) AS sessions, c.entries, c.exits,
       b.rounded OR coalesce(s.sessions, 0) > 8192 AS estimated
FROM candidates AS c
LEFT JOIN s ON s.page_path = c.page_path
CROSS JOIN dash_dim_bounds(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS b
ORDER BY CASE $5::text WHEN 'sessions' THEN coalesce(s.sessions, 0) WHEN 'entries' THEN c.entries
                       WHEN 'exits' THEN c.exits ELSE c.views END DESC,
         c.page_path
LIMIT $6::integer;

-- name: pages_summary
-- params: date_from date_to timezone include_bots
-- views_per_session: page views in the period / sessions starting in it (every session has one
-- device_class value, '(not set)' included, so their sum is the number of sessions).
SELECT v.page_views, s.sessions, round(v.page_views::numeric / nullif(s.sessions, 0), 2) AS views_per_session,
       b.rounded AS estimated
FROM (
    SELECT coalesce(sum(p.views), 0)::bigint AS page_views
    FROM dash_page_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS p
    WHERE ($4::text = 'true' OR NOT p.is_bot)
) AS v
CROSS JOIN (
    SELECT coalesce(sum(c.sessions), 0)::bigint AS sessions
    FROM dash_dim_cells(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS c
    WHERE c.dimension = 'device_class' AND ($4::text = 'true' OR NOT c.is_bot)
) AS s
CROSS JOIN dash_dim_bounds(($1::date)::timestamp AT TIME ZONE $3::text, ($2::date + 1)::timestamp AT TIME ZONE $3::text) AS b;

-- name: retention_cohorts
-- params: date_from date_to include_bots
-- Weekly cohorts (UTC ISO weeks, Monday) of the visitors whose first active week starts in the
-- period's weeks: visitors active in week 0, 1, ... 12 after it, and the share of the cohort.
-- Exact counts (V031 dash_retention). A visitor is 'u:' || user_id, else 'c:' || client_id.
SELECT to_char(t.cohort_week AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS cohort_week,
       t.week_n, t.visitors,
       max(t.visitors) FILTER (WHERE t.week_n = 0) OVER (PARTITION BY t.cohort_week) AS cohort_size,
       round(t.visitors::numeric / nullif(max(t.visitors) FILTER (WHERE t.week_n = 0) OVER (PARTITION BY t.cohort_week), 0), 4) AS returning_share
FROM (
    SELECT r.cohort_week, (extract(epoch FROM r.week - r.cohort_week) / 604800)::integer AS week_n,
           sum(r.visitors)::bigint AS visitors
    FROM dash_retention AS r
    WHERE r.cohort_week >= date_trunc('week', $1::date::timestamp) AT TIME ZONE 'UTC'
      AND r.cohort_week < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
      AND r.week <= r.cohort_week + interval '12 weeks'
      AND ($3::text = 'true' OR NOT r.is_bot)
    GROUP BY 1, 2
) AS t
ORDER BY t.cohort_week, t.week_n;

-- name: active_users
-- params: date_from date_to include_bots
-- UTC days. dau: average daily visitors over the period's days; wau / mau: distinct visitors of
-- the 7 / 30 days ending on the period's last day; stickiness: average daily visitors of those
-- 30 days / mau. HyperLogLog unions (exact up to 8,192, estimated above: estimated = true).
WITH d AS (
    SELECT v.bucket, hll_union_agg(v.visitors) AS visitors
    FROM dash_visitor_daily AS v
    WHERE v.bucket >= least($1::date, $2::date - 29)::timestamp AT TIME ZONE 'UTC'
      AND v.bucket < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
      AND ($3::text = 'true' OR NOT v.is_bot)
    GROUP BY v.bucket
), k AS (
    SELECT coalesce(sum(hll_cardinality(d.visitors)) FILTER (WHERE d.bucket >= $1::date::timestamp AT TIME ZONE 'UTC'), 0)
               / ($2::date - $1::date + 1) AS dau,
           coalesce(hll_cardinality(hll_union_agg(d.visitors) FILTER (WHERE d.bucket >= ($2::date - 6)::timestamp AT TIME ZONE 'UTC')), 0) AS wau,
           coalesce(hll_cardinality(hll_union_agg(d.visitors) FILTER (WHERE d.bucket >= ($2::date - 29)::timestamp AT TIME ZONE 'UTC')), 0) AS mau,
           coalesce(sum(hll_cardinality(d.visitors)) FILTER (WHERE d.bucket >= ($2::date - 29)::timestamp AT TIME ZONE 'UTC'), 0) / 30.0 AS dau_30
    FROM d
)
SELECT round(k.dau::numeric, 2) AS dau, round(k.wau)::bigint AS wau, round(k.mau)::bigint AS mau,
       round((k.dau_30 / nullif(k.mau, 0))::numeric, 4) AS stickiness,
       k.mau > 8192 AS estimated
FROM k;

-- name: daily_visitors
-- params: date_from date_to include_bots
-- Visitors per UTC day of the period (the DAU series).
SELECT to_char(v.bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
       round(hll_cardinality(hll_union_agg(v.visitors)))::bigint AS visitors
FROM dash_visitor_daily AS v
WHERE v.bucket >= $1::date::timestamp AT TIME ZONE 'UTC'
  AND v.bucket < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
  AND ($3::text = 'true' OR NOT v.is_bot)
GROUP BY v.bucket
ORDER BY v.bucket;
