# The Acquisition, Pages, Technology, Retention and Comparison queries (V031 rollups) against the
# oracle of tests/dashboard_dimensions_support.py, bots excluded and included.

dimension_cases <- function() fromJSON(test_env("SBW_TEST_DIM_EXPECTED"), simplifyVector = FALSE)$cases
as_dim_filters <- function(f) {
  sbw_filters(f$date_from, f$date_to, f$timezone, include_bots = f$include_bots)
}
by_key <- function(rows, key, fields = c("sessions", "conversions", "revenue")) {
  if (length(rows) == 0) return(list())
  out <- lapply(rows, function(r) vapply(fields, function(f) as.numeric(r[[f]]), 0))
  names(out) <- vapply(rows, function(r) paste(unlist(r[key]), collapse = " / "), "")
  out[order(names(out))]
}
df_by_key <- function(df, key, fields = c("sessions", "conversions", "revenue")) {
  if (nrow(df) == 0) return(list())
  out <- lapply(seq_len(nrow(df)), function(i) vapply(fields, function(f) as.numeric(df[[f]][i]), 0))
  names(out) <- do.call(paste, c(lapply(key, function(k) df[[k]]), sep = " / "))
  out[order(names(out))]
}

test_that("sessions, conversions and revenue per channel, source, referrer, browser, OS, device, entry/exit page", {
  db <- reader_db()
  for (case in dimension_cases()) {
    f <- as_dim_filters(case$filters)
    for (dimension in SBW_DIMENSIONS) {
      got <- query_dimension(db, f, dimension, 100)
      expect_equal(df_by_key(got, "value"), by_key(case$dimensions[[dimension]], "value"), tolerance = 1e-9,
                   label = paste(dimension, toJSON(case$filters, auto_unbox = TRUE)))
      expect_false(is.unsorted(rev(got$sessions)))
      expect_true(all(!got$estimated))
      if (nrow(got) > 0) expect_equal(got$conversion_rate, round(got$conversions / got$sessions, 4))
    }
    expect_equal(nrow(query_dimension(db, f, "channel_group", 2)), min(2, length(case$dimensions$channel_group)))
  }
  expect_error(query_dimension(reader_db(), as_dim_filters(dimension_cases()[[1]]$filters), "user_id"))
})

test_that("UTM campaigns split into source, medium and campaign", {
  db <- reader_db()
  for (case in dimension_cases()) {
    got <- query_campaigns(db, as_dim_filters(case$filters), 100)
    key <- c("utm_source", "utm_medium", "utm_campaign")
    expect_equal(df_by_key(got, key), by_key(case$campaigns, key), tolerance = 1e-9)
  }
})

test_that("top pages, their entries and exits, views per session", {
  db <- reader_db()
  for (case in dimension_cases()) {
    f <- as_dim_filters(case$filters)
    fields <- c("views", "sessions", "entries", "exits")
    got <- query_top_pages(db, f, "views", 100)
    expect_equal(df_by_key(got, "page_path", fields), by_key(case$pages, "page_path", fields))
    expect_false(is.unsorted(rev(got$views)))
    by_entries <- query_top_pages(db, f, "entries", 2)
    expect_equal(by_entries$entries, head(sort(vapply(case$pages, function(p) as.numeric(p$entries), 0), decreasing = TRUE), 2))
    s <- query_pages_summary(db, f)
    expect_equal(s$page_views, case$pages_summary$page_views)
    expect_equal(s$sessions, case$pages_summary$sessions)
    expect_equal(s$views_per_session, case$pages_summary$views_per_session, tolerance = 1e-9)
  }
  expect_error(query_top_pages(reader_db(), as_dim_filters(dimension_cases()[[1]]$filters), "views; DROP"))
})

test_that("weekly cohorts, DAU/WAU/MAU and stickiness", {
  db <- reader_db()
  for (case in dimension_cases()) {
    f <- as_dim_filters(case$filters)
    got <- query_retention(db, f)
    want <- case$cohorts
    expect_equal(got$cohort_week, vapply(want, function(x) x$cohort_week, ""))
    expect_equal(got$week_n, vapply(want, function(x) as.numeric(x$week_n), 0))
    expect_equal(got$visitors, vapply(want, function(x) as.numeric(x$visitors), 0))
    wide <- retention_table(got)
    expect_equal(nrow(wide), length(unique(got$cohort_week)))
    if (nrow(wide) > 0) expect_true(all(wide$week_0 == 1))
    a <- query_active_users(db, f)
    expect_equal(a$dau, case$active_users$dau, tolerance = 0.006)
    expect_equal(c(a$wau, a$mau), c(case$active_users$wau, case$active_users$mau))
    expect_equal(a$stickiness, case$active_users$stickiness, tolerance = 1e-4)
    d <- query_daily_visitors(db, f)
    expect_equal(setNames(as.list(d$visitors), d$day)[order(d$day)],
                 lapply(case$daily_visitors, as.numeric)[order(names(case$daily_visitors))])
  }
})

test_that("bots are excluded unless asked, and the comparison period is the one just before", {
  db <- reader_db()
  case <- dimension_cases()[[1]]
  f <- as_dim_filters(case$filters)
  without <- sum(query_dimension(db, f, "device_class", 100)$sessions)
  with <- sum(query_dimension(db, sbw_filters(f$date_from, f$date_to, f$timezone, include_bots = TRUE), "device_class", 100)$sessions)
  expect_gt(with, without)
  expect_false("bot" %in% query_dimension(db, f, "device_class", 100)$value)
  p <- sbw_previous_period(sbw_filters("2026-03-05", "2026-03-11"))
  expect_equal(c(p$date_from, p$date_to), c("2026-02-26", "2026-03-04"))
  expect_equal(sbw_change(120, 100), 0.2)
  expect_true(is.na(sbw_change(5, 0)))
  expect_equal(sbw_csv_name("entry_pages", sbw_filters("2026-03-05", "2026-03-11")), "sbw-entry_pages-2026-03-05_2026-03-11.csv")
})
