"""A fork server for the kill-during-checkpoint loop: pays `import torch` once (5+ s on a loaded
2-core box), then forks a fresh worker process per request.

    python zygote.py RUN_DIR LOG      # one line on stdin = start a worker; it prints the child's pid
Each child is a real, separate process running training.worker.main([RUN_DIR]) with stdout and
stderr appended to LOG; the test SIGKILLs it. EOF on stdin ends the server. Children are reaped here.
"""

import os
import select
import sys

import torch  # noqa: F401 - the point: imported once, before any fork

import training.engine.rank_main as worker

run_dir, log_path = sys.argv[1], sys.argv[2]
while True:
    while True:  # reap finished children
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    ready, _, _ = select.select([sys.stdin], [], [], 0.05)
    if not ready:
        continue
    line = sys.stdin.readline()
    if not line:
        break
    pid = os.fork()
    if pid == 0:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        code = 1
        try:
            code = worker.main([run_dir])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
