-- Every figure of the sbw_dashboard app, computed in PostgreSQL (aggregates only, never raw rows).
-- The ONE copy of the dashboard's SQL: R/queries.R runs these blocks and
-- benchmarks/bench_dashboard.py times the very same text.
--
-- Format: each block starts with `-- name: <query>` and `-- params: <p1> <p2> ...`; the statement
-- uses $1, $2 ... in that order. Values are always bound with PQexecParams (never pasted into SQL).
-- Common parameters:
--   date_from, date_to  first and last day of the period (YYYY-MM-DD, both included)
--   timezone            IANA name the days and hours are counted in (e.g. UTC, Asia/Singapore)
--   category, brand     product category / brand; '' = all
--   event_name          event name; '' = all
-- Unit of a purchase: one purchase event = one unit at the discount price when there is one, else price.

-- name: kpis
-- params: date_from date_to timezone category brand event_name
SELECT k.*,
       round(k.purchase_sessions::numeric / nullif(k.sessions, 0), 4) AS conversion_rate
FROM (
    SELECT count(*) AS events,
           count(DISTINCT session_id) AS sessions,
           count(DISTINCT coalesce('u:' || user_id, 'c:' || client_id)) AS users,
           count(DISTINCT user_id) FILTER (WHERE user_login_state = 'logged_in') AS logged_in_users,
           count(DISTINCT client_id) FILTER (WHERE user_id IS NULL) AS guest_visitors,
           count(DISTINCT client_id) FILTER (WHERE is_first_visit) AS first_visits,
           count(*) FILTER (WHERE event_name = 'product_view') AS product_views,
           count(*) FILTER (WHERE event_name = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE event_name = 'purchase') AS purchases,
           count(DISTINCT session_id) FILTER (WHERE event_name = 'purchase') AS purchase_sessions,
           coalesce(sum(coalesce(context_product_discount_price, context_product_price))
               FILTER (WHERE event_name = 'purchase'), 0) AS revenue
    FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND ($4::text = '' OR context_product_category = $4::text)
      AND ($5::text = '' OR context_product_brand = $5::text)
      AND ($6::text = '' OR event_name = $6::text)
) AS k;

-- name: events_over_time
-- params: date_from date_to timezone category brand event_name granularity
SELECT to_char(date_trunc($7::text, event_timestamp AT TIME ZONE $3::text), 'YYYY-MM-DD"T"HH24:MI') AS bucket,
       event_name,
       count(*) AS events
FROM clickstream_events
WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
  AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
  AND ($4::text = '' OR context_product_category = $4::text)
  AND ($5::text = '' OR context_product_brand = $5::text)
  AND ($6::text = '' OR event_name = $6::text)
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: funnel
-- params: date_from date_to timezone category brand
-- Closed funnel by session: a session reaches a step when it has that event and every earlier
-- step's event in the period. The event-name filter does not apply (the funnel spans four names).
WITH s AS (
    SELECT session_id,
           bool_or(event_name = 'product_view') AS viewed,
           bool_or(event_name = 'add_to_cart') AS carted,
           bool_or(event_name = 'begin_checkout') AS checked_out,
           bool_or(event_name = 'purchase') AS purchased
    FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND ($4::text = '' OR context_product_category = $4::text)
      AND ($5::text = '' OR context_product_brand = $5::text)
      AND event_name IN ('product_view', 'add_to_cart', 'begin_checkout', 'purchase')
    GROUP BY session_id
), c AS (
    SELECT count(*) FILTER (WHERE viewed) AS s1,
           count(*) FILTER (WHERE viewed AND carted) AS s2,
           count(*) FILTER (WHERE viewed AND carted AND checked_out) AS s3,
           count(*) FILTER (WHERE viewed AND carted AND checked_out AND purchased) AS s4
    FROM s
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
-- params: date_from date_to timezone category brand event_name order_by row_limit
SELECT * FROM (
    SELECT context_product_id AS product_id,
           max(context_product_name) AS product_name,
           max(context_product_category) AS category,
           max(context_product_brand) AS brand,
           count(*) FILTER (WHERE event_name = 'product_view') AS views,
           count(*) FILTER (WHERE event_name = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE event_name = 'purchase') AS purchases,
           coalesce(sum(coalesce(context_product_discount_price, context_product_price))
               FILTER (WHERE event_name = 'purchase'), 0) AS revenue
    FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND ($4::text = '' OR context_product_category = $4::text)
      AND ($5::text = '' OR context_product_brand = $5::text)
      AND ($6::text = '' OR event_name = $6::text)
      AND context_product_id IS NOT NULL
    GROUP BY context_product_id
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
-- params: date_from date_to timezone category brand event_name order_by row_limit
SELECT * FROM (
    SELECT context_product_category AS category,
           count(DISTINCT context_product_id) AS products,
           count(*) FILTER (WHERE event_name = 'product_view') AS views,
           count(*) FILTER (WHERE event_name = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE event_name = 'purchase') AS purchases,
           coalesce(sum(coalesce(context_product_discount_price, context_product_price))
               FILTER (WHERE event_name = 'purchase'), 0) AS revenue
    FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND ($4::text = '' OR context_product_category = $4::text)
      AND ($5::text = '' OR context_product_brand = $5::text)
      AND ($6::text = '' OR event_name = $6::text)
      AND context_product_category IS NOT NULL
    GROUP BY context_product_category
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
-- params: date_from date_to timezone category brand event_name order_by row_limit
SELECT * FROM (
    SELECT context_product_brand AS brand,
           count(DISTINCT context_product_id) AS products,
           count(*) FILTER (WHERE event_name = 'product_view') AS views,
           count(*) FILTER (WHERE event_name = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE event_name = 'purchase') AS purchases,
           coalesce(sum(coalesce(context_product_discount_price, context_product_price))
               FILTER (WHERE event_name = 'purchase'), 0) AS revenue
    FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND ($4::text = '' OR context_product_category = $4::text)
      AND ($5::text = '' OR context_product_brand = $5::text)
      AND ($6::text = '' OR event_name = $6::text)
      AND context_product_brand IS NOT NULL
    GROUP BY context_product_brand
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
-- params: date_from date_to timezone category brand event_name
SELECT coalesce(user_login_state, 'unknown') AS login_state,
       coalesce(identity_source, 'unknown') AS identity_source,
       count(*) AS events,
       count(DISTINCT session_id) AS sessions,
       count(DISTINCT coalesce('u:' || user_id, 'c:' || client_id)) AS users
FROM clickstream_events
WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
  AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
  AND ($4::text = '' OR context_product_category = $4::text)
  AND ($5::text = '' OR context_product_brand = $5::text)
  AND ($6::text = '' OR event_name = $6::text)
GROUP BY 1, 2
ORDER BY events DESC, 1, 2;

-- name: new_vs_returning
-- params: date_from date_to timezone category brand event_name
-- A visitor (client) is new when any of its events in the period is flagged is_first_visit.
SELECT CASE WHEN c.is_new THEN 'new' ELSE 'returning' END AS visitor_type,
       count(*) AS visitors,
       sum(c.sessions) AS sessions,
       sum(c.events) AS events
FROM (
    SELECT client_id,
           coalesce(bool_or(is_first_visit), false) AS is_new,
           count(DISTINCT session_id) AS sessions,
           count(*) AS events
    FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND ($4::text = '' OR context_product_category = $4::text)
      AND ($5::text = '' OR context_product_brand = $5::text)
      AND ($6::text = '' OR event_name = $6::text)
    GROUP BY client_id
) AS c
GROUP BY 1
ORDER BY 1;

-- name: filter_choices
-- params: date_from date_to timezone
-- The values the category / brand / event-name filters offer: those present in the period.
SELECT 'category' AS kind, v AS value FROM (
    SELECT DISTINCT context_product_category AS v FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND context_product_category IS NOT NULL
) AS c
UNION ALL
SELECT 'brand', v FROM (
    SELECT DISTINCT context_product_brand AS v FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
      AND context_product_brand IS NOT NULL
) AS b
UNION ALL
SELECT 'event_name', v FROM (
    SELECT DISTINCT event_name AS v FROM clickstream_events
    WHERE event_timestamp >= ($1::date)::timestamp AT TIME ZONE $3::text
      AND event_timestamp < ($2::date + 1)::timestamp AT TIME ZONE $3::text
) AS e
ORDER BY 1, 2;

-- name: freshness
-- params: timezone
-- Not filtered: how current the warehouse is. newest_event uses the event_timestamp index; the
-- last ETL run comes from the ETL's own bookkeeping (etl_runs).
SELECT to_char(e.newest AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS newest_event,
       round(extract(epoch FROM now() - e.newest)::numeric) AS newest_event_age_s,
       to_char(r.started_at AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS last_run_started,
       to_char(r.finished_at AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS last_run_finished,
       r.status AS last_run_status,
       r.rows_inserted AS last_run_rows,
       round(extract(epoch FROM now() - coalesce(r.finished_at, r.started_at))::numeric) AS last_run_age_s,
       to_char(ok.finished_at AT TIME ZONE $1::text, 'YYYY-MM-DD HH24:MI:SS') AS last_success_finished
FROM (SELECT max(event_timestamp) AS newest FROM clickstream_events) AS e
LEFT JOIN LATERAL (
    SELECT started_at, finished_at, status, rows_inserted FROM etl_runs ORDER BY started_at DESC LIMIT 1
) AS r ON true
LEFT JOIN LATERAL (
    SELECT finished_at FROM etl_runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1
) AS ok ON true;
