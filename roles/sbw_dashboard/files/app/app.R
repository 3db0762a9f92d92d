# sbw_dashboard: clickstream analytics for SBW, served by Shiny Server at /sbw_dashboard.
# Shiny sources R/*.R (db.R, queries.R, ui.R, server.R) before this file.
suppressPackageStartupMessages({
  library(shiny)
  library(DBI)
  library(RPostgreSQL)
  library(ggplot2)
})

# Never show R errors in the page (shiny-server's sanitize_errors does the same for its apps).
options(shiny.sanitize.errors = TRUE)
if (!nzchar(Sys.getenv("TZ"))) Sys.setenv(TZ = "UTC")

shinyApp(ui = function(req) dashboard_ui(), server = dashboard_server)
