# The query layer: the SQL blocks of sql/dashboard.sql (the one copy of the dashboard's SQL,
# shared with benchmarks/bench_dashboard.py), run with named parameters that are bound, never
# pasted. Every function returns aggregates only.

SBW_FUNNEL_STEPS <- c("product_view", "add_to_cart", "begin_checkout", "purchase")
SBW_ORDER_METRICS <- c("views", "add_to_carts", "purchases", "revenue")
SBW_GRANULARITIES <- c("hour", "day")

sbw_app_dir <- function() {
  getOption("sbw.app_dir", ".")
}

# Parses sql/dashboard.sql into list(name = list(sql = "...", params = c(...))).
load_sql_blocks <- function(path = file.path(sbw_app_dir(), "sql", "dashboard.sql")) {
  lines <- readLines(path, warn = FALSE, encoding = "UTF-8")
  starts <- grep("^-- name: ", lines)
  if (length(starts) == 0) {
    stop(sprintf("no `-- name:` blocks in %s", path))
  }
  ends <- c(starts[-1] - 1, length(lines))
  blocks <- list()
  for (i in seq_along(starts)) {
    body <- lines[starts[i]:ends[i]]
    name <- trimws(sub("^-- name: ", "", body[1]))
    params_line <- grep("^-- params:", body, value = TRUE)
    params <- if (length(params_line) == 1) strsplit(trimws(sub("^-- params:", "", params_line)), "\\s+")[[1]] else character()
    params <- params[nzchar(params)]
    sql <- paste(body[!grepl("^\\s*--", body)], collapse = "\n")
    blocks[[name]] <- list(sql = trimws(sub(";\\s*$", "", trimws(sql))), params = params)
  }
  blocks
}

.sbw_sql_cache <- new.env(parent = emptyenv())

sbw_sql <- function(name) {
  if (is.null(.sbw_sql_cache$blocks)) {
    .sbw_sql_cache$blocks <- load_sql_blocks()
  }
  block <- .sbw_sql_cache$blocks[[name]]
  if (is.null(block)) {
    stop(sprintf("unknown dashboard query: %s", name))
  }
  block
}

# The filter values every query understands, validated and normalised to the text bound as
# parameters: dates as YYYY-MM-DD, the timezone a known IANA name, '' meaning "all",
# include_bots 'true' / 'false' (bots are left out of the figures unless asked for).
sbw_filters <- function(date_from, date_to, timezone = "UTC", category = "", brand = "", event_name = "",
                        include_bots = "false") {
  date_from <- as.Date(date_from)
  date_to <- as.Date(date_to)
  if (is.na(date_from) || is.na(date_to)) {
    stop("date range: both dates are required")
  }
  if (date_to < date_from) {
    stop("date range: the end is before the start")
  }
  if (!(timezone %in% OlsonNames())) {
    stop(sprintf("unknown timezone: %s", timezone))
  }
  norm <- function(x) if (is.null(x) || length(x) == 0 || is.na(x[1])) "" else as.character(x[1])
  bots <- tolower(norm(include_bots))
  if (!(bots %in% c("true", "false"))) {
    stop(sprintf("include_bots must be true or false (got %s)", norm(include_bots)))
  }
  list(
    date_from = format(date_from, "%Y-%m-%d"), date_to = format(date_to, "%Y-%m-%d"),
    timezone = timezone, category = norm(category), brand = norm(brand), event_name = norm(event_name),
    include_bots = bots
  )
}

# The default period: the last `days` days up to today in `timezone`, both ends included.
sbw_default_range <- function(timezone = "UTC", days = 7, now = Sys.time()) {
  today <- as.Date(format(now, "%Y-%m-%d", tz = timezone))
  c(today - (days - 1), today)
}

# Runs the named block with values taken by name from `args` (a list).
sbw_run <- function(db, name, args = list()) {
  block <- sbw_sql(name)
  values <- vapply(block$params, function(p) {
    v <- args[[p]]
    if (is.null(v) || length(v) != 1 || is.na(v)) {
      stop(sprintf("query %s: parameter %s is missing", name, p))
    }
    as.character(v)
  }, character(1), USE.NAMES = FALSE)
  sbw_db_fetch(db, block$sql, values, label = name)
}

num_cols <- function(df, cols) {
  for (col in intersect(cols, names(df))) {
    df[[col]] <- as.numeric(df[[col]])
  }
  df
}

query_kpis <- function(db, filters) {
  df <- sbw_run(db, "kpis", filters)
  row <- as.list(num_cols(df, names(df))[1, , drop = FALSE])
  row$conversion_rate <- ifelse(is.na(row$conversion_rate), 0, row$conversion_rate)
  row
}

query_events_over_time <- function(db, filters, granularity = "day") {
  granularity <- match.arg(granularity, SBW_GRANULARITIES)
  df <- sbw_run(db, "events_over_time", c(filters, list(granularity = granularity)))
  df <- num_cols(df, "events")
  df$bucket <- as.POSIXct(df$bucket, format = "%Y-%m-%dT%H:%M", tz = filters$timezone)
  df
}

query_funnel <- function(db, filters) {
  num_cols(sbw_run(db, "funnel", filters), c("step", "sessions", "rate_from_previous", "rate_from_first"))
}

query_top <- function(db, filters, dimension = c("products", "categories", "brands"), order_by = "views", limit = 10) {
  dimension <- match.arg(dimension)
  order_by <- match.arg(order_by, SBW_ORDER_METRICS)
  limit <- check_limit(limit)
  df <- sbw_run(db, paste0("top_", dimension), c(filters, list(order_by = order_by, row_limit = limit)))
  num_cols(df, c("products", "views", "add_to_carts", "purchases", "revenue"))
}

query_identity <- function(db, filters) {
  num_cols(sbw_run(db, "identity", filters), c("events", "sessions", "users"))
}

query_new_vs_returning <- function(db, filters) {
  num_cols(sbw_run(db, "new_vs_returning", filters), c("visitors", "sessions", "events"))
}

query_filter_choices <- function(db, filters) {
  df <- sbw_run(db, "filter_choices", filters)
  split_kind <- function(kind) sort(df$value[df$kind == kind])
  list(category = split_kind("category"), brand = split_kind("brand"), event_name = split_kind("event_name"))
}

query_freshness <- function(db, timezone = "UTC") {
  df <- sbw_run(db, "freshness", list(timezone = timezone))
  row <- as.list(num_cols(df, c("newest_event_age_s", "last_run_rows", "last_run_age_s", "pending_events"))[1, , drop = FALSE])
  row$has_data <- !is.na(row$newest_event)
  row
}

# ---------------------------------------------------------------- dimension tabs (V031 rollups)

SBW_DIMENSIONS <- c("channel_group", "traffic_source", "referrer_host", "browser", "os", "device_class",
                    "entry_page", "exit_page")
SBW_PAGE_ORDERS <- c("views", "sessions", "entries", "exits")

check_limit <- function(limit) {
  limit <- as.integer(limit)
  if (is.na(limit) || limit < 1 || limit > 1000) {
    stop("limit must be between 1 and 1000")
  }
  limit
}

# Sessions, conversions and revenue per value of one dimension (sessions starting in the period).
query_dimension <- function(db, filters, dimension, limit = 20) {
  dimension <- match.arg(dimension, SBW_DIMENSIONS)
  df <- sbw_run(db, "dimension_sessions", c(filters, list(dimension = dimension, row_limit = check_limit(limit))))
  num_cols(df, c("sessions", "share", "conversions", "conversion_rate", "revenue"))
}

# The campaign cells of dimension_sessions, their value split into utm source / medium / campaign.
query_campaigns <- function(db, filters, limit = 20) {
  df <- sbw_run(db, "dimension_sessions", c(filters, list(dimension = "campaign", row_limit = check_limit(limit))))
  df <- num_cols(df, c("sessions", "share", "conversions", "conversion_rate", "revenue"))
  parts <- strsplit(df$value, "\x1f", fixed = TRUE)
  part <- function(i) vapply(parts, function(p) if (length(p) >= i) p[i] else "", "")
  cbind(data.frame(utm_source = part(1), utm_medium = part(2), utm_campaign = part(3), stringsAsFactors = FALSE),
        df[, setdiff(names(df), "value"), drop = FALSE])
}

query_top_pages <- function(db, filters, order_by = "views", limit = 20) {
  order_by <- match.arg(order_by, SBW_PAGE_ORDERS)
  df <- sbw_run(db, "top_pages", c(filters, list(order_by = order_by, row_limit = check_limit(limit))))
  num_cols(df, c("views", "sessions", "entries", "exits"))
}

query_pages_summary <- function(db, filters) {
  as.list(num_cols(sbw_run(db, "pages_summary", filters), c("page_views", "sessions", "views_per_session"))[1, , drop = FALSE])
}

# Long format: cohort_week, week_n, visitors, cohort_size, returning_share.
query_retention <- function(db, filters) {
  num_cols(sbw_run(db, "retention_cohorts", filters), c("week_n", "visitors", "cohort_size", "returning_share"))
}

# The cohort table: one row per cohort, its size, then the share returning in week 0..N.
retention_table <- function(df) {
  if (nrow(df) == 0) {
    return(data.frame(cohort_week = character(), cohort_size = numeric()))
  }
  weeks <- sort(unique(df$week_n))
  cohorts <- sort(unique(df$cohort_week))
  out <- data.frame(cohort_week = cohorts, cohort_size = vapply(cohorts, function(c) df$cohort_size[df$cohort_week == c][1], 0),
                    stringsAsFactors = FALSE)
  for (w in weeks) {
    out[[paste0("week_", w)]] <- vapply(cohorts, function(c) {
      v <- df$returning_share[df$cohort_week == c & df$week_n == w]
      if (length(v) == 0) NA_real_ else v[1]
    }, 0)
  }
  rownames(out) <- NULL
  out
}

query_active_users <- function(db, filters) {
  as.list(num_cols(sbw_run(db, "active_users", filters), c("dau", "wau", "mau", "stickiness"))[1, , drop = FALSE])
}

query_daily_visitors <- function(db, filters) {
  num_cols(sbw_run(db, "daily_visitors", filters), "visitors")
}

# The period of the same length just before `filters`' period (Comparison).
sbw_previous_period <- function(filters) {
  from <- as.Date(filters$date_from)
  to <- as.Date(filters$date_to)
  days <- as.integer(to - from) + 1L
  filters$date_to <- format(from - 1, "%Y-%m-%d")
  filters$date_from <- format(from - days, "%Y-%m-%d")
  filters
}

# Relative change of `current` against `previous` (NA when there was nothing before).
sbw_change <- function(current, previous) {
  current <- as.numeric(current)
  previous <- as.numeric(previous)
  ifelse(is.na(previous) | previous == 0, NA_real_, (current - previous) / previous)
}

# The file name of a CSV export: the view and the period.
sbw_csv_name <- function(view, filters) {
  sprintf("sbw-%s-%s_%s.csv", gsub("[^a-z0-9_]", "_", tolower(view)), filters$date_from, filters$date_to)
}
