"""The console's screens, one per module.

    picker          every profile, its TOML and its preflight; keys to start, queue or rehearse it
    runs_screen     every run in the runs directory, newest first; Enter opens one
    run_screen      one run directory, live or finished, shown from its files only
    compare_screen  marked runs side by side: overlaid curves, the table, the config diff
    confirm_dialog  a yes/no question as a modal (stop a run, ...)
    quit_dialog     quitting while a run is live: stop it, or detach and let it train on
"""
