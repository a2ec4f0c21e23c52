"""A custom script that never ends: it reports a step every 0.1 s until it is killed.

    python sleep_forever.py [--ignore-term] [--spawn-child]
--ignore-term: ignore SIGTERM, so only the SIGKILL escalation can end it.
--spawn-child: start a grandchild in its own session (what a plain killpg would miss) and
               write its pid to $TRAINDECK_RUN_DIR/grandchild-<rank>.pid.
"""

import os
import signal
import subprocess
import sys
import time

from training import report

rank = int(os.environ.get("RANK", "0"))
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--spawn-child" in sys.argv:
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"],
                             start_new_session=True)
    run_dir = os.environ.get("TRAINDECK_RUN_DIR", ".")
    with open(os.path.join(run_dir, f"grandchild-{rank}.pid"), "w") as f:
        f.write(str(child.pid))
if rank == 0:
    report.status("running", "sleep_forever up")
step = 0
while True:
    step += 1
    if rank == 0:
        print(f"step {step} loss {1.0 / step:.4f}", flush=True)
        report.log(step, epoch=1, loss=1.0 / step)
    time.sleep(0.1)
