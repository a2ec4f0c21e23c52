"""traindeck's engine: profiles, launch and supervision, workers, tasks, telemetry, metrics.

Nothing in this package imports the UI (tui/); the UI reads what this package writes into
the run directory. The public API for users' scripts is `from traindeck import report`
(the `traindeck` package; `training.report` is the same module, kept for old scripts).
"""

from pathlib import Path

# traindeck's own root (the checkout or the installed tree): where built-in workers and the
# supervisor start, and what their PYTHONPATH puts first.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def traindeck_version() -> str:
    """The version of this checkout (pyproject.toml's, the source the processes run from; an
    editable install's metadata can lag behind it). `--check` compares the nodes' versions."""
    import re

    try:
        text = (PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        text = ""
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if m:
        return m.group(1)
    try:
        from importlib.metadata import version

        return version("traindeck")
    except Exception:  # noqa: BLE001 - no metadata either: say so rather than fail a check
        return "unknown"
