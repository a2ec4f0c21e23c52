"""A torch-free custom script whose helper leaves the run's process tree, the way wandb's service
process, a TensorBoard started from a script or a `setsid` server do: double fork, a session of
its own, SIGTERM ignored. The script ignores SIGTERM too and reports a step every 0.05 s.

    python detach.py [--clear-env] [--wait-for NAME]
--clear-env      the helper re-execs itself with an empty environment (no TRAINDECK_RUN_DIR);
                 its stdout stays the run's log, as a daemon that does not redirect it keeps it
--wait-for NAME  start the helper only once $TRAINDECK_RUN_DIR/NAME exists (a test kills the
                 supervisor first: then no scan of it can ever have recorded the helper)

The helper's pid goes to $TRAINDECK_RUN_DIR/helper.pid before the script reports a step.
"""

import os
import signal
import sys
import time

HELPER = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.2)"

signal.signal(signal.SIGTERM, signal.SIG_IGN)
args = sys.argv[1:]
run_dir = os.environ["TRAINDECK_RUN_DIR"]
pid_file = os.path.join(run_dir, "helper.pid")


def start_helper() -> None:
    if os.fork() == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)  # the middle process dies: the helper is orphaned, in its own session
        tmp = pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.rename(tmp, pid_file)
        if "--clear-env" in args:
            os.execve(sys.executable, [sys.executable, "-c", HELPER], {})
        os.execv(sys.executable, [sys.executable, "-c", HELPER])
    os.wait()  # the middle process
    while not os.path.exists(pid_file):
        time.sleep(0.01)


step = 0
started = "--wait-for" not in args
if started:
    start_helper()
while True:
    if not started and os.path.exists(os.path.join(run_dir, args[args.index("--wait-for") + 1])):
        start_helper()
        started = True
    step += 1
    print(f"step {step} loss {1.0 / step:.4f}", flush=True)
    time.sleep(0.05)
