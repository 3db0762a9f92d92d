"""Headless Chromium as every browser check here drives it: Debian's binary, no downloaded browser."""

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out, which this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# True once Shiny's websocket is connected and nothing is recalculating (wait in real time for this).
SHINY_IDLE_JS = """() => window.Shiny && Shiny.shinyapp && Shiny.shinyapp.isConnected()
  && !document.documentElement.classList.contains('shiny-busy')
  && document.querySelectorAll('.recalculating').length === 0"""
