"""traindeck's engine: profiles, launch and supervision, workers, tasks, telemetry, metrics.

Nothing in this package imports the UI (tui/); the UI reads what this package writes into
the run directory. The public API for users' scripts is `from traindeck import report`.
Packages by the process that runs them: console (run.py's side), supervise (the supervisor),
engine (every rank), monitor (the supervisor's watchers), rundir (the contract), tasks (the
built-in workloads). The modules here are used by all of them:

    profile       the typed model of a profiles/*.toml file, its strict loader and its writer
    errors        the errors traindeck reports as one paragraph (never a traceback)
    placeholders  the one placeholder syntax of a profile ({run_dir}, {{ and }})
    cpus          how many CPUs this process may really use (affinity and the cgroup's quota)
    ssh_policy    what may reach `ssh`: host names and an allow-list of options
    supervisor    `python -m training.supervisor RUN_DIR`: the supervisor's entry point
    worker        `python -m training.worker RUN_DIR`: the built-in worker's entry point
    report        `from training import report`: the same module object as traindeck.report, kept
                  because users' scripts import it by that name (the one name used twice on purpose)
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
