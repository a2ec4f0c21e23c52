"""traindeck's engine: profiles, launch and supervision, workers, tasks, telemetry, metrics.

Nothing in this package imports the UI (tui/); the UI reads what this package writes into
the run directory. `from training import report` is the public API for users' scripts.
"""
