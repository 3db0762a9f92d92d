# Loads the app's query layer for the tests. Driven by tests/test_dashboard_queries.py, which
# starts a real PostgreSQL with the real migrations and passes connection files via env vars.
suppressPackageStartupMessages({
  library(DBI)
  library(RPostgreSQL)
  library(jsonlite)
})
app_dir <- normalizePath(Sys.getenv("SBW_APP_DIR", file.path("..", "..")))
options(sbw.app_dir = app_dir)
source(file.path(app_dir, "R", "db.R"), local = FALSE)
source(file.path(app_dir, "R", "queries.R"), local = FALSE)

test_env <- function(name) {
  value <- Sys.getenv(name, "")
  if (!nzchar(value)) stop(sprintf("%s is not set: run these tests through tests/test_dashboard_queries.py", name))
  value
}

reader_db <- function() sbw_db(read_db_config(test_env("SBW_DASHBOARD_DB_CONFIG")))
expected_cases <- function() fromJSON(test_env("SBW_TEST_EXPECTED"), simplifyVector = FALSE)$cases
as_filters <- function(f) {
  sbw_filters(f$date_from, f$date_to, f$timezone, f$category, f$brand, f$event_name,
              if (is.null(f$include_bots)) "false" else f$include_bots)
}
