# The page: filters on the left, KPIs on top, then tabs. Every number is an output the server
# fills from the query layer; ids (kpi_*) are stable for the browser tests.

SBW_KPIS <- c(
  events = "Events", sessions = "Sessions", users = "Unique users", logged_in_users = "Logged-in users",
  guest_visitors = "Guest visitors", first_visits = "First visits", product_views = "Product views",
  add_to_carts = "Add-to-carts", purchases = "Purchases", conversion_rate = "Conversion rate",
  revenue = "Revenue"
)
# KPIs that are distinct counts: shown with a leading "≈" when the query says they are estimates.
SBW_DISTINCT_KPIS <- c("sessions", "users", "logged_in_users", "guest_visitors", "first_visits", "conversion_rate")

SBW_TIMEZONES <- c("UTC", "Asia/Singapore", "Asia/Ho_Chi_Minh", "Asia/Tokyo", "Australia/Sydney",
                   "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles")

kpi_tile <- function(id, label) {
  shiny::div(
    class = "sbw-kpi",
    shiny::div(class = "sbw-kpi-label", label),
    shiny::div(class = "sbw-kpi-value", shiny::textOutput(paste0("kpi_", id), inline = TRUE))
  )
}

dashboard_ui <- function(timezone = getOption("sbw.timezone", "UTC")) {
  range <- sbw_default_range(timezone)
  shiny::fluidPage(
    title = "SBW clickstream dashboard",
    shiny::tags$head(
      # No favicon request (Shiny serves none; the browser would log a 404).
      shiny::tags$link(rel = "icon", href = "data:,"),
      # Debian's bootstrap-datepicker 1.3 (r-cran-shiny's dependency) calls $.fn.datepicker on
      # document ready, after Shiny renamed it to bsDatepicker: give the old name back.
      shiny::tags$script(shiny::HTML(
        "if (window.jQuery && !jQuery.fn.datepicker && jQuery.fn.bsDatepicker) { jQuery.fn.datepicker = jQuery.fn.bsDatepicker; }"
      )),
      shiny::tags$style(shiny::HTML("
      .sbw-kpis { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 12px; }
      .sbw-kpi { border: 1px solid #ddd; border-radius: 4px; padding: 6px 10px; min-width: 120px; }
      .sbw-kpi-label { color: #666; font-size: 12px; }
      .sbw-kpi-value { font-size: 22px; font-weight: 600; }
      .sbw-freshness { color: #444; margin: 4px 0 10px 0; }
      .sbw-stale { color: #b35900; font-weight: 600; }
      .sbw-banner { padding: 10px; border-radius: 4px; margin-bottom: 10px; }
      .sbw-banner-error { background: #fbe3e4; color: #8a1f11; border: 1px solid #e8aeb1; }
      .sbw-banner-empty { background: #eef5fb; color: #1f4e79; border: 1px solid #b5d3ea; }
    "))
    ),
    shiny::titlePanel("SBW clickstream dashboard"),
    shiny::uiOutput("banner"),
    shiny::div(class = "sbw-freshness", shiny::uiOutput("freshness")),
    shiny::sidebarLayout(
      shiny::sidebarPanel(
        width = 3,
        # Two date inputs, not dateRangeInput: Debian's bootstrap-datepicker 1.3 (r-cran-shiny's
        # dependency) breaks the range picker after Shiny's noConflict() rename.
        shiny::dateInput("date_from", "From (included)", value = range[1]),
        shiny::dateInput("date_to", "To (included)", value = range[2]),
        shiny::selectInput("timezone", "Timezone", choices = unique(c(timezone, SBW_TIMEZONES)), selected = timezone),
        shiny::selectInput("category", "Category", choices = c("All categories" = "")),
        shiny::selectInput("brand", "Brand", choices = c("All brands" = "")),
        shiny::selectInput("event_name", "Event name", choices = c("All events" = "")),
        shiny::radioButtons("granularity", "Events over time", c("Hourly" = "hour", "Daily" = "day"),
                            selected = "day", inline = TRUE),
        shiny::selectInput("top_metric", "Rank top lists by",
                           c("Views" = "views", "Add-to-carts" = "add_to_carts", "Purchases" = "purchases",
                             "Revenue" = "revenue")),
        shiny::actionButton("refresh", "Refresh"),
        shiny::helpText(
          "Days and hours are counted in the chosen timezone.",
          "The funnel counts sessions reaching each step in order (view, cart, checkout, purchase);",
          "it ignores the event-name filter.",
          "Unique counts (sessions, users, visitors) are exact up to 8,192 and estimated (\u2248, about 1.6 %) above."
        )
      ),
      shiny::mainPanel(
        width = 9,
        shiny::div(class = "sbw-kpis", lapply(names(SBW_KPIS), function(id) kpi_tile(id, SBW_KPIS[[id]]))),
        shiny::tabsetPanel(
          id = "tabs",
          shiny::tabPanel("Events over time", shiny::plotOutput("events_plot", height = "360px")),
          shiny::tabPanel(
            "Funnel",
            shiny::plotOutput("funnel_plot", height = "260px"),
            shiny::tableOutput("funnel_table")
          ),
          shiny::tabPanel(
            "Top products",
            shiny::h4("Products"), shiny::tableOutput("top_products"),
            shiny::h4("Categories"), shiny::tableOutput("top_categories"),
            shiny::h4("Brands"), shiny::tableOutput("top_brands")
          ),
          shiny::tabPanel(
            "Audience",
            shiny::h4("Logged-in vs guest, by identity source"), shiny::tableOutput("identity_table"),
            shiny::h4("New vs returning visitors"), shiny::tableOutput("new_returning_table")
          )
        )
      )
    )
  )
}
