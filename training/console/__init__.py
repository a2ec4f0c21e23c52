"""The console's side: what run.py and the TUI call to start, find, stop and check runs.

    runs               start, resume, find and list runs (`--runs`), the run summary
    stop               every way a run is stopped: stop_run, the takeover after a dead supervisor,
                       the orphan reaper, `--stop`'s last check that nothing is left
    owned_run          `--control`, `--dump`, `--stop`, `--resume` act only on runs that are yours
    preflight          `--check` and `--list`: will this profile run on this box?
    check_table        a check's result (`Check`) and what a start does with it: one table
    start_checks       the fast checks a start runs, judged by that table (StartRefused)
    gpu_holders        `--gpus`: who holds which GPU of this box now
    stackdump          `--dump`: the Python stacks of every live rank
    rehearse           `--rehearse`: a GPU profile tried on this box, scaled down
    scaling            `--scaling`: the profile at 1, 2, 4 ... N GPUs, speed-up and anatomy per size
    sweeps             `--sweep`: start a sweep, find it, its state, `--stop SWEEP`, its runs grouped
    sweep_grid         `--sweep key=v1,v2`: the grid, each point type-checked like `--set`
    sweep_runner       the detached process that starts a sweep's runs through the GPU queue
    compare            `--compare` and the compare screen's data: rows, ranking, config diff, labels
    export             `--export RUN --format tensorboard|csv DIR`: a run's series out
    rehearsal_profile  the scaled-down profile and its notes
    rehearsal_checks   the rehearsal's checklist, judged from the run directory
    gpu_check          `--gpu-check`: the CUDA paths proven on this box's GPUs
    gpu_check_judge    judging one GPU-check run's files, item by item (pure)
    gpu_check_probe    the DataParallel replica-thread probe, in a child process
    node_reach         `--control` and `--dump` of a `[launch] hosts` run, over SSH to its nodes
    remote_node        `python -m training.console.remote_node ...`: what the head runs on the others

These modules run in the console's process; nothing in the engine, the monitor or the supervisor
imports them.
"""
