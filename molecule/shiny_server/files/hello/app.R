library(shiny)
shinyApp(ui = fluidPage(h1("hello from shiny_server"), textOutput("r")),
         server = function(input, output) output$r <- renderText(R.version.string))
