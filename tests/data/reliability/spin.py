"""A torch-free custom script for start/stop cycles: reports a step every 0.05 s until stopped.

    python spin.py [--steps N] [--ignore-term] [--child]
--steps N      exit 0 after N steps (default: never)
--ignore-term  ignore SIGTERM, so only the SIGKILL escalation ends it
--child        start a grandchild in its own session (a plain killpg would miss it)
"""

import os
import signal
import subprocess
import sys
import time

from training import report

args = sys.argv[1:]
steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 0
if "--ignore-term" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--child" in args:
    subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"], start_new_session=True)
rank = int(os.environ.get("RANK", "0"))
if rank == 0:
    report.status("running", "spin up")
step = 0
while not steps or step < steps:
    step += 1
    if rank == 0:
        print(f"step {step} loss {1.0 / step:.4f}", flush=True)
        report.log(step, epoch=1, loss=1.0 / step)
    time.sleep(0.05)
