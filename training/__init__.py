"""traindeck's engine: profiles, launch and supervision, workers, tasks, telemetry, metrics.

Nothing in this package imports the UI (tui/); the UI reads what this package writes into
the run directory. The public API for users' scripts is `from traindeck import report`
(the `traindeck` package; `training.report` is the same module, kept for old scripts).
"""

from pathlib import Path

# traindeck's own root (the checkout or the installed tree): where built-in workers and the
# supervisor start, and what their PYTHONPATH puts first.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
