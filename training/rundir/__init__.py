"""The run directory: the one interface between training and every viewer (the contract).

Everything the processes of a run write, and every viewer reads, is named and read here:

    paths       RunPaths (the names), RunState, run directory creation, atomic JSON, run.json merges
    records     run.json (create_run_json, its one creator), exit.json and every event kind parsed
                into types once, and finish_run (the end: the one writer of exit.json)
    events      events.jsonl: schema v1 lines, one-write appends, EventReader (incremental tail)
    heartbeat   heartbeats/rank-N.json (the same module as traindeck.heartbeat)
    control     control.json: console -> workers requests
    processes   the run's processes by pid + create_time, and stopping them
    liveness    the one check whether a run is live (its supervisor, verified)
    logs        the per-rank log files of every launch layout
    series      the bounded metric series the viewers plot

This package imports nothing of traindeck but training.errors and the `traindeck` package. Its
most used names are re-exported here: `from training.rundir import RunPaths, RunState`.
"""

from training.rundir.paths import (
    RUN_DIR_ENV,
    RUNS_DIR_ENV,
    RunPaths,
    RunState,
    create_run_dir,
    default_runs_dir,
    hostname,
    list_run_dirs,
    read_json,
    read_run_json,
    update_run_json,
    write_json_atomic,
)

__all__ = ["RUN_DIR_ENV", "RUNS_DIR_ENV", "RunPaths", "RunState", "create_run_dir", "default_runs_dir", "hostname",
           "list_run_dirs", "read_json", "read_run_json", "update_run_json", "write_json_atomic"]
