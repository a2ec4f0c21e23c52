"""A torch-free custom script for start/stop cycles: reports a step every 0.05 s until stopped.

    python spin.py [--steps N] [--ignore-term] [--child]
--steps N      exit 0 after N steps (default: never)
--ignore-term  ignore SIGTERM, so only the SIGKILL escalation ends it
--child        start a grandchild in its own session (a plain killpg would miss it)
--child-then-die  start that grandchild, write its pid to $TRAINDECK_RUN_DIR/grandchild.pid, then
               die at once by SIGKILL (a launcher crashing right after starting a helper)
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
if "--child" in args or "--child-then-die" in args:
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"],
                             start_new_session=True)
    if "--child-then-die" in args:
        with open(os.path.join(os.environ["TRAINDECK_RUN_DIR"], "grandchild.pid"), "w") as f:
            f.write(str(child.pid))
        os.kill(os.getpid(), signal.SIGKILL)
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
