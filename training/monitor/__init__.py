"""The monitor: what watches a run from the supervisor's process, each piece a thread or a check.

gpu (the only module that imports pynvml), telemetry (the sampler -> telemetry.jsonl), gpu_leaks
(GPU memory still held after the run), watchdog (hangs and stragglers from the heartbeats),
log_metrics and metric_presets (a custom script's output -> events), checkpoint_watch (a custom
script's checkpoint files -> events), health (the health rules, the watchdog's checks among them),
notify (the [notify] command), polling (the one polling thread under health, watchdog,
checkpoint_watch and log_metrics). It reads and writes the run directory through
training.rundir; it never imports the supervisor or the console.
"""
