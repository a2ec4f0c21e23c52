"""The supervisor's process: one run's state machine, from launch to exit.json.

run_supervisor (the state machine and `main`) and its parts: run_writer (its writes to run.json and
events.jsonl, which a full disk delays), run_processes (the launcher and every descendant: spawn,
track, kill, the final sweep), node_coordination (the other nodes of a `[launch] hosts` run, the
rendezvous report), health_actions (what a health rule's firing does, the [notify] command),
helper_threads (telemetry, health, series snapshot, metrics tailer, checkpoint watch), outcome
(`RunResult`, how the run ended) and supervisor_log (its log). What they use: launch (profile ->
argv, env, cwd), diagnosis (why a run failed, from the files it left), visibility (the GPUs a run's
CUDA will see), gpu_select (which GPUs of a shared box it takes), mig (MIG instances per rank),
containment (the run's cgroup, orphans), node_ssh and node_follow (other nodes over SSH),
rdzv_watch and rdzv_state (watching a multi-node rendezvous), disk_faults (tests' full disk).
It starts the monitor's threads (training.monitor) and writes the run directory through
training.rundir; it never imports the console.
"""
