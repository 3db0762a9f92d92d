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
    shiny::div(class = "sbw-kpi-value", shiny::textOutput(paste0("kpi_", id), inline = TRUE)),
    # Comparison: the change against the previous period of the same length.
    shiny::div(class = "sbw-kpi-delta", shiny::textOutput(paste0("kpi_delta_", id), inline = TRUE))
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
      .sbw-kpi-delta { color: #555; font-size: 11px; }
      .sbw-note { color: #666; font-size: 12px; margin: 2px 0 8px 0; }
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
        shiny::checkboxInput("include_bots", "Include bot traffic", value = FALSE),
        shiny::actionButton("refresh", "Refresh"),
        shiny::helpText(
          "Days and hours are counted in the chosen timezone.",
          "The funnel counts sessions reaching each step in order (view, cart, checkout, purchase);",
          "it ignores the event-name filter.",
          "Unique counts (sessions, users, visitors) are exact up to 8,192 and estimated (\u2248, about 1.6 %) above.",
          "\u2248 marks every estimated figure.",
          "Bot traffic is excluded unless the box above is ticked."
        )
      ),
      shiny::mainPanel(
        width = 9,
        shiny::div(class = "sbw-kpis", lapply(names(SBW_KPIS), function(id) kpi_tile(id, SBW_KPIS[[id]]))),
        do.call(shiny::tabsetPanel, c(list(
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
        ), dimension_tabs()))
      )
    )
  )
}

# The tables of the dimension tabs, with their CSV export names (Export tab), in page order.
SBW_EXPORTS <- c(
  kpis = "KPIs (current and previous period)", channels = "Channels", sources = "Sources",
  referrers = "Referrers", campaigns = "UTM campaigns", pages = "Top pages", entry_pages = "Entry pages",
  exit_pages = "Exit pages", browsers = "Browsers", os = "Operating systems", devices = "Device classes",
  cohorts = "Retention cohorts", active_users = "DAU / WAU / MAU", daily_visitors = "Daily visitors"
)

sbw_note <- function(...) shiny::div(class = "sbw-note", ...)

# Acquisition, Pages, Technology, Retention, Comparison, Export (V031 rollups; server.R fills them).
dimension_tabs <- function() {
  session_note <- sbw_note(
    "Sessions starting in the period, attributed to their first event; conversion = sessions with a purchase, ",
    "revenue = their purchases. \u2248: the period's ends were rounded to whole UTC days (older than the hourly window)."
  )
  list(
    shiny::tabPanel(
      "Acquisition", session_note,
      shiny::h4("Channels"), shiny::tableOutput("acq_channels"),
      shiny::h4("Sources"), shiny::tableOutput("acq_sources"),
      shiny::h4("Referrers"), shiny::tableOutput("acq_referrers"),
      shiny::h4("UTM campaigns"), shiny::tableOutput("acq_campaigns")
    ),
    shiny::tabPanel(
      "Pages",
      shiny::div(id = "pages_summary", shiny::uiOutput("pages_summary")),
      sbw_note("Views: page views in the period; sessions: sessions that viewed the page (\u2248 above 8,192); ",
               "entries / exits: sessions starting in the period whose first / last page view it was."),
      shiny::h4("Top pages"), shiny::tableOutput("pages_top"),
      shiny::h4("Entry pages"), shiny::tableOutput("pages_entry"),
      shiny::h4("Exit pages"), shiny::tableOutput("pages_exit")
    ),
    shiny::tabPanel(
      "Technology", session_note,
      shiny::h4("Browsers"), shiny::tableOutput("tech_browsers"),
      shiny::h4("Operating systems"), shiny::tableOutput("tech_os"),
      shiny::h4("Device classes"), shiny::tableOutput("tech_devices")
    ),
    shiny::tabPanel(
      "Retention",
      sbw_note("UTC days and weeks (Monday). Visitor = the user id when known, else the client. ",
               "DAU: average visitors per day of the period; WAU / MAU: visitors of the 7 / 30 days ending on its ",
               "last day; stickiness: average DAU of those 30 days / MAU."),
      shiny::h4("Active visitors"), shiny::tableOutput("ret_active"),
      shiny::h4("Weekly cohorts by first visit (share returning in week n)"), shiny::tableOutput("ret_cohorts"),
      shiny::h4("Visitors per day"), shiny::tableOutput("ret_daily")
    ),
    shiny::tabPanel(
      "Comparison",
      sbw_note(shiny::textOutput("cmp_periods", inline = TRUE)),
      shiny::plotOutput("cmp_plot", height = "320px"),
      shiny::tableOutput("cmp_table")
    ),
    shiny::tabPanel(
      "Export",
      sbw_note("CSV of each table for the current filters, named by view and period."),
      shiny::tags$ul(lapply(names(SBW_EXPORTS), function(id) {
        shiny::tags$li(shiny::downloadLink(paste0("dl_", id), SBW_EXPORTS[[id]]))
      }))
    )
  )
}
