"""The run directory: the one interface between training and every viewer (the contract).

Everything the processes of a run write, and every viewer reads, is named and read here:

    paths           RunPaths (the names), RunState, run directory creation, atomic JSON, run.json
                    merges (update_run_json), profile.toml as data
    records         run.json (create_run_json, its one creator), exit.json and every event kind
                    parsed into types once, and finish_run (the end: the one writer of exit.json)
    events_file     events.jsonl: schema v1 lines, one-write appends, EventReader (incremental tail)
    series          the bounded metric series the viewers plot
    step_anatomy    timing events folded across ranks (median, worst, skew, slowest), throughput, MFU
    sweep_dir       a sweep's own directory: sweep.json (the grid, its points, the runner), base.toml
    snapshot        the series snapshot beside events.jsonl (attaching in constant time)
    control         control.json: console -> workers requests
    processes       the run's processes by pid + create_time, and stopping them
    reaper          every process of a run found without its supervisor, stopped, and checked
    cgroups         a cgroup of its own per run, where the box allows it
    liveness        the one check whether a run is live (its supervisor, verified)
    logs            the per-rank log files of every launch layout
    gpu_locks       one lock per GPU in the box's shared lock directory, and the ticket queue
    rendezvous      run.json's record of a multi-node rendezvous, and the sentence viewers show
    node_views      a multi-node run's nodes as the viewers show them
    node_stream     another node's run directory carried to the head as JSON lines (a mirror)
    write_failures  writes that fail on a full disk: told, retried or dropped, never fatal

The heartbeat files (heartbeats/rank-N.json) are traindeck.heartbeat's: the ranks write them
without importing `training`.

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
