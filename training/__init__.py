"""traindeck's engine: profiles, launch and supervision, workers, tasks, telemetry, metrics.

Nothing in this package imports the UI (tui/); the UI reads what this package writes into
the run directory. The public API for users' scripts is `from traindeck import report`
(the `traindeck` package; `training.report` is the same module, kept for old scripts).
"""
