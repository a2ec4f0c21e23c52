"""The console you look at: the Textual app and the plain-text viewer, both reading the run directory.

    app              the Textual app: wiring only (screens ask through messages, the app decides)
    messages         the messages that cross screens
    feed             what both viewers read from a run directory (RunFeed, TelemetryFeed): typed
                     records, parsed once
    run_model        the one run model both viewers fold those records into
    describe         the one describer of events (what a checkpoint, an epoch, a warning says)
    formats          the formatters both viewers use (durations, metric values, axis ticks)
    tail             incremental readers of the append-only text files (the rank logs)
    cell_diff        send the terminal only the cells that changed (curses/mosh style)
    terminal_notify  desktop notifications through the terminal (OSC 9, OSC 777)
    screenshot       a run's screen rendered off-terminal, and what it shows

screens/ (one screen per module), widgets/ (one widget per module), styles/ (the .tcss files) and
headless/ (the plain progress lines of `--headless`) hold the rest. The feed, the run model, the
formatters and the describer are plain Python: no Textual.
"""
