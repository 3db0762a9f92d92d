# The query layer against the known data set: every figure equals the Python oracle's
# (tests/dashboard_support.py), for several filter combinations and timezones.

test_that("KPIs equal the oracle for every filter combination", {
  db <- reader_db()
  for (case in expected_cases()) {
    got <- query_kpis(db, as_filters(case$filters))
    for (key in names(case$kpis)) {
      expect_equal(got[[key]], case$kpis[[key]], tolerance = 1e-6,
                   label = sprintf("%s [%s]", key, toJSON(case$filters, auto_unbox = TRUE)))
    }
    expect_equal(got$estimated, 0)  # a small data set: every distinct count is exact
  }
})

test_that("the funnel counts sessions per step (in order) and the step rates follow", {
  db <- reader_db()
  for (case in expected_cases()) {
    got <- query_funnel(db, as_filters(case$filters))
    expect_equal(got$step_name, SBW_FUNNEL_STEPS)
    expect_equal(got$sessions, as.numeric(unlist(case$funnel)))
    s <- got$sessions
    if (s[1] > 0) {
      expect_equal(got$rate_from_first, round(s / s[1], 4))
      prev <- s[1:3]
      expect_equal(got$rate_from_previous[2:4], ifelse(prev > 0, round(s[2:4] / prev, 4), NA_real_))
    }
  }
})

test_that("top products, categories and brands are ranked like the oracle", {
  db <- reader_db()
  for (case in expected_cases()) {
    f <- as_filters(case$filters)
    p <- query_top(db, f, "products", "views", 5)
    exp <- case$top_products_views
    expect_equal(p$product_id, vapply(exp, function(x) x$key, ""))
    expect_equal(p$views, vapply(exp, function(x) as.numeric(x$views), 0))
    c <- query_top(db, f, "categories", "revenue", 10)
    exp <- case$top_categories_revenue
    expect_equal(c$category, vapply(exp, function(x) x$key, ""))
    expect_equal(c$revenue, vapply(exp, function(x) as.numeric(x$revenue), 0), tolerance = 1e-9)
    b <- query_top(db, f, "brands", "purchases", 10)
    exp <- case$top_brands_purchases
    expect_equal(b$brand, vapply(exp, function(x) x$key, ""))
    expect_equal(b$purchases, vapply(exp, function(x) as.numeric(x$purchases), 0))
    expect_equal(b$add_to_carts, vapply(exp, function(x) as.numeric(x$add_to_carts), 0))
  }
})

test_that("identity, new vs returning and events per day match", {
  db <- reader_db()
  for (case in expected_cases()) {
    f <- as_filters(case$filters)
    id <- query_identity(db, f)
    got <- setNames(as.list(id$events), paste(id$login_state, id$identity_source, sep = "/"))
    expect_equal(got[order(names(got))], lapply(case$identity, as.numeric)[order(names(case$identity))])
    nvr <- query_new_vs_returning(db, f)
    got <- setNames(as.list(nvr$visitors), nvr$visitor_type)
    want <- Filter(function(x) x > 0, lapply(case$new_vs_returning, as.numeric))
    expect_equal(got[order(names(got))], want[order(names(want))])
    daily <- query_events_over_time(db, f, "day")
    per_day <- tapply(daily$events, format(daily$bucket, "%Y-%m-%d", tz = f$timezone), sum)
    want <- unlist(case$events_per_day)
    if (length(want) == 0) {
      expect_equal(nrow(daily), 0)
    } else {
      expect_equal(as.numeric(per_day[sort(names(want))]), as.numeric(want[sort(names(want))]))
    }
    hourly <- query_events_over_time(db, f, "hour")
    expect_equal(sum(hourly$events), sum(daily$events))
    expect_true(all(format(hourly$bucket, "%M:%S", tz = f$timezone) == "00:00"))
  }
})

test_that("filter choices list what the period holds", {
  db <- reader_db()
  case <- expected_cases()[[1]]
  choices <- query_filter_choices(db, as_filters(case$filters))
  expect_setequal(choices$category, c("bags", "shoes", "watches"))
  expect_true("product_view" %in% choices$event_name)
  expect_true(all(c("acme", "globex") %in% choices$brand))
})

test_that("input is bound, never pasted into SQL", {
  db <- reader_db()
  case <- expected_cases()[[1]]
  f <- case$filters
  hostile <- "shoes' OR '1'='1"
  got <- query_kpis(db, sbw_filters(f$date_from, f$date_to, f$timezone, category = hostile))
  expect_equal(got$events, 0)
  got <- query_kpis(db, sbw_filters(f$date_from, f$date_to, f$timezone, brand = "x'); DROP TABLE clickstream_events; --"))
  expect_equal(got$events, 0)
  expect_gt(query_kpis(db, as_filters(f))$events, 0)
  expect_error(sbw_filters(f$date_from, f$date_to, "Mars/Olympus"), "unknown timezone")
  expect_error(query_top(db, as_filters(f), "products", "views; DROP", 5))
  expect_error(query_events_over_time(db, as_filters(f), "minute"))
})

test_that("the dashboard's connection is read-only", {
  db <- reader_db()
  sbw_db_connect(db)
  expect_error(DBI::dbSendQuery(db$con, "DELETE FROM clickstream_events"), "read-only")
  sbw_db_disconnect(db)
})

test_that("freshness shows the newest event and the last ETL run from the bookkeeping", {
  db <- reader_db()
  fr <- query_freshness(db, "UTC")
  expect_true(fr$has_data)
  expect_equal(fr$newest_event, Sys.getenv("SBW_TEST_NEWEST_EVENT"))
  expect_equal(fr$last_run_status, "succeeded")
  expect_equal(fr$last_run_rows, as.numeric(Sys.getenv("SBW_TEST_LAST_RUN_ROWS")))
  expect_equal(fr$last_run_finished, Sys.getenv("SBW_TEST_LAST_RUN_FINISHED"))
  expect_equal(fr$pending_events, 0)  # the test's loader folds its events into the rollups
  sg <- query_freshness(db, "Asia/Singapore")
  expect_equal(
    as.numeric(as.POSIXct(sg$newest_event, tz = "Asia/Singapore")),
    as.numeric(as.POSIXct(fr$newest_event, tz = "UTC"))
  )
})
