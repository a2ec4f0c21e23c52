"""What a user's own training script imports from traindeck: `from traindeck import report`.

This package stands alone: it imports nothing through the top-level name `training`, so a
custom script gets it on PYTHONPATH by itself (training.supervise.launch exposes only this directory),
and the script's own packages, even one called `training` or `tui`, import as they would under
plain `python train.py` or `torchrun`. It also holds what every layer above shares and the
script's side writes; traindeck's engine (`training`) and the console (`tui`) build on it, never
the other way round:

    report       the one-line reporting API (`report.log`, `report.epoch`, ...)
    events       events.jsonl, the writer's half: schema v1 lines, appended with one write()
    heartbeat    heartbeats/rank-N.json, written by every rank, read by the watchdog and viewers
    rank_device  one device per rank where the run's devices are MIG instances
    numbers      the one number rule for whatever is read from a run directory
    units        the one way memory is written for people (MiB and GiB of 1024, as nvidia-smi)
    untrusted    reading files anyone may have written (no link followed, no FIFO waited on, bounded)
    gpu_peaks    peak dense TFLOP/s per GPU model and dtype, with sources, and MFU against them
"""

# Set by the supervisor for every process of a run: the run directory to report into.
RUN_DIR_ENV = "TRAINDECK_RUN_DIR"
