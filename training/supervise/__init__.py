"""The supervisor's process: one run's state machine, from launch to exit.json.

supervisor (the state machine and `main`), launch (profile -> argv, env, cwd), diagnosis (why a run
failed, from the files it left), visibility (the GPUs a run's CUDA will see). It starts the monitor's
threads (training.monitor) and writes the run directory through training.rundir; it never imports
the console.
"""
