# An empty warehouse, a dropped connection and an unreachable database.

test_that("an empty warehouse has no data and zero KPIs", {
  db <- sbw_db(read_db_config(test_env("SBW_TEST_EMPTY_DB_CONFIG")))
  f <- sbw_filters(Sys.Date() - 6, Sys.Date(), "UTC")
  fr <- query_freshness(db, "UTC")
  expect_false(fr$has_data)
  expect_true(is.na(fr$last_run_status))
  k <- query_kpis(db, f)
  expect_equal(k$events, 0)
  expect_equal(k$conversion_rate, 0)
  expect_equal(query_funnel(db, f)$sessions, c(0, 0, 0, 0))
  expect_equal(nrow(query_top(db, f, "products", "views", 10)), 0)
})

test_that("a connection killed by the server is replaced transparently", {
  db <- reader_db()
  f <- as_filters(expected_cases()[[1]]$filters)
  before <- query_kpis(db, f)$events
  pid <- DBI::dbGetQuery(db$con, "SELECT pg_backend_pid() AS pid")$pid
  admin <- DBI::dbConnect(RPostgreSQL::PostgreSQL(), host = db$config$host, port = as.integer(db$config$port),
                          dbname = db$config$dbname, user = "postgres", password = test_env("SBW_TEST_ADMIN_PASSWORD"))
  on.exit(DBI::dbDisconnect(admin), add = TRUE)
  expect_true(DBI::dbGetQuery(admin, sprintf("SELECT pg_terminate_backend(%d) AS ok", as.integer(pid)))$ok)
  expect_equal(query_kpis(db, f)$events, before)
  expect_false(identical(DBI::dbGetQuery(db$con, "SELECT pg_backend_pid() AS pid")$pid, pid))
})

test_that("an unreachable database is a clear sbw_db_unavailable condition", {
  db <- sbw_db(read_db_config(test_env("SBW_TEST_DOWN_DB_CONFIG")))
  f <- sbw_filters(Sys.Date() - 6, Sys.Date(), "UTC")
  err <- tryCatch(query_kpis(db, f), error = function(e) e)
  expect_s3_class(err, "sbw_db_unavailable")
  expect_match(conditionMessage(err), "Cannot connect to the warehouse database")
})

test_that("a missing or incomplete credentials file is a clear condition", {
  err <- tryCatch(read_db_config(tempfile()), error = function(e) e)
  expect_s3_class(err, "sbw_db_config_error")
  path <- tempfile()
  writeLines(c("host: 127.0.0.1", "user: sbw_dashboard"), path)
  err <- tryCatch(read_db_config(path), error = function(e) e)
  expect_s3_class(err, "sbw_db_config_error")
  expect_match(conditionMessage(err), "port, dbname, password")
})
