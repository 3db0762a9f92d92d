# The server: one warehouse connection per browser session, every figure from the query layer,
# every failure turned into a sentence on the page (the details go to the log, never the page).

fmt_int <- function(x) format(round(as.numeric(x)), big.mark = ",", scientific = FALSE, trim = TRUE)
fmt_money <- function(x) formatC(as.numeric(x), format = "f", digits = 2, big.mark = ",")
fmt_pct <- function(x) ifelse(is.na(x), "-", sprintf("%.1f%%", 100 * as.numeric(x)))

# Runs `fn`; returns list(ok = TRUE, value) or list(ok = FALSE, message, unavailable).
guarded <- function(fn) {
  tryCatch(list(ok = TRUE, value = fn()), error = function(e) {
    detail <- if (!is.null(e$detail)) paste0(" (", e$detail, ")") else ""
    message("sbw_dashboard: ", conditionMessage(e), detail)
    if (inherits(e, "sbw_db_error")) {
      list(ok = FALSE, message = conditionMessage(e), unavailable = inherits(e, "sbw_db_unavailable"))
    } else {
      list(ok = FALSE, message = "This figure could not be computed; the server log has the details.",
           unavailable = FALSE)
    }
  })
}

dashboard_server <- function(input, output, session) {
  db <- sbw_db()
  session$onSessionEnded(function() sbw_db_disconnect(db))

  filters <- shiny::reactive({
    shiny::req(input$date_from, input$date_to, input$timezone)
    input$refresh
    shiny::validate(shiny::need(input$date_to >= input$date_from, "The period ends before it starts."))
    sbw_filters(input$date_from, input$date_to, input$timezone, input$category, input$brand, input$event_name,
                isTRUE(input$include_bots))
  })

  freshness <- shiny::reactive({
    input$refresh
    shiny::invalidateLater(60000)
    guarded(function() query_freshness(db, input$timezone %||% "UTC"))
  })

  # One result per query; each output shows its own message when its query fails.
  kpis <- shiny::reactive(guarded(function() query_kpis(db, filters())))
  series <- shiny::reactive(guarded(function() query_events_over_time(db, filters(), input$granularity)))
  funnel <- shiny::reactive(guarded(function() query_funnel(db, filters())))
  tops <- shiny::reactive({
    f <- filters()
    metric <- input$top_metric
    guarded(function() list(
      products = query_top(db, f, "products", metric, 10),
      categories = query_top(db, f, "categories", metric, 10),
      brands = query_top(db, f, "brands", metric, 10)
    ))
  })
  audience <- shiny::reactive(guarded(function() list(
    identity = query_identity(db, filters()),
    new_returning = query_new_vs_returning(db, filters())
  )))

  # The choices of the category / brand / event filters follow the period; a selection stays.
  shiny::observeEvent(list(input$date_from, input$date_to, input$timezone, input$refresh), {
    shiny::req(input$date_from, input$date_to, input$timezone, input$date_to >= input$date_from)
    f <- sbw_filters(input$date_from, input$date_to, input$timezone)
    res <- guarded(function() query_filter_choices(db, f))
    if (!res$ok) return()
    update <- function(id, all_label, values) {
      keep <- shiny::isolate(input[[id]])
      values <- union(values, if (nzchar(keep %||% "")) keep)
      shiny::updateSelectInput(session, id, choices = c(stats::setNames("", all_label), values),
                               selected = keep %||% "")
    }
    update("category", "All categories", res$value$category)
    update("brand", "All brands", res$value$brand)
    update("event_name", "All events", res$value$event_name)
  })

  has_data <- shiny::reactive({
    fr <- freshness()
    !fr$ok || isTRUE(fr$value$has_data)
  })

  # Shared guard for every figure: database down / empty warehouse / query error -> a sentence.
  # `short`: a KPI tile says "unavailable" (the banner above says why), a panel says the sentence.
  need_result <- function(res, short = FALSE) {
    shiny::validate(shiny::need(has_data(), "No data yet."))
    shiny::validate(shiny::need(res$ok, if (short) "unavailable" else res$message %||% ""))
    res$value
  }

  output$banner <- shiny::renderUI({
    fr <- freshness()
    k <- kpis()
    failed <- Filter(function(r) !r$ok, list(fr, k))
    if (length(failed) > 0) {
      down <- any(vapply(failed, function(r) isTRUE(r$unavailable), logical(1)))
      text <- if (down) {
        paste(failed[[1]]$message, "The figures below are unavailable; press Refresh to retry.")
      } else {
        failed[[1]]$message
      }
      return(shiny::div(id = "sbw-db-error", class = "sbw-banner sbw-banner-error",
                        shiny::strong(if (down) "Database unavailable. " else "Query failed. "), text))
    }
    if (!isTRUE(fr$value$has_data)) {
      return(shiny::div(id = "sbw-no-data", class = "sbw-banner sbw-banner-empty",
                        shiny::strong("No data yet. "),
                        "The warehouse holds no clickstream events; they appear after the next ETL run."))
    }
    if (k$ok && k$value$events == 0) {
      return(shiny::div(id = "sbw-no-match", class = "sbw-banner sbw-banner-empty",
                        "No events in the selected period and filters."))
    }
    NULL
  })

  output$freshness <- shiny::renderUI({
    fr <- freshness()
    if (!fr$ok) return(NULL)
    v <- fr$value
    tz <- input$timezone
    age <- function(s) {
      if (is.na(s)) return("")
      s <- as.numeric(s)
      if (s < 3600) sprintf(" (%d min ago)", round(s / 60)) else if (s < 172800) sprintf(" (%.1f h ago)", s / 3600)
      else sprintf(" (%.1f days ago)", s / 86400)
    }
    stale <- function(s) !is.na(s) && as.numeric(s) > 2 * 3600
    newest <- if (is.na(v$newest_event)) "none yet" else paste0(v$newest_event, " ", tz, age(v$newest_event_age_s))
    run <- if (is.na(v$last_run_status)) {
      "never"
    } else {
      paste0(v$last_run_status, ", ", v$last_run_finished %|na|% paste("started", v$last_run_started), " ", tz,
             age(v$last_run_age_s), ", ", fmt_int(v$last_run_rows), " rows")
    }
    shiny::tagList(
      shiny::span(id = "sbw-newest-event", class = if (stale(v$newest_event_age_s)) "sbw-stale",
                  paste("Newest event:", newest)),
      " · ",
      shiny::span(id = "sbw-last-etl-run", class = if (stale(v$last_run_age_s) || !identical(v$last_run_status, "succeeded")) "sbw-stale",
                  paste("Last ETL run:", run)),
      if (isTRUE(v$pending_events > 0)) {
        shiny::tagList(" · ", shiny::span(id = "sbw-pending", class = "sbw-stale",
                                          paste(fmt_int(v$pending_events), "loaded events not yet in these figures")))
      }
    )
  })

  kpi_value <- function(id) {
    force(id)
    shiny::renderText({
      k <- need_result(kpis(), short = TRUE)
      # Distinct counts beyond the sketches' exact range are HyperLogLog estimates (sql/dashboard.sql).
      approx <- if (id %in% SBW_DISTINCT_KPIS && isTRUE(k$estimated == 1)) "\u2248 " else ""
      switch(id,
        conversion_rate = paste0(approx, fmt_pct(k$conversion_rate)),
        revenue = fmt_money(k$revenue),
        paste0(approx, fmt_int(k[[id]]))
      )
    })
  }
  for (id in names(SBW_KPIS)) {
    output[[paste0("kpi_", id)]] <- kpi_value(id)
  }
  dimension_server(input, output, db, filters, kpis, series, need_result)

  output$events_plot <- shiny::renderPlot({
    df <- need_result(series())
    shiny::validate(shiny::need(nrow(df) > 0, "No events in the selected period and filters."))
    ggplot2::ggplot(df, ggplot2::aes(x = bucket, y = events, colour = event_name)) +
      ggplot2::geom_line() + ggplot2::geom_point(size = 1) +
      ggplot2::labs(x = paste("Time", input$timezone), y = "Events", colour = "Event") +
      ggplot2::theme_minimal(base_size = 13)
  })

  output$funnel_plot <- shiny::renderPlot({
    df <- need_result(funnel())
    df$step_name <- factor(df$step_name, levels = SBW_FUNNEL_STEPS)
    ggplot2::ggplot(df, ggplot2::aes(x = step_name, y = sessions)) +
      ggplot2::geom_col(fill = "#2c7fb8") +
      ggplot2::geom_text(ggplot2::aes(label = fmt_int(sessions)), vjust = -0.3) +
      ggplot2::labs(x = NULL, y = "Sessions") + ggplot2::theme_minimal(base_size = 13)
  })

  output$funnel_table <- shiny::renderTable({
    df <- need_result(funnel())
    data.frame(Step = df$step_name, Sessions = fmt_int(df$sessions),
               `From previous step` = fmt_pct(df$rate_from_previous), `From first step` = fmt_pct(df$rate_from_first),
               check.names = FALSE)
  })

  top_table <- function(part, first_cols) {
    force(part)
    force(first_cols)
    shiny::renderTable({
      df <- need_result(tops())[[part]]
      shiny::validate(shiny::need(nrow(df) > 0, "No product events in the selected period and filters."))
      df$revenue <- fmt_money(df$revenue)
      df[, c(first_cols, "views", "add_to_carts", "purchases", "revenue")]
    })
  }
  output$top_products <- top_table("products", c("product_id", "product_name", "category", "brand"))
  output$top_categories <- top_table("categories", c("category", "products"))
  output$top_brands <- top_table("brands", c("brand", "products"))

  output$identity_table <- shiny::renderTable(need_result(audience())$identity)
  output$new_returning_table <- shiny::renderTable(need_result(audience())$new_returning)
}

# ---------------------------------------------------------------- dimension tabs (V031 rollups)

# "≈ " in front of a figure its query marks as estimated.
approx_mark <- function(estimated) ifelse(!is.na(estimated) & as.logical(estimated), "\u2248 ", "")

# A query result as the page shows it: counts with separators, rates in %, money with 2 decimals.
format_dimension <- function(df, label) {
  est <- approx_mark(df$estimated)
  out <- data.frame(value = df$value, check.names = FALSE, stringsAsFactors = FALSE)
  names(out) <- label
  out$Sessions <- paste0(est, fmt_int(df$sessions))
  if ("share" %in% names(df)) out$Share <- fmt_pct(df$share)
  out$Conversions <- paste0(est, fmt_int(df$conversions))
  out$`Conversion rate` <- fmt_pct(df$conversion_rate)
  out$Revenue <- paste0(est, fmt_money(df$revenue))
  out
}

# Every KPI of the tiles, current and previous period, as one table (Comparison and its CSV).
kpi_comparison <- function(cur, prev) {
  ids <- names(SBW_KPIS)
  data.frame(
    kpi = ids, label = unname(SBW_KPIS[ids]),
    current = vapply(ids, function(i) as.numeric(cur[[i]]), 0),
    previous = vapply(ids, function(i) as.numeric(prev[[i]]), 0),
    change = vapply(ids, function(i) sbw_change(cur[[i]], prev[[i]]), 0),
    stringsAsFactors = FALSE, row.names = NULL
  )
}

fmt_change <- function(x) ifelse(is.na(x), "no previous data", sprintf("%+.1f%%", 100 * x))

dimension_server <- function(input, output, db, filters, kpis, series, need_result) {
  previous <- shiny::reactive(sbw_previous_period(filters()))
  kpis_prev <- shiny::reactive(guarded(function() query_kpis(db, previous())))
  series_prev <- shiny::reactive(guarded(function() query_events_over_time(db, previous(), input$granularity)))
  acquisition <- shiny::reactive({
    f <- filters()
    guarded(function() list(
      channels = query_dimension(db, f, "channel_group"), sources = query_dimension(db, f, "traffic_source"),
      referrers = query_dimension(db, f, "referrer_host"), campaigns = query_campaigns(db, f)
    ))
  })
  pages <- shiny::reactive({
    f <- filters()
    guarded(function() list(
      summary = query_pages_summary(db, f), pages = query_top_pages(db, f, "views"),
      entry_pages = query_dimension(db, f, "entry_page"), exit_pages = query_dimension(db, f, "exit_page")
    ))
  })
  technology <- shiny::reactive({
    f <- filters()
    guarded(function() list(
      browsers = query_dimension(db, f, "browser"), os = query_dimension(db, f, "os"),
      devices = query_dimension(db, f, "device_class")
    ))
  })
  retention <- shiny::reactive({
    f <- filters()
    guarded(function() list(
      cohorts = query_retention(db, f), active = query_active_users(db, f), daily = query_daily_visitors(db, f)
    ))
  })
  comparison <- shiny::reactive({
    cur <- need_result(kpis())
    prev <- need_result(kpis_prev(), short = TRUE)
    kpi_comparison(cur, prev)
  })

  # The change of every tile against the previous period.
  delta_text <- function(id) {
    force(id)
    shiny::renderText({
      cmp <- comparison()
      chg <- cmp$change[cmp$kpi == id]
      if (is.na(chg)) "none in the previous period" else paste(fmt_change(chg), "vs previous period")
    })
  }
  for (id in names(SBW_KPIS)) {
    output[[paste0("kpi_delta_", id)]] <- delta_text(id)
  }

  dim_table <- function(result, part, label) {
    force(part)
    force(label)
    shiny::renderTable({
      df <- need_result(result())[[part]]
      shiny::validate(shiny::need(nrow(df) > 0, "No sessions in the selected period."))
      format_dimension(df, label)
    })
  }
  output$acq_channels <- dim_table(acquisition, "channels", "Channel")
  output$acq_sources <- dim_table(acquisition, "sources", "Source")
  output$acq_referrers <- dim_table(acquisition, "referrers", "Referrer")
  output$acq_campaigns <- shiny::renderTable({
    df <- need_result(acquisition())$campaigns
    shiny::validate(shiny::need(nrow(df) > 0, "No sessions with UTM parameters in the selected period."))
    est <- approx_mark(df$estimated)
    data.frame(Source = df$utm_source, Medium = df$utm_medium, Campaign = df$utm_campaign,
               Sessions = paste0(est, fmt_int(df$sessions)), Conversions = paste0(est, fmt_int(df$conversions)),
               `Conversion rate` = fmt_pct(df$conversion_rate), Revenue = paste0(est, fmt_money(df$revenue)),
               check.names = FALSE)
  })
  output$pages_summary <- shiny::renderUI({
    v <- need_result(pages())$summary
    est <- approx_mark(v$estimated)
    shiny::tagList(
      shiny::span(id = "pages_views", paste0("Page views: ", est, fmt_int(v$page_views))), " \u00b7 ",
      shiny::span(id = "pages_sessions", paste0("Sessions: ", est, fmt_int(v$sessions))), " \u00b7 ",
      shiny::span(id = "pages_per_session",
                  paste0("Views per session: ", est, if (is.na(v$views_per_session)) "-" else sprintf("%.2f", v$views_per_session)))
    )
  })
  output$pages_top <- shiny::renderTable({
    df <- need_result(pages())$pages
    shiny::validate(shiny::need(nrow(df) > 0, "No page views in the selected period."))
    data.frame(Page = df$page_path, Views = fmt_int(df$views),
               Sessions = paste0(approx_mark(df$estimated), fmt_int(df$sessions)),
               Entries = fmt_int(df$entries), Exits = fmt_int(df$exits), check.names = FALSE)
  })
  output$pages_entry <- dim_table(pages, "entry_pages", "Entry page")
  output$pages_exit <- dim_table(pages, "exit_pages", "Exit page")
  output$tech_browsers <- dim_table(technology, "browsers", "Browser")
  output$tech_os <- dim_table(technology, "os", "Operating system")
  output$tech_devices <- dim_table(technology, "devices", "Device class")

  output$ret_active <- shiny::renderTable({
    a <- need_result(retention())$active
    est <- approx_mark(a$estimated)
    data.frame(DAU = paste0(est, sprintf("%.2f", a$dau)), WAU = paste0(est, fmt_int(a$wau)),
               MAU = paste0(est, fmt_int(a$mau)), Stickiness = paste0(est, fmt_pct(a$stickiness)), check.names = FALSE)
  })
  output$ret_cohorts <- shiny::renderTable({
    df <- need_result(retention())$cohorts
    shiny::validate(shiny::need(nrow(df) > 0, "No visitor had a first visit in the selected period."))
    wide <- retention_table(df)
    for (col in grep("^week_", names(wide), value = TRUE)) wide[[col]] <- fmt_pct(wide[[col]])
    wide$cohort_size <- fmt_int(wide$cohort_size)
    names(wide) <- sub("^week_", "Week ", sub("cohort_size", "Visitors", sub("cohort_week", "Cohort (week of)", names(wide))))
    wide
  })
  output$ret_daily <- shiny::renderTable({
    df <- need_result(retention())$daily
    shiny::validate(shiny::need(nrow(df) > 0, "No visitors in the selected period."))
    data.frame(Day = df$day, Visitors = fmt_int(df$visitors), check.names = FALSE)
  })

  output$cmp_periods <- shiny::renderText({
    f <- filters()
    p <- previous()
    sprintf("%s to %s compared with %s to %s (the same number of days just before).",
            f$date_from, f$date_to, p$date_from, p$date_to)
  })
  output$cmp_table <- shiny::renderTable({
    cmp <- comparison()
    fmt <- function(id, x) switch(id, conversion_rate = fmt_pct(x), revenue = fmt_money(x), fmt_int(x))
    data.frame(KPI = cmp$label, Current = mapply(fmt, cmp$kpi, cmp$current),
               Previous = mapply(fmt, cmp$kpi, cmp$previous), Change = fmt_change(cmp$change), check.names = FALSE)
  })
  output$cmp_plot <- shiny::renderPlot({
    cur <- need_result(series())
    prev <- need_result(series_prev())
    shift <- as.numeric(as.Date(filters()$date_from) - as.Date(previous()$date_from), units = "days") * 86400
    total <- function(df, label, offset) {
      if (nrow(df) == 0) return(data.frame(bucket = as.POSIXct(character()), events = numeric(), period = character()))
      agg <- stats::aggregate(events ~ bucket, data = df, FUN = sum)
      agg$bucket <- agg$bucket + offset
      agg$period <- label
      agg
    }
    df <- rbind(total(cur, "current", 0), total(prev, "previous (shifted)", shift))
    shiny::validate(shiny::need(nrow(df) > 0, "No events in either period."))
    ggplot2::ggplot(df, ggplot2::aes(x = bucket, y = events, colour = period, linetype = period)) +
      ggplot2::geom_line() + ggplot2::geom_point(size = 1) +
      ggplot2::labs(x = paste("Time", input$timezone), y = "Events", colour = "Period", linetype = "Period") +
      ggplot2::theme_minimal(base_size = 13)
  })

  # Export: the very data frames the tables show, raw numbers, one CSV each.
  export_data <- list(
    kpis = function() comparison(),
    channels = function() need_result(acquisition())$channels,
    sources = function() need_result(acquisition())$sources,
    referrers = function() need_result(acquisition())$referrers,
    campaigns = function() need_result(acquisition())$campaigns,
    pages = function() need_result(pages())$pages,
    entry_pages = function() need_result(pages())$entry_pages,
    exit_pages = function() need_result(pages())$exit_pages,
    browsers = function() need_result(technology())$browsers,
    os = function() need_result(technology())$os,
    devices = function() need_result(technology())$devices,
    cohorts = function() retention_table(need_result(retention())$cohorts),
    active_users = function() as.data.frame(need_result(retention())$active),
    daily_visitors = function() need_result(retention())$daily
  )
  for (view in names(export_data)) {
    local({
      v <- view
      output[[paste0("dl_", v)]] <- shiny::downloadHandler(
        filename = function() sbw_csv_name(v, filters()),
        content = function(file) utils::write.csv(export_data[[v]](), file, row.names = FALSE, na = ""),
        contentType = "text/csv"
      )
    })
  }
}

`%|na|%` <- function(a, b) if (is.null(a) || is.na(a)) b else a
`%||%` <- function(a, b) if (is.null(a) || length(a) == 0) b else a
