# Database access of sbw_dashboard: credentials, one lazily (re)opened connection, and errors
# turned into conditions the UI can show as plain sentences (never a stack trace).

# Where the credentials file is: env var SBW_DASHBOARD_DB_CONFIG (tests), then the R option
# sbw.db_config, then the path the sbw_dashboard role writes (mode 0400, owner shiny).
sbw_config_path <- function() {
  path <- Sys.getenv("SBW_DASHBOARD_DB_CONFIG", "")
  if (nzchar(path)) {
    return(path)
  }
  getOption("sbw.db_config", "/etc/sbw_dashboard/db.dcf")
}

# A condition of class `sbw_db_error` (plus `subclass`) carrying a message fit for the page.
sbw_db_condition <- function(subclass, message, detail = NULL) {
  structure(
    class = c(subclass, "sbw_db_error", "error", "condition"),
    list(message = message, detail = detail, call = NULL)
  )
}

# Reads the credentials file (Debian control format: `host:`, `port:`, `dbname:`, `user:`,
# `password:`). The password is never printed: errors name the file and the missing keys only.
read_db_config <- function(path = sbw_config_path()) {
  if (!file.exists(path)) {
    stop(sbw_db_condition("sbw_db_config_error", sprintf("The database credentials file %s is missing.", path)))
  }
  fields <- tryCatch(read.dcf(path), error = function(e) NULL)
  if (is.null(fields) || nrow(fields) < 1) {
    stop(sbw_db_condition("sbw_db_config_error", sprintf("The database credentials file %s cannot be read.", path)))
  }
  config <- as.list(fields[1, ])
  missing <- setdiff(c("host", "port", "dbname", "user", "password"), names(config))
  if (length(missing) > 0) {
    stop(sbw_db_condition(
      "sbw_db_config_error",
      sprintf("The database credentials file %s lacks: %s.", path, paste(missing, collapse = ", "))
    ))
  }
  config
}

# A handle on the warehouse: the config and the current connection (NULL until first used).
sbw_db <- function(config = NULL) {
  handle <- new.env(parent = emptyenv())
  handle$config <- config
  handle$con <- NULL
  handle
}

sbw_db_disconnect <- function(db) {
  if (!is.null(db$con)) {
    try(DBI::dbDisconnect(db$con), silent = TRUE)
  }
  db$con <- NULL
  invisible(db)
}

sbw_db_connect <- function(db) {
  if (is.null(db$config)) {
    db$config <- read_db_config()
  }
  cfg <- db$config
  # libpq reads these from the environment; RPostgreSQL has no argument for them.
  Sys.setenv(PGCONNECT_TIMEOUT = "5", PGAPPNAME = "sbw_dashboard")
  con <- tryCatch(
    DBI::dbConnect(
      RPostgreSQL::PostgreSQL(),
      host = cfg$host, port = as.integer(cfg$port), dbname = cfg$dbname,
      user = cfg$user, password = cfg$password,
      # every dashboard session is read-only and bounded in time, whatever the role allows
      options = "-c default_transaction_read_only=on -c statement_timeout=60000"
    ),
    error = function(e) {
      stop(sbw_db_condition(
        "sbw_db_unavailable",
        sprintf("Cannot connect to the warehouse database at %s:%s.", cfg$host, cfg$port),
        conditionMessage(e)
      ))
    }
  )
  db$con <- con
  invisible(db)
}

# Runs one statement with bound parameters (PQexecParams) and returns a data.frame. A failure is
# retried once on a fresh connection (the server restarted, the connection was dropped); when the
# database still cannot be reached the condition is `sbw_db_unavailable`, else `sbw_query_failed`.
sbw_db_fetch <- function(db, sql, values, label = "query") {
  run <- function() {
    if (is.null(db$con)) {
      sbw_db_connect(db)
    }
    rs <- if (length(values) > 0) {
      DBI::dbSendQuery(db$con, sql, as.character(values))
    } else {
      DBI::dbSendQuery(db$con, sql)
    }
    on.exit(try(DBI::dbClearResult(rs), silent = TRUE), add = TRUE)
    DBI::fetch(rs, n = -1)
  }
  attempt <- function() tryCatch(list(ok = TRUE, value = run()), error = function(e) list(ok = FALSE, error = e))
  first <- attempt()
  if (first$ok) {
    return(first$value)
  }
  if (inherits(first$error, "sbw_db_error")) {
    stop(first$error)
  }
  message(sprintf("sbw_dashboard: %s failed, reconnecting: %s", label, conditionMessage(first$error)))
  sbw_db_disconnect(db)
  second <- attempt()
  if (second$ok) {
    return(second$value)
  }
  if (inherits(second$error, "sbw_db_error")) {
    stop(second$error)
  }
  alive <- !is.null(db$con) && tryCatch(
    {
      rs <- DBI::dbSendQuery(db$con, "SELECT 1")
      DBI::dbClearResult(rs)
      TRUE
    },
    error = function(e) FALSE
  )
  if (!alive) {
    sbw_db_disconnect(db)
    stop(sbw_db_condition(
      "sbw_db_unavailable", "The connection to the warehouse database was lost.", conditionMessage(second$error)
    ))
  }
  stop(sbw_db_condition("sbw_query_failed", sprintf("The %s query failed.", label), conditionMessage(second$error)))
}
